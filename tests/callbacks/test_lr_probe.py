import copy

import numpy as np
import pytest
import torch
from conftest import invalid_param, make_tiny_cnn
from sklearn.utils import check_random_state
from skorch import NeuralNetClassifier
from torch import nn

from skfastretrain import FastRetrainClassifier, LRProbe, RidgeHead

CANDIDATES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@pytest.fixture
def blobs():
    X = np.random.default_rng(0).normal(size=(512, 8)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def _module():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))


def _net(callbacks=(), lr=0.01):
    return NeuralNetClassifier(
        _module(),
        criterion=nn.CrossEntropyLoss,
        optimizer__momentum=0.9,
        lr=lr,
        batch_size=32,
        max_epochs=1,
        train_split=None,
        verbose=0,
        callbacks=list(callbacks),
    )


def _reference_losses(X, y, *, n_steps, random_state):
    """The probe written as a plain torch loop."""
    rows = np.sort(
        check_random_state(random_state).choice(len(X), n_steps * 32, replace=False)
    )
    batches = [
        (torch.as_tensor(X[rows[i : i + 32]]), torch.as_tensor(y[rows[i : i + 32]]))
        for i in range(0, len(rows), 32)
    ]
    start = _module()
    tail = slice(n_steps // 2, None)
    with torch.no_grad():
        start_loss = np.mean(
            [nn.functional.cross_entropy(start(xb), yb).item() for xb, yb in batches][
                tail
            ]
        )
    losses = {}
    for lr in CANDIDATES:
        model = copy.deepcopy(start)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        seen = []
        for xb, yb in batches:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            seen.append(loss.item())
        losses[lr] = np.mean(seen[tail]) if np.all(np.isfinite(seen)) else np.inf
    return start_loss, losses


@pytest.mark.parametrize("start", [1e-2, 1.0])
@pytest.mark.parametrize("max_loss_ratio", [1.0, 2.0])
def test_probe_matches_a_plain_torch_loop(blobs, start, max_loss_ratio):
    X, y = blobs
    probe = LRProbe(
        CANDIDATES,
        start=start,
        n_steps=6,
        max_loss_ratio=max_loss_ratio,
        random_state=0,
    )
    _net([("probe", probe)]).fit(X, y)
    start_loss, losses = _reference_losses(X, y, n_steps=6, random_state=0)
    assert probe.start_loss_ == pytest.approx(start_loss, rel=1e-5)
    for lr, loss in probe.losses_.items():
        assert loss == pytest.approx(losses[lr], rel=1e-4)
    assert probe.lr_ == _expected_rate(losses, max_loss_ratio * start_loss, start)


def _expected_rate(losses, bound, start):
    """The documented rule on the reference losses: from the rate nearest
    ``start``, climb while within the bound, or descend until within it;
    keep the largest rate within it, else the lowest loss."""
    rates = sorted(losses)
    first = int(np.argmin([abs(np.log(r / start)) for r in rates]))
    if losses[rates[first]] <= bound:
        tried = [rates[first]]
        for lr in rates[first + 1 :]:
            tried.append(lr)
            if losses[lr] > bound:
                break
    else:
        tried = rates[: first + 1]
        for i in range(first - 1, -1, -1):
            if losses[rates[i]] <= bound:
                tried = rates[i : first + 1]
                break
    safe = [lr for lr in tried if losses[lr] <= bound]
    return max(safe) if safe else min(tried, key=losses.get)


def test_probe_leaves_no_trace_but_the_rate(blobs):
    X, y = blobs
    torch.manual_seed(5)
    probed = _net([("probe", LRProbe([0.05], random_state=0))], lr=1.0).fit(X, y)
    torch.manual_seed(5)
    plain = _net(lr=0.05).fit(X, y)
    assert probed.history[0, "probe_lr"] == 0.05
    assert probed.optimizer_.param_groups[0]["lr"] == 0.05
    for name, value in plain.module_.state_dict().items():
        torch.testing.assert_close(probed.module_.state_dict()[name], value)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"candidates": []}, "candidates"),
        ({"candidates": [0.1, -1.0]}, "candidates"),
        ({"n_steps": 0}, invalid_param("n_steps", "LRProbe", "[1, inf)", got="0")),
        ({"start": 0.0}, invalid_param("start", "LRProbe", "(0.0, inf)", got="0.0")),
    ],
)
def test_probe_checks_its_parameters(blobs, params, match):
    with pytest.raises(ValueError, match=match):
        _net([LRProbe(**params)]).fit(*blobs)


def _cnn_with_dropout():
    return nn.Sequential(make_tiny_cnn(), nn.Dropout(0.5))


def test_estimator_lr_auto_is_a_fit_at_the_chosen_rate(small_images):
    X, y = small_images
    # Dropout: the probe must leave the fit's random stream as it was.
    params = {"backbone": _cnn_with_dropout, "max_epochs": 2, "random_state": 0}
    params["device"] = "cpu"  # the two fits are compared to 1e-5
    auto = FastRetrainClassifier(**params).fit(X, y)
    assert auto.lr_ == auto.history_[0, "probe_lr"]
    assert auto.lr_ in dict(auto.net_.callbacks_)["lr_probe"].losses_
    fixed = FastRetrainClassifier(**params, lr=auto.lr_).fit(X, y)
    np.testing.assert_allclose(
        auto.predict_proba(X), fixed.predict_proba(X), rtol=1e-5, atol=1e-6
    )
    assert fixed.lr_ == auto.lr_


@pytest.mark.parametrize(
    "params", [{"ridge_lambda": None}, {"head": RidgeHead(init="random")}]
)
def test_lr_auto_without_a_solved_head_is_one_per_mille(small_images, params):
    # A random head makes every fast rate look good to the probe.
    clf = FastRetrainClassifier(
        make_tiny_cnn, max_epochs=1, random_state=0, **params
    ).fit(*small_images)
    assert "lr_probe" not in dict(clf.net_.callbacks_)
    assert "probe_lr" not in clf.history_[0]
    assert clf.lr_ == 1e-3 == clf.net_.optimizer_.param_groups[0]["lr"]
