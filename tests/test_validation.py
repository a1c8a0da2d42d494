"""Input and hyperparameter checks of FastRetrainClassifier (_validation.py)."""

import numpy as np
import pytest
from conftest import tiny_cnn_classifier as _cnn

from skfastretrain import FastRetrainClassifier

# -- bad input: a clear ValueError or TypeError, never a raw torch error --------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_X(small_images, bad):
    X, y = small_images
    X = X.astype(np.float32)
    X[3, 2, 2] = bad
    with pytest.raises(ValueError, match=r"NaN|infinity"):
        _cnn().fit(X, y)


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.zeros((0, 8, 8)), np.zeros(0), "0 sample"),
        (np.zeros((10, 8, 8)), np.arange(9) % 2, "inconsistent numbers"),
        (np.zeros((10, 8, 8)), np.ones(10), "1 class"),
        (np.zeros((10, 64)), np.arange(10) % 2, "convolution"),
        (np.zeros((10, 5, 8, 8)), np.arange(10) % 2, "channels"),
        (np.zeros((10, 8, 8)), np.linspace(0, 1, 10), "Unknown label type"),
    ],
)
def test_bad_fit_input(X, y, match):
    with pytest.raises(ValueError, match=match):
        _cnn().fit(X, y)


@pytest.mark.parametrize(
    "X_predict, match",
    [
        (np.zeros((4, 3, 8, 8), np.uint8), "features"),
        (np.zeros((4, 8, 7), np.uint8), "features"),
        (np.zeros((4, 7, 8, 8), np.uint8)[:, :, :4, :2], "features"),
        (np.zeros((4, 4, 16), np.uint8), "shape"),
    ],
)
def test_predict_shape_mismatch_raises(small_images, X_predict, match):
    X, y = small_images
    clf = _cnn().fit(X, y)
    with pytest.raises(ValueError, match=match):
        clf.predict(X_predict)


def test_unknown_backbone_name_lists_names(small_images):
    with pytest.raises(ValueError, match=r"Valid names: .*resnet18"):
        FastRetrainClassifier("not_a_net").fit(*small_images)


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"freeze_prob": 1.0}, ValueError, "freeze_prob"),
        ({"freeze_prob": -0.1}, ValueError, "freeze_prob"),
        ({"freeze_prob": "half"}, TypeError, "freeze_prob"),
        ({"freeze_prob": [0.5, 1.5]}, ValueError, "freeze_prob"),
        ({"freeze_prob": [0.5]}, ValueError, "one value per epoch"),
        ({"freeze_mode": "middle"}, ValueError, "freeze_mode"),
        ({"ridge_lambda": 0.0}, ValueError, "ridge_lambda"),
        ({"ridge_lambda": -1}, ValueError, "ridge_lambda"),
        ({"ridge_lambda": "Auto"}, TypeError, "number > 0, 'auto' or None, got 'Auto'"),
        ({"ridge_lambda": np.array([0.5])}, TypeError, "ridge_lambda must be a number"),
        ({"head_blend": 1.5}, ValueError, r"head_blend must be in \(0, 1\], got 1.5"),
        ({"lr": "fast"}, ValueError, "or 'auto', got 'fast'"),
        ({"head_blend": 0.0}, ValueError, "head_blend"),
        ({"head_blend": 1.5}, ValueError, "head_blend"),
        ({"init_head": "zeros"}, ValueError, "init_head"),
        ({"solve_every": 0}, ValueError, "solve_every"),
        ({"solve_every": 1.5}, TypeError, "solve_every"),
        ({"max_epochs": 0}, ValueError, "max_epochs"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"lr": np.nan}, ValueError, "lr"),
        ({"lr": "Auto"}, ValueError, "lr must be a number > 0 or 'auto'"),
        ({"cache_prefix": "yes"}, TypeError, "cache_prefix must be a bool or 'auto'"),
        ({"input_size": "big"}, ValueError, "input_size must be 'auto'"),
        ({"lr_schedule": "linear"}, ValueError, "lr_schedule"),
        ({"precision": "float16"}, ValueError, "precision"),
        ({"momentum": -0.1}, ValueError, "momentum must be finite and >= 0, got -0.1"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay must be finite and >= 0"),
        ({"weight_decay": "l2"}, TypeError, "weight_decay must be a number, got 'l2'"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"bn_momentum": 2.0}, ValueError, "bn_momentum"),
        ({"input_size": (0, 4)}, ValueError, "input_size"),
        ({"device": "quantum"}, ValueError, "device"),
        ({"callbacks": "ProgressBar"}, TypeError, "callbacks"),
        ({"backbone": 3}, TypeError, "backbone"),
    ],
)
def test_invalid_hyperparameters(small_images, params, error, match):
    with pytest.raises(error, match=match):
        _cnn(**{"max_epochs": 2, **params}).fit(*small_images)


def test_numpy_scalars_are_accepted_wherever_numbers_are(small_images):
    # np.float32 is not a Python float: the callbacks once rejected it.
    f32, i64 = np.float32, np.int64
    params = {
        "freeze_prob": f32(0.5),
        "ridge_lambda": f32(0.5),
        "head_blend": f32(0.5),
        "regularizer": "l2sp",
        "reg_alpha": f32(0.01),
        "reg_beta": f32(0.01),
        "lr": f32(0.05),
        "momentum": f32(0.9),
        "weight_decay": f32(1e-4),
        "batch_size": i64(32),
        "max_epochs": i64(1),
        "solve_every": i64(1),
        "bn_momentum": f32(0.1),
    }
    clf = _cnn(device="cpu", **params).fit(*small_images)
    assert clf.history_[-1, "ridge_lambda"] == params["ridge_lambda"]
    assert clf.net_.optimizer_.param_groups[0]["lr"] == params["lr"]
