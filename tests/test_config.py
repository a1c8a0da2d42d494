"""The run configuration: everything a fit will do, resolved once."""

import dataclasses

import numpy as np
import pytest
from conftest import make_mlp
from conftest import tiny_cnn_classifier as _cnn

from skfastretrain import (
    EarlyStopping,
    FastRetrainClassifier,
    FastRetrainRegressor,
    RidgeHead,
    SGDEpoch,
)
from skfastretrain._config import AUTO_LR, resolve_config
from skfastretrain._validation import check_fit_input


def _config(est, X, y, **kwargs):
    return resolve_config(est, check_fit_input(est, X, y), **kwargs)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # The defaults on 8x8 digit images on a CPU: pretrained Lite0 at
        # 64 px, the probe, the prefix store and the head solve.
        (
            {},
            {
                "backbone_name": "efficientnet_lite0",
                "input_kind": "array",
                "native_size": (8, 8),
                "input_size": (64, 64),
                "n_outputs": 10,
                "regression": False,
                "lr": AUTO_LR,
                "probe_lr": True,
                "prefix_store": True,
                "solves_head": True,
                "validates": False,
                "lr_schedule": False,
            },
        ),
        # A random head: no probe, the fixed rate; random freezing: no store.
        (
            {"head": RidgeHead(init="random"), "freeze_mode": "random"},
            {"probe_lr": False, "prefix_store": False, "lr": AUTO_LR},
        ),
        # Early stopping and a schedule; DELTA reads feature maps: no store.
        (
            {
                "early_stopping": True,
                "sgd": SGDEpoch(lr_schedule="cosine"),
                "regularizer": "delta",
                "lr": 0.01,
            },
            {
                "validates": True,
                "lr_schedule": True,
                "prefix_store": False,
                "probe_lr": False,
                "lr": 0.01,
            },
        ),
        # No head solve: no probe either.
        ({"ridge_lambda": None}, {"solves_head": False, "probe_lr": False}),
        # An explicit size and a per-epoch schedule of frozen fractions.
        (
            {"input_size": 32, "freeze_prob": np.array([0.5, 0.25, 0.0])},
            {"input_size": (32, 32), "freeze_prob": (0.5, 0.25, 0.0)},
        ),
    ],
)
def test_config_of_typical_estimators(digit_images, params, expected):
    X, y, _, _ = digit_images
    config = _config(FastRetrainClassifier(device="cpu", **params), X[:60], y[:60])
    assert {k: getattr(config, k) for k in expected} == expected
    if config.validates:
        assert isinstance(config.early_stopping, EarlyStopping)
    assert config.device == "cpu" and config.distributed is False
    assert config.epochs_done == 0 and config.resume is False


@pytest.mark.parametrize("columns", [None, 3])
def test_config_of_a_regressor(digits, columns):
    X, y = digits
    Y = y[:50, None] * np.arange(1, 4) / 9.0
    target = Y[:, 0] if columns is None else Y
    est = FastRetrainRegressor(make_mlp(), device="cpu")
    config = resolve_config(est, check_fit_input(est, X[:50], target, regression=True))
    assert config.regression is True
    assert config.n_outputs == (1 if columns is None else 3)


def test_config_of_a_module_on_feature_vectors(digits):
    X, y = digits
    est = FastRetrainClassifier(make_mlp(), device="cpu", verbose=0)
    config = _config(est, X[:50], y[:50])
    # A module brings no pretrained size: nothing is resized.
    assert config.backbone_name == "Sequential"
    assert config.input_kind == "array"
    assert config.native_size is None and config.input_size is None
    assert config.verbose == 0


def test_config_repr_reads_one_setting_a_line(digit_images):
    X, y, _, _ = digit_images
    config = _config(FastRetrainClassifier(device="cpu"), X[:60], y[:60])
    text = repr(config)
    lines = text.splitlines()
    assert lines[0] == "RunConfig(" and lines[-1] == ")"
    assert "    backbone_name='efficientnet_lite0'," in lines
    assert "    input_size=(64, 64)," in lines
    assert "    prefix_store=True," in lines
    assert "    head=RidgeHead()," in lines
    # The fingerprint (a JSON document) and the raw backbone stay out.
    assert "fingerprint" not in text and "backbone=" not in text
    shown = [f.name for f in dataclasses.fields(config) if f.repr]
    assert len(lines) == len(shown) + 3


def test_config_is_frozen(digit_images):
    X, y, _, _ = digit_images
    config = _config(_cnn(), X[:60], y[:60])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0


def test_config_seed_follows_random_state(digit_images):
    X, y, _, _ = digit_images
    seeds = [_config(_cnn(random_state=rs), X[:60], y[:60]).seed for rs in (0, 0, 1)]
    assert seeds[0] == seeds[1] != seeds[2]


def test_fit_input_is_classified_once(tmp_path, digit_images):
    from PIL import Image

    X, y, _, _ = digit_images
    for label in (0, 1):
        (tmp_path / f"c{label}").mkdir()
        for i in np.flatnonzero(y[:40] == label)[:3]:
            Image.fromarray(X[i]).save(tmp_path / f"c{label}" / f"{i}.png")
    fit_input = check_fit_input(_cnn(), tmp_path, None)
    # A folder arrives as its paths, labelled by its subfolders.
    assert fit_input.kind == "paths"
    assert fit_input.native_size is None
    assert fit_input.classes.tolist() == ["c0", "c1"]
    assert repr(fit_input).startswith("FitInput(kind='paths', n_samples=6")
    # Channels-last arrays: the native size is read past the channels.
    rgb = np.repeat(X[:20, :, :, None], 3, axis=3)
    assert check_fit_input(_cnn(), rgb, y[:20]).native_size == (8, 8)
