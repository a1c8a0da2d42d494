"""The callback pipeline: its stages, in their one declared order."""

import pytest
from conftest import tiny_cnn_classifier as _cnn
from skorch.callbacks import Callback, LRScheduler, ProgressBar

from skfastretrain import (
    DivergenceGuard,
    EarlyStopping,
    FastRetrainClassifier,
    LayerFreezer,
    LRProbe,
    PrefixCache,
    RidgeHead,
    RidgeHeadSolver,
    SGDEpoch,
    TrainingCheckpoint,
    ValidationScoring,
)
from skfastretrain._config import resolve_config
from skfastretrain._model import build_model
from skfastretrain._pipeline import STAGES, build_pipeline
from skfastretrain._validation import check_fit_input


class Watcher(Callback):
    pass


def _pipeline(est, X, y):
    fit_input = check_fit_input(est, X, y)
    config = resolve_config(est, fit_input)
    return build_pipeline(config, build_model(config, fit_input))


def test_stage_order_is_declared_once_with_reasons():
    names = [stage.name for stage in STAGES]
    assert len(set(names)) == len(names)
    assert all(stage.reason for stage in STAGES)
    # The constraints the stages' reasons state.
    assert names.index("freezer") < names.index("lr_probe")
    assert names.index("freezer") < names.index("prefix_cache")
    assert names.index("prefix_cache") < names.index("ridge_head")
    assert names.index("ridge_head") < names.index("regularizer")
    assert names.index("ridge_head") < names.index("validation")
    assert names.index("validation") < names.index("user")
    assert names[-1] == "checkpoint"


def test_every_stage_in_its_place(small_images, tmp_path):
    X, y = small_images
    est = _cnn(
        freeze_mode="prefix",
        lr="auto",
        early_stopping=EarlyStopping(),
        sgd=SGDEpoch(lr_schedule="cosine"),
        regularizer="l2sp",
        verbose=1,
        callbacks=[
            ("watch", Watcher()),
            TrainingCheckpoint(tmp_path / "ckpt.pt"),
        ],
    )
    pipeline = _pipeline(est, X, y)
    assert pipeline.stage_names == [
        "progress_bar",
        "divergence_guard",
        "freezer",
        "lr_probe",
        "prefix_cache",
        "ridge_head",
        "regularizer",
        "validation",
        "lr_schedule",
        "watch",
        "checkpoint",
    ]
    callbacks = dict(pipeline.callbacks)
    types = {
        "progress_bar": ProgressBar,
        "divergence_guard": DivergenceGuard,
        "freezer": LayerFreezer,
        "lr_probe": LRProbe,
        "prefix_cache": PrefixCache,
        "ridge_head": RidgeHeadSolver,
        "validation": ValidationScoring,
        "lr_schedule": LRScheduler,
        "watch": Watcher,
        "checkpoint": TrainingCheckpoint,
    }
    assert all(isinstance(callbacks[k], t) for k, t in types.items())
    # The typed references are the callbacks the net runs.
    assert pipeline.guard is callbacks["divergence_guard"]
    assert pipeline.probe is callbacks["lr_probe"]
    assert pipeline.regularizer is callbacks["regularizer"]
    assert pipeline.validation is callbacks["validation"]
    assert pipeline.checkpoint is callbacks["checkpoint"]
    # The user's checkpoint is replaced by the pipeline's, on its file.
    assert str(pipeline.checkpoint.path) == str(tmp_path / "ckpt.pt")
    assert pipeline.train_split is not None


@pytest.mark.parametrize(
    ("params", "absent"),
    [
        ({"ridge_lambda": None}, {"ridge_head", "lr_probe"}),
        ({"head": RidgeHead(init="random")}, {"lr_probe"}),
        ({"freeze_mode": "random"}, {"prefix_cache"}),
        ({"verbose": 0}, {"progress_bar", "validation", "regularizer"}),
    ],
)
def test_optional_stages_follow_the_configuration(small_images, params, absent):
    X, y = small_images
    params = {"lr": "auto", "freeze_mode": "prefix", **params}
    pipeline = _pipeline(_cnn(**params), X, y)
    assert not absent & set(pipeline.stage_names)
    assert pipeline.stage_names[-1] == "checkpoint"
    order = [stage.name for stage in STAGES]
    assert pipeline.stage_names == sorted(pipeline.stage_names, key=order.index)


def test_fitted_estimator_exposes_the_pipelines_results(digit_images):
    X, y, _, _ = digit_images
    clf = FastRetrainClassifier(
        "efficientnet_lite0",
        weights=None,
        input_size=32,
        early_stopping=EarlyStopping(n_iter_no_change=None),
        regularizer="feature_map",
        ridge_lambda=1.0,
        max_epochs=2,
        random_state=0,
    ).fit(X[:200], y[:200])
    callbacks = dict(clf.net_.callbacks_)
    assert clf.lr_ == callbacks["lr_probe"].lr_
    assert clf.best_epoch_ == callbacks["validation"].best_epoch_
    assert clf.attention_ is callbacks["regularizer"].attention_
