"""Generated bad input for fit and predict: each must end in ValueError or
TypeError with a message, never a raw torch error, a crash or a hang."""

import faulthandler
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import make_mlp, make_tiny_cnn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from skfastretrain import (
    L2SP,
    DeltaRegularizer,
    FastRetrainClassifier,
    RidgeHead,
    SGDEpoch,
    TrainingCheckpoint,
)
from skfastretrain.datasets import load_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")

# Derandomized, so that a run is repeatable; the deadline bounds each example.
FUZZ = settings(
    max_examples=300,
    deadline=10_000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Each fuzz test checks that it ran at least this many bad inputs by itself,
# so that it holds alone, under -k, in any order and under xdist; the three
# together try at least 3 * 200 = 600, above the 500 the suite promises.
MIN_TRIED = 200


@pytest.fixture(scope="module", autouse=True)
def _traceback_on_hang():
    # The per-example deadline catches slow inputs only once they finish;
    # a hang ends the run here with every thread's traceback.
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _expect_clear_error(call, tried):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert str(info.value).strip()
    tried.append(1)


def _images(n, rng, shape=(8, 8)):
    return rng.integers(0, 256, size=(n, *shape)).astype(np.uint8)


def _labels(n):
    return np.arange(n) % 3


FIT_KINDS = (
    "dtype",
    "nonfinite",
    "empty",
    "single_sample",
    "single_class",
    "length",
    "ndim",
    "zero_size",
    "ambiguous_channels",
    "bad_y",
    "ragged",
    "sparse",
)
# Images of another height and width are resized at predict, so they are
# fuzzed among the inputs that should work (new_inputs), not here.
PREDICT_KINDS = (
    "channels",
    "flat",
    "dtype",
    "nonfinite",
    "empty",
    "ndim",
    "sparse",
    "ragged",
)
sizes = st.integers(2, 12)
odd_dtypes = st.sampled_from(["object", "complex", "bool", "str"])


def _with_dtype(X, dtype, rng):
    if dtype == "object":
        out = X.astype(object)
        out.flat[rng.integers(out.size)] = "pixel"
        return out
    if dtype == "str":
        return X.astype(str)
    return X.astype(dtype)


@st.composite
def bad_fit_data(draw):
    """(X, y, images?) where X, y or both are wrong."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = draw(sizes)
    kind = draw(st.sampled_from(FIT_KINDS))
    tabular = draw(st.booleans())
    X = rng.normal(size=(n, 5)).astype(np.float32) if tabular else _images(n, rng)
    y = _labels(n)
    if kind == "dtype":
        X = _with_dtype(X, draw(odd_dtypes), rng)
    elif kind == "nonfinite":
        X = X.astype(np.float64)
        bad = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        X.flat[rng.integers(X.size, size=draw(st.integers(1, 3)))] = bad
    elif kind == "empty":
        X, y = X[:0], y[:0]
    elif kind == "single_sample":
        X, y = X[:1], y[:1]
    elif kind == "single_class":
        y = np.full(n, draw(st.sampled_from([0, 7, "cat", 2.5])))
    elif kind == "length":
        y = _labels(n + draw(st.sampled_from([-1, 1, 5])))
    elif kind == "ndim":
        X = rng.normal(
            size=draw(st.sampled_from([(), (n,), (n, 2, 3, 4, 5), (n, 1, 1, 1, 1, 2)]))
        )
    elif kind == "zero_size":
        X = np.zeros(
            draw(st.sampled_from([(n, 0), (n, 0, 8), (n, 8, 0, 1), (n, 1, 0, 0)]))
        )
    elif kind == "ambiguous_channels":
        X = _images(n, rng, shape=(5, 6, 7))
    elif kind == "bad_y":
        y = draw(
            st.sampled_from(
                [
                    rng.normal(size=n),
                    np.where(np.arange(n) % 2, np.nan, 1.0),
                    np.ones((n, 3)),
                    _labels(n) + 1j,
                    None,
                ]
            )
        )
    elif kind == "ragged":
        X = [list(range(1 + i % 3)) for i in range(n)]
    else:
        X = sp.random(n, 5, density=0.5, format="csr", random_state=0)
        tabular = True
    return X, y, tabular


# Bad float images may warn of values above 1 before their error.
@pytest.mark.filterwarnings("ignore:Float images are read:UserWarning")
def test_bad_fit_input_is_a_clear_error():
    tried = []

    @FUZZ
    @given(data=bad_fit_data())
    def fit_bad_input(data):
        X, y, tabular = data
        clf = FastRetrainClassifier(
            make_mlp if tabular else make_tiny_cnn, max_epochs=1, random_state=0
        )
        _expect_clear_error(lambda: clf.fit(X, y), tried)

    fit_bad_input()
    assert len(tried) >= MIN_TRIED


_nonfinite = st.sampled_from([float("nan"), float("inf"), -float("inf")])
_text = st.text(min_size=0, max_size=5)
_not_int = st.one_of(
    st.floats(0.5, 3.5).filter(lambda v: v != int(v)), _text, st.none()
)
_not_positive = st.one_of(st.integers(-5, 0), st.floats(-10, 0), _nonfinite)
_not_nonneg = st.one_of(st.integers(-5, -1), st.floats(-10, -1e-3), _nonfinite)
_not_fraction = st.one_of(st.floats(1, 10), st.floats(-10, -1e-3), _nonfinite, _text)
# The valid strings of every choice parameter, so that no generated text is
# one of them by chance.
_CHOICES = {
    "auto",
    "eval",
    "train",
    "random",
    "prefix",
    "ridge",
    "blend",
    "residual",
    "constant",
    "cosine",
    "l2sp",
    "delta",
    "feature_map",
}
_not_choice = st.one_of(_text.filter(lambda s: s not in _CHOICES), st.integers())

# Parameters of the estimator, and of its components as "<component>.<name>":
# the head (RidgeHead), the SGD epoch (SGDEpoch), the regularizers (L2SP,
# DeltaRegularizer) and the checkpoint (TrainingCheckpoint's path).
INVALID = {
    "max_epochs": st.one_of(_not_positive, _not_int, st.just(True)),
    "freeze_prob": st.one_of(_not_fraction, st.just([]), st.just([[0.5]])),
    "freeze_mode": _not_choice,
    "ridge_lambda": st.one_of(_not_positive, st.just("AUTO"), st.just([1.0])),
    "head": st.one_of(_not_choice, st.sampled_from([SGDEpoch(), RidgeHead])),
    "head.blend": st.one_of(_not_positive, st.floats(1.01, 100)),
    "head.init": _not_choice,
    "head.solve_every": st.one_of(_not_positive, _not_int),
    "head.reuse_features": st.one_of(_text, st.integers(), st.none()),
    "head.update": _not_choice,
    "head.hidden": st.sampled_from([[0], [-1], "8", [[1]], [1.5], 8]),
    "head.reinit_layers": st.one_of(st.integers(-5, -1), _not_int, st.just(10**6)),
    "regularizer": st.one_of(_not_choice, st.sampled_from([RidgeHead(), L2SP])),
    "l2sp.alpha": _not_nonneg,
    "l2sp.beta": _not_nonneg,
    "delta.alpha": _not_nonneg,
    "delta.beta": _not_nonneg,
    "delta.layers": st.sampled_from(["2", [1], [None]]),
    "lr": st.one_of(_not_positive, _text.filter(lambda t: t != "auto"), st.none()),
    "sgd": st.one_of(_text, st.integers(), st.sampled_from([RidgeHead(), SGDEpoch])),
    "sgd.momentum": _not_nonneg,
    "sgd.weight_decay": _not_nonneg,
    "sgd.lr_schedule": _not_choice,
    "sgd.bn_mode": _not_choice,
    "sgd.bn_momentum": _not_fraction,
    "sgd.cache_prefix": st.sampled_from(["yes", 1, None]),
    "batch_size": st.one_of(_not_positive, _not_int),
    "input_size": st.sampled_from([0, -1, (1, 2, 3), "big", 1.5, (0, 8), [[8]]]),
    "sgd.augment": st.sampled_from(["heavy", 5, ["light"]]),
    "num_workers": st.one_of(st.integers(-5, -1), _not_int),
    "device": st.sampled_from(["tpu", "", "cuda:99", "cpu:x", 5.5, None]),
    "random_state": st.sampled_from(["seed", -1, 1.5, 2**40]),
    "verbose": st.one_of(st.integers(-5, -1), _text),
    "callbacks": st.sampled_from(["abc", 5, [object()], [("name", 5)]]),
    "checkpoint.path": st.sampled_from([5, "/nonexistent-dir/x.pt", ".", b"x.pt"]),
    "backbone": st.sampled_from(["not_a_model", 5, None, lambda: 5]),
}

# Where a component's parameter goes: the estimator's parameter and the class.
COMPONENTS = {
    "head": ("head", RidgeHead),
    "sgd": ("sgd", SGDEpoch),
    "l2sp": ("regularizer", L2SP),
    "delta": ("regularizer", DeltaRegularizer),
}


def _estimator_params(name, value):
    """The constructor parameters that give ``name`` the value ``value``."""
    component, _, field = name.partition(".")
    if not field:
        return {name: value}
    if component == "checkpoint":
        return {"callbacks": [TrainingCheckpoint(value)]}
    param, cls = COMPONENTS[component]
    return {param: cls(**{field: value})}


def test_absurd_hyperparameters_are_clear_errors(small_images):
    X, y = small_images
    tried = []

    @FUZZ
    @given(
        param=st.sampled_from(sorted(INVALID)).flatmap(
            lambda k: st.tuples(st.just(k), INVALID[k])
        )
    )
    def fit_absurd_hyperparameter(param):
        name, value = param
        params = {"backbone": make_tiny_cnn, "max_epochs": 1, "random_state": 0}
        clf = FastRetrainClassifier(**{**params, **_estimator_params(name, value)})
        _expect_clear_error(lambda: clf.fit(X[:60], y[:60]), tried)

    fit_absurd_hyperparameter()
    assert len(tried) >= MIN_TRIED


@pytest.fixture(scope="module")
def fitted(digit_images):
    X, y, _, _ = digit_images
    return FastRetrainClassifier(make_tiny_cnn, max_epochs=1, random_state=0).fit(
        X[:100], y[:100]
    )


@st.composite
def bad_predict_data(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = draw(sizes)
    kind = draw(st.sampled_from(PREDICT_KINDS))
    X = _images(n, rng).astype(np.float32)
    if kind == "channels":
        c = draw(st.sampled_from([2, 3, 4]))
        X = _images(n, rng, shape=draw(st.sampled_from([(c, 8, 8), (8, 8, c)])))
    elif kind == "flat":
        X = X.reshape(n, -1)[:, : draw(st.sampled_from([64, 10, 1]))]
    elif kind == "dtype":
        X = _with_dtype(X, draw(odd_dtypes), rng)
    elif kind == "nonfinite":
        X.flat[rng.integers(X.size)] = draw(_nonfinite)
    elif kind == "empty":
        X = X[:0]
    elif kind == "ndim":
        X = rng.normal(size=draw(st.sampled_from([(), (n,), (n, 1, 1, 8, 8)])))
    elif kind == "sparse":
        X = sp.random(n, 64, density=0.5, format="csr", random_state=0)
    else:
        X = [[0.0] * (1 + i % 2) for i in range(n)]
    return X, draw(st.sampled_from(["predict", "predict_proba", "decision_function"]))


# Bad float images may warn of values above 1 before their error.
@pytest.mark.filterwarnings("ignore:Float images are read:UserWarning")
def test_bad_predict_input_is_a_clear_error(fitted):
    tried = []

    @FUZZ
    @given(data=bad_predict_data())
    def predict_bad_input(data):
        X, method = data
        _expect_clear_error(lambda: getattr(fitted, method)(X), tried)

    predict_bad_input()
    assert len(tried) >= MIN_TRIED


# -- inputs that should work: each either does, or is a clear error ------------

INT_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
FLOAT_DTYPES = ["float16", "float32", "float64"]
PIL_MODES = ["L", "RGB", "RGBA", "P", "1", "I", "F", "LA", "I;16"]
NEW_KINDS = ("int_dtype", "float_range", "pil_list", "array_list", "folder")
# Values, some outside what the dtype or the pixel range holds.
HIGHS = [1, 2, 255, 256, 4095, 70000, 1e30]
side = st.integers(1, 12)


def _int_images(draw, rng, n):
    dtype = np.dtype(draw(st.sampled_from(INT_DTYPES)))
    info = np.iinfo(dtype)
    low = max(info.min, draw(st.sampled_from([-5, 0, 0])))
    high = min(info.max, int(draw(st.sampled_from(HIGHS[:-1]))))
    shape = draw(st.sampled_from([(8, 8), (8, 8, 1), (1, 8, 8), (9, 7)]))
    return rng.integers(low, high, size=(n, *shape), endpoint=True).astype(dtype)


def _float_images(draw, rng, n):
    low = draw(st.sampled_from([0.0, -1.0, -300.0]))
    high = draw(st.sampled_from(HIGHS))
    X = rng.uniform(low, high, size=(n, 8, draw(st.integers(6, 10))))
    with np.errstate(over="ignore"):
        return X.astype(draw(st.sampled_from(FLOAT_DTYPES)))


def _pil_image(draw, rng):
    h, w = draw(side), draw(side)
    pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(draw(st.sampled_from(PIL_MODES)))


LAYOUTS = ["HW", "HW1", "1HW", "HW3", "3HW"]


def _array_image(draw, rng, layout):
    h, w = draw(side), draw(side)
    if layout == "mixed":
        layout = draw(st.sampled_from(LAYOUTS))
    shape = {"HW": (h, w), "HW1": (h, w, 1), "1HW": (1, h, w)}.get(layout)
    shape = shape or ((h, w, 3) if layout == "HW3" else (3, h, w))
    dtype = draw(st.sampled_from([*INT_DTYPES[:4], *FLOAT_DTYPES]))
    high = 1 if dtype.startswith("float") else 255
    x = (rng.uniform(0, high, size=shape)).astype(dtype)
    return torch.from_numpy(x) if draw(st.booleans()) and dtype != "uint16" else x


# The PIL modes each format saves (others are saved as RGB).
SAVES = {
    ".png": ("PNG", {"L", "RGB", "RGBA", "P", "1", "LA", "I;16"}),
    ".JPG": ("JPEG", {"L", "RGB"}),
    ".bmp": ("BMP", {"L", "RGB", "P", "1"}),
    ".gif": ("GIF", {"L", "P"}),
}


def _folder(draw, rng, root):
    """A random folder of class subfolders, some of them broken."""
    # Mostly valid: two or three classes of one to four images, with now
    # and then an empty class, a stray file or a broken image.
    for c in range(draw(st.sampled_from([0, 1, 2, 2, 3, 3]))):
        (root / f"class_{c}").mkdir()
        if draw(st.integers(0, 5)) == 0:
            (root / f"class_{c}" / "notes.txt").write_text("not an image")
        for i in range(draw(st.sampled_from([0, 1, 2, 3, 4, 4]))):
            ext = draw(st.sampled_from(list(SAVES)))
            path = root / f"class_{c}" / f"{i}{ext}"
            if draw(st.integers(0, 19)) == 0:
                path.write_bytes(rng.bytes(draw(st.integers(0, 64))))
                continue
            image = _pil_image(draw, rng)
            fmt, modes = SAVES[ext]
            image.convert(image.mode if image.mode in modes else "RGB").save(path, fmt)
    return root


@st.composite
def new_inputs(draw, root):
    """(X, y) of the kinds the data step reads since the input contract."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = draw(st.integers(2, 9))
    kind = draw(st.sampled_from(NEW_KINDS))
    if kind == "int_dtype":
        return _int_images(draw, rng, n), _labels(n)
    if kind == "float_range":
        return _float_images(draw, rng, n), _labels(n)
    if kind == "pil_list":
        return [_pil_image(draw, rng) for _ in range(n)], _labels(n)
    if kind == "array_list":
        # Mostly one layout for the whole list, as real data have.
        layout = draw(st.sampled_from([*LAYOUTS, "mixed"]))
        return [_array_image(draw, rng, layout) for _ in range(n)], _labels(n)
    return _folder(draw, rng, root), None


def _works_or_clear_error(call, outcomes):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            call()
    except (ValueError, TypeError) as exc:
        assert str(exc).strip()
        outcomes.append("error")
    else:
        outcomes.append("worked")


NEW_FUZZ = settings(FUZZ, max_examples=120)


def test_new_inputs_work_or_are_clear_errors(fitted):
    outcomes = []

    @NEW_FUZZ
    @given(data=st.data())
    def fit_and_predict(data):
        with tempfile.TemporaryDirectory() as tmp:
            X, y = data.draw(new_inputs(Path(tmp)))
            clf = FastRetrainClassifier(
                make_tiny_cnn, max_epochs=1, random_state=0, lr=0.05
            )

            def fit_then_predict():
                clf.fit(X, y)
                n = len(load_image_folder(X).filenames) if y is None else len(X)
                assert clf.predict_proba(X).shape == (n, len(clf.classes_))
                assert np.isin(clf.predict(X), clf.classes_).all()

            _works_or_clear_error(fit_then_predict, outcomes)
            _works_or_clear_error(lambda: fitted.predict_proba(X), outcomes)

    fit_and_predict()
    # Both outcomes occur: the inputs are neither all valid nor all broken.
    assert outcomes.count("worked") >= 60 and outcomes.count("error") >= 20
