import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_cnn_classifier
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from torch import nn

from skfastretrain import (
    DivergenceError,
    DivergenceGuard,
    DivergenceWarning,
    FastRetrainClassifier,
)


@pytest.fixture
def blobs():
    X = np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def _net(lr, max_epochs=5, callbacks=()):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2))
    return NeuralNetClassifier(
        module,
        criterion=nn.CrossEntropyLoss,
        optimizer__momentum=0.9,
        lr=lr,
        max_epochs=max_epochs,
        train_split=None,
        verbose=0,
        callbacks=list(callbacks),
    )


def _fit(net, X, y):
    torch.manual_seed(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.fit(X, y)
    return [w for w in caught if issubclass(w.category, DivergenceWarning)]


def _same_weights(a, b):
    sa, sb = a.module_.state_dict(), b.module_.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_finite_blow_up_warns_and_keeps_the_best_epoch(blobs):
    X, y = blobs
    net = _net(lr=30.0, callbacks=[("guard", DivergenceGuard())])
    caught = _fit(net, X, y)
    guard = dict(net.callbacks_)["guard"]
    assert len(caught) == 1 and "lr=30" in str(caught[0].message)
    assert "loss rose" in guard.diverged_
    assert net.history[-1, "diverged"] == guard.diverged_
    kept = guard.best_epoch_
    assert net.history[-1, "kept_epoch"] == kept >= 1
    # The interrupted epoch has no train_loss; of the others, the lowest.
    losses = [row["train_loss"] for row in net.history if "train_loss" in row]
    assert kept == 1 + int(np.argmin(losses))
    # The kept model is that of a plain skorch fit stopped after that epoch.
    reference = _net(lr=30.0, max_epochs=kept)
    assert not _fit(reference, X, y)
    assert _same_weights(net, reference)


def test_healthy_fit_is_left_alone(blobs):
    X, y = blobs
    guarded = _net(lr=0.1, callbacks=[("guard", DivergenceGuard())])
    assert not _fit(guarded, X, y)
    assert dict(guarded.callbacks_)["guard"].diverged_ is None
    plain = _net(lr=0.1)
    _fit(plain, X, y)
    assert _same_weights(guarded, plain)
    assert guarded.history[:, "train_loss"] == plain.history[:, "train_loss"]


def test_nan_loss_raises(blobs):
    X, y = blobs
    net = _net(lr=1e30, callbacks=[("guard", DivergenceGuard(max_loss_ratio=1e30))])
    # The hint names a tenth of the rate that diverged.
    hint = r"nan in epoch 1 \(lr=1e\+30\)\. .* to 1e\+29;"
    with pytest.raises(DivergenceError, match=hint):
        _fit(net, X, y)


class _FakeSolver(Callback):
    """Records what RidgeHeadSolver would: the rule is then checked alone."""

    def __init__(self, train_acc_ridge, train_acc):
        self.train_acc_ridge = train_acc_ridge
        self.train_acc = train_acc

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        if epoch == 1:
            net.history.record("init_train_acc", 0.9)
        net.history.record("train_acc_ridge", self.train_acc_ridge[epoch - 1])
        net.history.record("train_acc", self.train_acc[epoch - 1])


@pytest.mark.parametrize(
    ("train_acc_ridge", "expected"),
    [
        # Two classes: chance 0.5, so the floor is 0.5 + 0.5 * (0.9 - 0.5).
        ([0.9, 0.8, 0.69, 0.9], 3),
        ([0.9, 0.71, 0.9, 0.9], None),
    ],
)
def test_accuracy_collapse_stops_and_keeps_the_best_scored_epoch(
    blobs, train_acc_ridge, expected
):
    X, y = blobs
    train_acc = [0.95, 0.97, 0.5, 0.5]
    guard = DivergenceGuard(max_loss_ratio=1e30)
    net = _net(
        lr=0.01,
        max_epochs=4,
        callbacks=[("guard", guard), ("fake", _FakeSolver(train_acc_ridge, train_acc))],
    )
    caught = _fit(net, X, y)
    if expected is None:
        assert not caught and guard.diverged_ is None
        return
    assert "accuracy of a ridge head" in guard.diverged_
    assert f"after epoch {expected}" in guard.diverged_
    # Epoch 2 has the best train_acc: its model is put back.
    assert guard.best_epoch_ == 2
    reference = _net(lr=0.01, max_epochs=2)
    _fit(reference, X, y)
    assert _same_weights(net, reference)


def test_estimator_with_lr_1_keeps_the_ridge_started_model(digit_images):
    X, y, X_test, y_test = digit_images

    class StartingPredictions(Callback):
        # After the estimator's own callbacks: the ridge-started model.
        def on_train_begin(self, net, X=None, y=None, **kwargs):
            self.proba_ = net.predict_proba(X_test[:, None])

    clf = FastRetrainClassifier(
        input_size=32,
        lr=1.0,
        max_epochs=2,
        random_state=0,
        callbacks=[("start", StartingPredictions())],
    )
    hint = r"lr=1\b.*Lower the learning rate, for instance to 0\.1;"
    with pytest.warns(DivergenceWarning, match=hint):
        clf.fit(X[:300], y[:300])
    assert clf.history_[-1, "kept_epoch"] == 0
    start = dict(clf.net_.callbacks_)["start"].proba_
    # The starting predictions ran through the prefix store, filled by the
    # prefix with its BatchNorm folded in: the same function, rounded
    # otherwise.
    np.testing.assert_allclose(clf.predict_proba(X_test), start, rtol=1e-4, atol=1e-5)
    # Not near chance (0.1): the pretrained features' ridge head.
    assert clf.score(X_test, y_test) > 0.7


def test_divergence_is_never_silent(small_images):
    # A finite blow-up is caught before the loss reaches NaN.
    with pytest.warns(DivergenceWarning, match=r"diverged.*\(lr=1e\+03\)"):
        clf = tiny_cnn_classifier(lr=1e3, max_epochs=3).fit(*small_images)
    assert clf.history_[-1, "kept_epoch"] == 0
