"""ValidationScoring: the validation split scored after the head solve, and
early stopping, in a plain skorch net and through the estimator."""

import copy

import numpy as np
import pytest
import torch
from conftest import invalid_param, tiny_cnn_classifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import GridSearchCV, StratifiedShuffleSplit
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit
from torch import nn

from skfastretrain import (
    EarlyStopping,
    RidgeHeadSolver,
    TrainingCheckpoint,
)
from skfastretrain.callbacks import ValidationScoring


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(np.int64)
    return X, y


class Snapshots(Callback):
    """The module's weights after every callback of each epoch ran."""

    def initialize(self):
        self.states = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.states.append(copy.deepcopy(net.module_.state_dict()))


def _net(callbacks, max_epochs=6, lr=0.1):
    torch.manual_seed(0)
    return NeuralNetClassifier(
        nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)),
        optimizer__momentum=0.9,
        lr=lr,
        max_epochs=max_epochs,
        train_split=ValidSplit(0.2, stratified=True, random_state=0),
        verbose=0,
        callbacks=callbacks,
    )


def _valid_rows(X, y):
    # skorch's ValidSplit is StratifiedShuffleSplit's first split.
    split = StratifiedShuffleSplit(test_size=0.2, random_state=0)
    _, valid = next(split.split(X, y))
    return X[valid], y[valid]


def test_scores_equal_scikit_learns_metrics_on_the_validation_rows(blobs):
    X, y = blobs
    snaps = Snapshots()
    net = _net(
        [("solver", RidgeHeadSolver(1.0)), ("validation", ValidationScoring(None))],
        max_epochs=3,
    )
    net.callbacks.append(("snaps", snaps))
    net.fit(X, y)
    Xv, yv = _valid_rows(X, y)
    module = copy.deepcopy(net.module_).eval()
    for epoch, state in enumerate(snaps.states):
        module.load_state_dict(state)
        with torch.no_grad():
            proba = torch.softmax(module(torch.from_numpy(Xv)), 1).numpy()
        # After the head solve: the model the epoch ends with.
        row = net.history[epoch]
        assert row["valid_loss"] == pytest.approx(log_loss(yv, proba), rel=1e-5)
        assert row["valid_acc"] == accuracy_score(yv, proba.argmax(1))


def test_keeps_the_best_epochs_weights(blobs):
    X, y = blobs
    snaps = Snapshots()
    net = _net([("validation", ValidationScoring(None)), ("snaps", snaps)], lr=0.5)
    net.fit(X, y)
    losses = net.history[:, "valid_loss"]
    best = int(np.argmin(losses))
    assert dict(net.callbacks_)["validation"].best_epoch_ == best + 1
    assert best + 1 < len(losses)  # the test needs a later, worse epoch
    state = net.module_.state_dict()
    assert all(torch.equal(state[k], snaps.states[best][k]) for k in state)
    assert net.history[best, "valid_loss_best"]
    assert not net.history[-1, "valid_loss_best"]


def test_without_restore_best_keeps_the_last_epoch(blobs):
    X, y = blobs
    snaps = Snapshots()
    net = _net(
        [("validation", ValidationScoring(None, restore_best=False)), ("s", snaps)],
        lr=0.5,
    ).fit(X, y)
    state = net.module_.state_dict()
    assert all(torch.equal(state[k], snaps.states[-1][k]) for k in state)


@pytest.mark.parametrize("n_iter_no_change", [1, 2])
def test_stops_after_n_epochs_without_improvement(blobs, n_iter_no_change):
    X, y = blobs
    net = _net([("validation", ValidationScoring(n_iter_no_change, tol=1.0))])
    net.fit(X, y)
    # No epoch gains 1.0 of log loss on the first: stopped after the
    # first epoch plus n_iter_no_change, with one row per epoch run.
    assert len(net.history) == 1 + n_iter_no_change
    assert all("train_loss" in row for row in net.history)
    assert net.history[-1, "stopped_early"]
    assert dict(net.callbacks_)["validation"].stopped_epoch_ == 1 + n_iter_no_change


class StartSnapshot(Callback):
    """The module's weights when the first epoch begins (after every
    on_train_begin, the solver's first solve included)."""

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == 1:
            self.state = copy.deepcopy(net.module_.state_dict())


def test_score_start_keeps_the_start_when_no_epoch_beats_it(blobs):
    X, y = blobs
    start = StartSnapshot()
    # The ridge start is a good probe; lr=5 wrecks every epoch after it.
    net = _net(
        [
            ("solver", RidgeHeadSolver(1.0, feature_source="pass")),
            ("start", start),
            ("validation", ValidationScoring(None, score_start=True)),
        ],
        max_epochs=3,
        lr=5.0,
    ).fit(X, y)
    losses = [net.history[0, "init_valid_loss"], *net.history[:, "valid_loss"]]
    assert int(np.argmin(losses)) == 0  # the test needs worse epochs
    assert dict(net.callbacks_)["validation"].best_epoch_ == 0
    state = net.module_.state_dict()
    assert all(torch.equal(state[k], start.state[k]) for k in state)
    # The start's score, against scikit-learn's metrics on the start model.
    Xv, yv = _valid_rows(X, y)
    module = copy.deepcopy(net.module_).eval()
    with torch.no_grad():
        proba = torch.softmax(module(torch.from_numpy(Xv)), 1).numpy()
    assert losses[0] == pytest.approx(log_loss(yv, proba), rel=1e-5)
    assert net.history[0, "init_valid_acc"] == accuracy_score(yv, proba.argmax(1))
    assert not any(net.history[:, "valid_loss_best"])


@pytest.mark.parametrize("n_iter_no_change", [1, 2])
def test_score_start_sets_the_first_bar(blobs, n_iter_no_change):
    X, y = blobs
    scoring = ValidationScoring(n_iter_no_change, tol=1.0, score_start=True)
    net = _net([("validation", scoring)]).fit(X, y)
    # No epoch gains 1.0 of log loss on the start, so the first epoch
    # counts as one without improvement too.
    assert len(net.history) == n_iter_no_change
    assert net.history[-1, "stopped_early"]


def test_without_score_start_the_start_is_not_scored(blobs):
    X, y = blobs
    net = _net([ValidationScoring(None)], max_epochs=1).fit(X, y)
    assert "init_valid_loss" not in net.history[0]


def test_needs_a_validation_split(blobs):
    X, y = blobs
    net = _net([ValidationScoring()])
    net.set_params(train_split=None)
    with pytest.raises(ValueError, match=r"needs validation rows.*ValidSplit"):
        net.fit(X, y)


def test_bad_parameters_name_the_options(blobs):
    X, y = blobs
    net = _net([ValidationScoring(scoring="f1")])
    match = invalid_param("scoring", "ValidationScoring", "loss", "accuracy")
    with pytest.raises(ValueError, match=match):
        net.fit(X, y)


@pytest.fixture(scope="module")
def digits(digit_images):
    X, y, _, _ = digit_images
    return X[:200], y[:200]


def test_estimator_holds_out_the_rows_from_every_step(digits):
    X, y = digits
    est = tiny_cnn_classifier(
        max_epochs=2, device="cpu", early_stopping=EarlyStopping(n_iter_no_change=None)
    ).fit(X, y)
    solver = dict(est.net_.callbacks_)["ridge_head"]
    assert solver.stats_.n_samples == 180
    trained = sum(b["train_batch_size"] for b in est.history_[0, "batches"])
    assert trained == 180


def test_estimator_validation_equals_a_scikit_learn_score(digits):
    X, y = digits
    est = tiny_cnn_classifier(
        max_epochs=1, device="cpu", early_stopping=EarlyStopping(n_iter_no_change=None)
    ).fit(X, y)
    # The estimator's split: skorch's ValidSplit with the fit's seed.
    split = est.net_.train_split
    _, valid = next(
        StratifiedShuffleSplit(test_size=0.1, random_state=split.random_state).split(
            X, est.classes_.searchsorted(y)
        )
    )
    proba = est.predict_proba(X[valid])
    # The estimator ends with the better of its start and its one epoch.
    key = "init_valid_" if est.best_epoch_ == 0 else "valid_"
    assert est.history_[0, key + "loss"] == pytest.approx(
        log_loss(y[valid], proba, labels=est.classes_), rel=1e-5
    )
    assert est.history_[0, key + "acc"] == est.score(X[valid], y[valid])


def test_estimator_keeps_its_ridge_start_when_the_epochs_do_worse(digits):
    X, y = digits
    est = tiny_cnn_classifier(
        max_epochs=2,
        device="cpu",
        lr=0.1,
        early_stopping=EarlyStopping(n_iter_no_change=None),
        callbacks=[("start", StartSnapshot())],
    ).fit(X, y)
    assert est.history_[0, "init_valid_loss"] < min(est.history_[:, "valid_loss"])
    assert est.best_epoch_ == 0
    start = dict(est.net_.callbacks_)["start"].state
    state = est.module_.state_dict()
    assert all(torch.equal(state[k], start[k]) for k in state)


def test_a_split_without_every_class_on_both_sides_is_refused(digits):
    X, y = digits
    est = tiny_cnn_classifier(early_stopping=EarlyStopping(validation_fraction=0.01))
    with pytest.raises(
        ValueError, match=r"holds out 2 of 200 .* each of the 10 classes"
    ):
        est.fit(X, y)


def test_grid_search_reaches_the_validation_fraction(digits):
    X, y = digits
    search = GridSearchCV(
        tiny_cnn_classifier(device="cpu", early_stopping=EarlyStopping()),
        {"early_stopping__validation_fraction": [0.1, 0.2]},
        cv=2,
    ).fit(X, y)
    assert search.best_estimator_.early_stopping.validation_fraction in (0.1, 0.2)
    assert len(search.cv_results_["mean_test_score"]) == 2


def test_a_resumed_fit_restores_the_best_epoch(small_images, tmp_path):
    X, y = small_images
    params = {
        "max_epochs": 3,
        "device": "cpu",
        "lr": 0.1,
        "early_stopping": EarlyStopping(n_iter_no_change=None),
    }
    whole = tiny_cnn_classifier(**params).fit(X, y)
    # The best is the start (epoch 0), before the resumed epoch: its
    # weights and score must come back from the checkpoint.
    assert whole.best_epoch_ == 0
    ckpt = [TrainingCheckpoint(tmp_path / "fit.ckpt")]
    tiny_cnn_classifier(**{**params, "max_epochs": 2, "callbacks": ckpt}).fit(X, y)
    resumed = tiny_cnn_classifier(**{**params, "callbacks": ckpt}).fit(
        X, y, resume=True
    )
    assert resumed.best_epoch_ == whole.best_epoch_
    np.testing.assert_allclose(resumed.predict_proba(X), whole.predict_proba(X))


class MarksDiverged(Callback):
    """Stands in for DivergenceGuard: at the end of training it records a
    divergence and puts the starting weights back, as the guard does."""

    def on_train_begin(self, net, **kwargs):
        self.start = copy.deepcopy(net.module_.state_dict())

    def on_train_end(self, net, **kwargs):
        net.history.record("diverged", "test")
        net.module_.load_state_dict(self.start)


def test_a_diverged_fit_keeps_the_guards_model(blobs):
    X, y = blobs
    guard = MarksDiverged()
    net = _net([guard, ValidationScoring(None)], max_epochs=3).fit(X, y)
    # The guard's choice is not overridden by the best validation epoch,
    # whose weights may be the diverged ones.
    state = net.module_.state_dict()
    assert all(torch.equal(state[k], guard.start[k]) for k in state)
    assert dict(net.callbacks_)["ValidationScoring"].best_epoch_ is not None
