"""The defaults: the configuration the defaults pilot measured best."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_cnn_classifier as _cnn
from skorch.callbacks import Callback

from skfastretrain import FastRetrainClassifier, LRProbe, RidgeHead, SGDEpoch
from skfastretrain._config import resolve_input_size, stores_prefix
from skfastretrain._settings import HEAD_SHORTCUTS, resolve_sgd

#: The record of the defaults pilot (``python -m benchmarks.defaults``): the
#: ``base`` row of each task holds the configuration it measured as the
#: defaults, with SGDEpoch's settings named flat.
PILOT = Path(__file__).resolve().parents[1] / "benchmarks/results/defaults.json"
#: The stage-head benchmark (``python -m benchmarks.stage_head``): which
#: stages RidgeHead reads by default and whether a fit stops on held-out
#: rows, left out of each task in turn.
STAGE_HEAD = Path(__file__).resolve().parents[1] / "benchmarks/results/stage_head.json"
#: The per-task choices (``python -m benchmarks.per_task``): the learning
#: rate's rule, BatchNorm's mode, augmentation, when and how far the head is
#: solved, and the frozen fraction, each decided by leaving one task out.
PER_TASK = Path(__file__).resolve().parents[1] / "benchmarks/results/per_task.json"


@pytest.mark.parametrize("task", ["fashion", "digits"])
def test_defaults_are_the_benchmarked_configuration(task):
    base = json.loads(PILOT.read_text())["runs"][task]["base"]["params"]
    params = FastRetrainClassifier().get_params()
    # The SGD settings of that configuration are those of sgd=None.
    assert params["sgd"] is None
    params.update(SGDEpoch().get_params())
    assert {k: params[k] for k in base} == base


def test_default_head_and_epochs_are_the_benchmarked_choice():
    chosen = json.loads(STAGE_HEAD.read_text())
    assert RidgeHead().stages == chosen["ridge_head_stages"]
    params = FastRetrainClassifier().get_params()
    assert params["early_stopping"] == chosen["early_stopping"]
    assert params["max_epochs"] == chosen["max_epochs"]


def _default_of(setting):
    """The default value of a setting as the per-task benchmark names it:
    an estimator parameter, ``sgd`` (SGDEpoch's), ``head`` (RidgeHead's) or
    ``probe`` (LRProbe's)."""
    params = FastRetrainClassifier().get_params()
    # sgd=None is SGDEpoch's defaults and head="ridge" RidgeHead's.
    assert params["sgd"] is None
    assert HEAD_SHORTCUTS[params["head"]] == {}
    defaults = {
        **params,
        "sgd": SGDEpoch().get_params(),
        "head": RidgeHead().get_params(),
        "probe": LRProbe().get_params(),
    }
    return defaults[setting]


def _is_default(settings):
    return all(
        {k: _default_of(name)[k] for k in value} == value
        if isinstance(value, dict)
        else _default_of(name) == value
        for name, value in settings.items()
    )


@pytest.mark.parametrize(
    "choice", ["lr", "bn_mode", "augment", "head solves", "head blend", "freeze_prob"]
)
def test_per_task_choices_are_the_benchmarked_defaults(choice):
    decided = json.loads(PER_TASK.read_text())["defaults"][choice]
    candidates = decided["candidates"]
    # The chosen candidate's settings are the defaults, and no other
    # candidate's are.
    assert _is_default(candidates[decided["chosen"]])
    for label, settings in candidates.items():
        if label != decided["chosen"]:
            assert not _is_default(settings), label


def test_default_estimator_fine_tunes_pretrained_lite0(digit_images):
    X, y, X_test, y_test = digit_images

    class Probe(Callback):
        def on_train_begin(self, net, **kwargs):
            self.score_ = np.mean(net.predict(X_test[:, None]) == y_test)

    clf = FastRetrainClassifier(
        max_epochs=1, random_state=0, callbacks=[("probe", Probe())]
    ).fit(X[:600], y[:600])
    # 8x8 digits on a CPU: 64 px, the learning rate the probe finds for
    # pretrained Lite0, and the frozen prefix stored.
    assert clf.input_size_ == (64, 64)
    assert clf.lr_ == pytest.approx(1e-3)
    assert "prefix_cache_rows" in clf.history_[-1]
    # Half of Lite0's 49 conv and linear layers, rounded.
    assert clf.history_[0, "frozen_fraction"] == pytest.approx(0.5, abs=0.02)
    # Pretrained features: the ridge start is already far above chance,
    # and the fine-tuned model does not fall below it.
    probe = dict(clf.net_.callbacks_)["probe"].score_
    assert probe > 0.85
    assert clf.score(X_test, y_test) >= probe - 0.02


@pytest.mark.parametrize(
    ("native", "device", "expected"),
    [
        ((8, 8), "cpu", (64, 64)),
        ((28, 28), "cpu", (64, 64)),
        ((96, 80), "cpu", (96, 80)),
        ((500, 375), "cpu", (224, 224)),
        ((28, 28), "cuda", (224, 224)),
        (None, "cpu", (224, 224)),
    ],
)
def test_input_size_auto(native, device, expected):
    assert resolve_input_size("auto", (224, 224), native, device) == expected
    # Without a pretrained input size nothing is resized, as with None.
    assert resolve_input_size("auto", None, native, device) is None
    assert resolve_input_size(None, (224, 224), native, device) == (224, 224)
    assert resolve_input_size(32, (224, 224), native, device) == (32, 32)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, True),
        ({"freeze_mode": "random"}, False),
        ({"sgd": SGDEpoch(augment="light")}, False),
        ({"precision": "bfloat16"}, False),
        ({"regularizer": "delta"}, False),
        ({"regularizer": "l2sp"}, True),
        ({"sgd": SGDEpoch(cache_prefix=False)}, False),
    ],
)
def test_cache_prefix_auto(params, expected):
    est = FastRetrainClassifier(**params)
    sgd = resolve_sgd(est.sgd)
    applies = stores_prefix(sgd, est.freeze_mode, est.precision, est.regularizer)
    assert applies is expected


def test_cache_prefix_auto_fits_as_without_cache(small_images, exact_store):
    X, y = small_images
    # cpu: the two fits are compared to 1e-4, about what one float32 ulp of
    # difference grows to in two epochs; CUDA's atomic sums add such noise.
    cached = _cnn(freeze_mode="prefix", max_epochs=2, device="cpu").fit(X, y)
    assert "prefix_cache_rows" in cached.history_[-1]
    plain = _cnn(
        freeze_mode="prefix",
        max_epochs=2,
        sgd=SGDEpoch(cache_prefix=False),
        device="cpu",
    )
    plain.fit(X, y)
    assert "prefix_cache_rows" not in plain.history_[-1]
    np.testing.assert_allclose(
        cached.predict_proba(X), plain.predict_proba(X), rtol=1e-4, atol=1e-5
    )
