import numpy as np
import pytest
import torch
from sklearn.datasets import make_circles
from skorch import NeuralNetClassifier
from torch import nn

from skfastretrain import FastRetrainClassifier, RidgeHead, RidgeHeadSolver
from skfastretrain.head._residual import (
    _pullback_maps,
    dense_layers,
    recompute_dense,
)


@pytest.fixture
def circles():
    X, y = make_circles(400, noise=0.05, factor=0.4, random_state=0)
    return X.astype(np.float32), y


def _mlp_net(hidden=16, **kwargs):
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 2),
    )
    net = NeuralNetClassifier(
        module,
        criterion=nn.CrossEntropyLoss,
        train_split=None,
        verbose=0,
        batch_size=64,
        **kwargs,
    )
    return net.initialize()


def _loss(net, X, y):
    with torch.no_grad():
        logits = net.module_(torch.from_numpy(X))
    return nn.functional.cross_entropy(logits, torch.from_numpy(y)).item()


@pytest.mark.parametrize("rate", [0.5, 1.0])
@pytest.mark.parametrize("keep_prob", [0.9, 1.0])
@pytest.mark.parametrize("alpha", [0.01, 0.1, 1.0, 10.0])
def test_one_recomputation_lowers_training_loss(circles, keep_prob, alpha, rate):
    # Concentric circles are not linearly separable: the hidden layers matter.
    X, y = circles
    net = _mlp_net()
    layers = dense_layers(net.module_)
    before = _loss(net, X, y)
    recompute_dense(
        net,
        net.get_dataset(X, y),
        layers,
        alpha=alpha,
        keep_prob=keep_prob,
        generator=torch.Generator().manual_seed(0),
    )
    assert _loss(net, X, y) < before


def test_top_layer_update_is_the_ridge_solution_of_the_residual(circles):
    from sklearn.linear_model import Ridge

    X, y = circles
    net = _mlp_net()
    top = dense_layers(net.module_)[-1]
    with torch.no_grad():
        H = net.module_[:-1](torch.from_numpy(X)).double().numpy()
        proba = torch.softmax(net.module_(torch.from_numpy(X)).double(), 1).numpy()
    residual = np.eye(2)[y] - proba
    ref = Ridge(alpha=0.5).fit(H, residual)
    w0 = top.weight.detach().double().clone().numpy()
    recompute_dense(net, net.get_dataset(X, y), [top], alpha=0.5, keep_prob=1.0)
    np.testing.assert_allclose(
        top.weight.detach().double().numpy() - w0, ref.coef_, rtol=1e-4, atol=1e-6
    )


def test_pullback_maps_compose_pseudo_inverses():
    torch.manual_seed(0)
    layers = [nn.Linear(5, 4), nn.Linear(4, 3)]
    maps = _pullback_maps(layers, alpha=0.1)
    assert maps[1].shape == (3, 3) and maps[0].shape == (3, 4)
    w = layers[1].weight.detach().double()
    expected = w @ torch.linalg.inv(w.T @ w + 0.1 * torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(maps[0], expected)


def test_residual_solver_in_a_skorch_net(circles):
    X, y = circles
    solver = RidgeHeadSolver(1.0, update="residual", random_state=0)
    net = _mlp_net(max_epochs=2, callbacks=[solver])
    # The head is the last Linear: it alone is recomputed.
    net.partial_fit(X, y)
    assert len(net.history[:, "solve_dur"]) == 2


@pytest.mark.parametrize("hidden", [(8,), (8, 6)])
def test_estimator_head_hidden_and_residual(circles, hidden):
    X, y = circles
    clf = FastRetrainClassifier(
        nn.Sequential(nn.Linear(2, 16), nn.ReLU()),
        head=RidgeHead(hidden=hidden, update="residual", blend=1.0),
        max_epochs=4,
        random_state=0,
    ).fit(X, y)
    linears = [m for m in clf.module_.head.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [*hidden, 2]
    assert clf.score(X, y) > 0.9


def test_auto_lambda_is_chosen_per_layer_by_cross_validation(circles):
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import PredefinedSplit

    from skfastretrain.linalg._solve import LAMBDA_GRID

    X, y = circles
    net = _mlp_net()
    layers = dense_layers(net.module_)
    top = layers[-1]
    with torch.no_grad():
        H = net.module_[:-1](torch.from_numpy(X)).double().numpy()
        proba = torch.softmax(net.module_(torch.from_numpy(X)).double(), 1).numpy()
    residual = np.eye(2)[y] - proba
    # The top layer's strength is RidgeCV's choice on the residual, with the
    # rows in folds round-robin and the grid relative to trace(G_c) / d; 400
    # rows in 4 equal folds, so mean fold MSE ranks as the pooled error does.
    Hc = H - H.mean(0)
    grid = LAMBDA_GRID * np.trace(Hc.T @ Hc) / H.shape[1]
    cv = PredefinedSplit(np.arange(len(y)) % 4)
    scoring = "neg_mean_squared_error"
    expected = RidgeCV(alphas=grid, cv=cv, scoring=scoring).fit(H, residual).alpha_

    before = _loss(net, X, y)
    _, alphas = recompute_dense(
        net, net.get_dataset(X, y), [top], alpha="auto", n_folds=4, keep_prob=1.0
    )
    assert alphas == [pytest.approx(expected, rel=1e-9)]

    net = _mlp_net()
    _, alphas = recompute_dense(
        net, net.get_dataset(X, y), dense_layers(net.module_), alpha="auto"
    )
    # One strength per layer, each chosen on that layer's own statistics.
    assert len(alphas) == 3 and all(a > 0 for a in alphas)
    assert _loss(net, X, y) < before


def test_residual_solver_records_each_layers_lambda(circles):
    X, y = circles
    clf = FastRetrainClassifier(
        nn.Sequential(nn.Linear(2, 16), nn.ReLU()),
        head=RidgeHead(hidden=(8,), update="residual"),
        ridge_lambda="auto",
        max_epochs=2,
        random_state=0,
    ).fit(X, y)
    lambdas = clf.history_[-1, "layer_lambdas"]
    assert len(lambdas) == 2
    assert clf.history_[-1, "ridge_lambda"] == lambdas[-1]
