"""Input and hyperparameter checks of FastRetrainClassifier (_validation.py)."""

import numpy as np
import pytest
from conftest import make_mlp, options
from conftest import tiny_cnn_classifier as _cnn
from sklearn.utils._param_validation import InvalidParameterError
from skorch import NeuralNetClassifier
from torch import nn

from skfastretrain import (
    L2SP,
    FastRetrainClassifier,
    LayerFreezer,
    LRProbe,
    RidgeHead,
    RidgeHeadSolver,
    SGDEpoch,
)

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
    "sample_weight, match",
    [
        (np.full(200, np.nan), "sample_weight contains NaN"),
        (-np.ones(200), "Negative values in data passed to `sample_weight`"),
        (np.ones(199), r"sample_weight.shape == \(199,\), expected \(200,\)"),
        (np.zeros(200), "at least one non-zero number"),
    ],
)
def test_bad_sample_weight(small_images, sample_weight, match):
    with pytest.raises(ValueError, match=match):
        _cnn().fit(*small_images, sample_weight=sample_weight)


def test_the_residual_update_refuses_weights(small_images):
    X, y = small_images
    with pytest.raises(ValueError, match="'residual' does not weigh its solves"):
        _cnn(head="residual").fit(X, y, sample_weight=np.ones(len(y)))


def test_weights_that_class_weight_zeroes_everywhere_are_refused(small_images):
    X, y = small_images
    sample_weight = np.repeat([1.0, 0.0], 100)
    # Every class of the first 100 rows, the only ones weighted, weighs 0.
    class_weight = {c: float(c not in y[:100]) for c in range(10)}
    with pytest.raises(ValueError, match="sum to zero"):
        _cnn(class_weight=class_weight).fit(X, y, sample_weight=sample_weight)


def test_class_weight_multiplies_sample_weight(small_images):
    from sklearn.utils.class_weight import compute_sample_weight

    from skfastretrain._validation import check_fit_input

    X, y = small_images
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=len(y))
    given = {0: 3.0}
    fit_input = check_fit_input(_cnn(), X, y, sample_weight=w, class_weight=given)
    expected = w * compute_sample_weight(given, y)
    np.testing.assert_allclose(fit_input.sample_weight, expected)
    balanced = check_fit_input(_cnn(), X, y, class_weight="balanced")
    np.testing.assert_allclose(
        balanced.sample_weight, compute_sample_weight("balanced", y)
    )
    assert check_fit_input(_cnn(), X, y).sample_weight is None


@pytest.mark.parametrize(
    "X_predict, match",
    [
        (
            np.zeros((4, 3, 8, 8), np.uint8),
            r"fitted on 1-channel \(grayscale\) images, got 3-channel \(RGB\) "
            r"images; convert them to grayscale",
        ),
        (np.zeros((4, 8, 8, 3), np.uint8), r"got 3-channel \(RGB\) images"),
        (np.zeros((4, 7, 8, 8), np.uint8)[:, :, :4, :2], "got 2-channel images"),
        (np.zeros((4, 10)), "X has 10 features"),
        (np.zeros((4, 1, 1, 8, 8)), "3 or 4 dimensions"),
    ],
)
def test_predict_channel_mismatch_raises(small_images, X_predict, match):
    # Another height and width is resized (test_predict.py); another number
    # of channels is not the input trained on.
    X, y = small_images
    clf = _cnn().fit(X, y)
    with pytest.raises(ValueError, match=match):
        clf.predict(X_predict)


def test_predict_feature_vectors_keep_sklearns_message(digits):
    X, y = digits
    clf = FastRetrainClassifier(make_mlp, max_epochs=1, random_state=0)
    clf.fit(X[:100, :4], y[:100])
    match = "X has 3 features, but FastRetrainClassifier is expecting 4 features"
    with pytest.raises(ValueError, match=match):
        clf.predict(X[:5, :3])


def test_unknown_backbone_name_lists_names(small_images):
    with pytest.raises(ValueError, match=r"Valid names: .*resnet18"):
        FastRetrainClassifier("not_a_net").fit(*small_images)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"freeze_prob": 1.0}, r"'freeze_prob' .* a float in \[0, 1\)"),
        ({"freeze_prob": -0.1}, r"'freeze_prob' .* a float in \[0, 1\)"),
        ({"freeze_prob": "half"}, r"'freeze_prob' .* sequence of such floats"),
        ({"freeze_prob": [0.5, 1.5]}, r"'freeze_prob' .* Got \[0.5, 1.5\]"),
        ({"freeze_mode": "middle"}, options("'prefix'", "'random'", got="'middle'")),
        ({"ridge_lambda": 0.0}, r"'ridge_lambda' .* range \(0.0, inf\)"),
        ({"ridge_lambda": -1}, r"'ridge_lambda' .* range \(0.0, inf\)"),
        ({"ridge_lambda": "Auto"}, options("'auto'", "or None", got="'Auto'")),
        ({"ridge_lambda": np.array([0.5])}, r"'ridge_lambda' parameter"),
        ({"ridge_lambda": True}, r"'ridge_lambda' .* Got True"),
        (
            {"head": "blend"},
            options("'residual'", "'ridge'", "RidgeHead", got="'blend'"),
        ),
        ({"regularizer": "L2SP"}, options("'delta'", "'feature_map'", "'l2sp'")),
        ({"sgd": "sgd"}, r"'sgd' parameter .* instance of .*SGDEpoch.* or None"),
        ({"lr": "fast"}, options("'auto'", got="'fast'")),
        ({"lr": -1.0}, r"'lr' .* range \(0.0, inf\)"),
        ({"lr": np.nan}, r"'lr' .* Got nan"),
        ({"lr": np.inf}, r"'lr' .* Got inf"),
        ({"max_epochs": 0}, r"'max_epochs' .* int in the range \[1, inf\)"),
        ({"max_epochs": 1.5}, r"'max_epochs' .* int in the range \[1, inf\)"),
        ({"batch_size": 0}, r"'batch_size' .* int in the range \[1, inf\)"),
        ({"input_size": "big"}, r"'input_size' .* 'auto', None, a positive int"),
        ({"input_size": (0, 4)}, r"'input_size' .* Got \(0, 4\)"),
        ({"precision": "float16"}, options("'bfloat16'", "'float32'")),
        ({"num_workers": -1}, r"'num_workers' .* int in the range \[0, inf\)"),
        ({"distributed": "yes"}, options("'auto'", got="'yes'")),
        ({"callbacks": "ProgressBar"}, r"'callbacks' .*'list'.* or None"),
        ({"backbone": 3}, r"'backbone' .*'str'.*Module.* or a callable"),
        ({"verbose": -1}, r"'verbose' .* int in the range \[0, inf\)"),
    ],
)
def test_invalid_parameters_name_the_valid_options(small_images, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        _cnn(**{"max_epochs": 2, **params}).fit(*small_images)


@pytest.mark.parametrize(
    "component, match",
    [
        (RidgeHead(blend=0.0), r"'blend' parameter of RidgeHead .* \(0.0, 1.0\]"),
        (RidgeHead(blend=1.5), r"'blend' parameter of RidgeHead"),
        (RidgeHead(init="zeros"), options("'random'", "'ridge'", got="'zeros'")),
        (RidgeHead(update="sum"), options("'blend'", "'residual'", got="'sum'")),
        (RidgeHead(solve_every=0), r"'solve_every' .* \[1, inf\)"),
        (RidgeHead(solve_every=1.5), r"'solve_every' .* \[1, inf\)"),
        (RidgeHead(reuse_features="yes"), r"'reuse_features' .*'bool'"),
        (RidgeHead(reinit_layers=-1), r"'reinit_layers' .* \[0, inf\)"),
        (SGDEpoch(momentum=-0.1), r"'momentum' parameter of SGDEpoch .* \[0.0, 1.0\)"),
        (SGDEpoch(weight_decay=-1.0), r"'weight_decay' .* \[0.0, inf\)"),
        (SGDEpoch(weight_decay="l2"), r"'weight_decay' .* Got 'l2'"),
        (SGDEpoch(lr_schedule="linear"), options("'constant'", "'cosine'")),
        (SGDEpoch(bn_mode="frozen"), options("'auto'", "'eval'", "'train'")),
        (SGDEpoch(augment="heavy"), options("'light'", "callable", got="'heavy'")),
        (SGDEpoch(bn_momentum=2.0), r"'bn_momentum' .* or None"),
        (
            SGDEpoch(cache_prefix="yes"),
            r"'cache_prefix' .*'bool'.* a str among \{'auto'\}",
        ),
        (L2SP(alpha=-1.0), r"'alpha' parameter of L2SP .* \[0.0, inf\)"),
    ],
    ids=repr,
)
def test_invalid_component_parameters(small_images, component, match):
    name = {RidgeHead: "head", SGDEpoch: "sgd", L2SP: "regularizer"}[type(component)]
    with pytest.raises(InvalidParameterError, match=match):
        _cnn(**{"max_epochs": 1, name: component}).fit(*small_images)


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"freeze_prob": [0.5]}, ValueError, "one value per epoch"),
        ({"head": RidgeHead(hidden=[8, 0])}, TypeError, "hidden must be a sequence"),
        ({"head": RidgeHead(hidden="8")}, TypeError, "'hidden' .* array-like or None"),
        ({"device": "quantum"}, ValueError, "device"),
        ({"callbacks": ["ProgressBar"]}, TypeError, "callbacks"),
    ],
)
def test_invalid_combinations(small_images, params, error, match):
    with pytest.raises(error, match=match):
        _cnn(**{"max_epochs": 2, **params}).fit(*small_images)


def test_callbacks_share_the_estimators_constraints(small_images):
    X, y = small_images
    X = X.reshape(len(X), -1).astype(np.float32) / 255
    module = nn.Sequential(nn.Linear(X.shape[1], 8), nn.ReLU(), nn.Linear(8, 2))

    def fit(callback):
        net = NeuralNetClassifier(
            module, max_epochs=1, train_split=None, verbose=0, callbacks=[callback]
        )
        return net.fit(X, (y > y.min()).astype(np.int64))

    with pytest.raises(InvalidParameterError, match=options("'auto'")):
        fit(RidgeHeadSolver(ridge_lambda="Auto"))
    with pytest.raises(
        InvalidParameterError, match=r"'mode' parameter of LayerFreezer"
    ):
        fit(LayerFreezer(mode="middle"))
    with pytest.raises(InvalidParameterError, match=r"'start' parameter of LRProbe"):
        fit(LRProbe(start=0))
    # numpy scalars pass as Python numbers do (np.float32 was once refused).
    fit(RidgeHeadSolver(ridge_lambda=np.float32(0.5), blend=np.float64(0.5)))
    fit(LayerFreezer(np.float32(0.5)))
    fit(L2SP(alpha=np.float32(0.1), beta=np.float16(0.1)))


def test_numpy_scalars_are_accepted_wherever_numbers_are(small_images):
    # np.float32 is not a Python float: the callbacks once rejected it.
    f32, i64 = np.float32, np.int64
    params = {
        "freeze_prob": f32(0.5),
        "ridge_lambda": f32(0.5),
        "head": RidgeHead(blend=f32(0.5), solve_every=i64(1), reinit_layers=i64(0)),
        "regularizer": L2SP(alpha=f32(0.01), beta=f32(0.01)),
        "lr": f32(0.05),
        "sgd": SGDEpoch(
            momentum=f32(0.9), weight_decay=f32(1e-4), bn_momentum=f32(0.1)
        ),
        "batch_size": i64(32),
        "max_epochs": i64(1),
        "num_workers": i64(0),
        "input_size": (i64(8), i64(8)),
    }
    clf = _cnn(device="cpu", **params).fit(*small_images)
    assert clf.history_[-1, "ridge_lambda"] == params["ridge_lambda"]
    assert clf.net_.optimizer_.param_groups[0]["lr"] == params["lr"]
