import re

import numpy as np
import pytest
import torch
from conftest import invalid_param
from sklearn.linear_model import Ridge
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from torch import nn

from skfastretrain import DivergenceError, RidgeHeadSolver


def _net(solver, module=None, max_epochs=1):
    module = module or nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
    return NeuralNetClassifier(
        module,
        criterion=nn.CrossEntropyLoss,
        max_epochs=max_epochs,
        batch_size=16,
        train_split=None,
        verbose=0,
        callbacks=[("ridge", solver)],
    )


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 6)).astype(np.float32)
    return X, rng.integers(0, 3, 90)


def test_solution_matches_sklearn_ridge_on_the_features(data):
    X, y = data
    solver = RidgeHeadSolver(0.5, calibrate=False, init_solve=False)
    net = _net(solver)
    net.initialize()
    solver.solve(net, net.get_dataset(X, y), blend=1.0)
    with torch.no_grad():
        H = net.module_[1](net.module_[0](torch.from_numpy(X))).double().numpy()
    T = np.where(y[:, None] == np.arange(3), 1.0, -1.0)
    ref = Ridge(alpha=0.5).fit(H, T)
    head = net.module_[2]
    np.testing.assert_allclose(
        head.weight.detach().double(), ref.coef_, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        head.bias.detach().double(), ref.intercept_, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("blend", [0.25, 0.5, 1.0])
def test_blend_moves_part_way(data, blend):
    X, y = data
    solver = RidgeHeadSolver(1.0, calibrate=False)
    net = _net(solver)
    net.initialize()
    head = net.module_[2]
    w0 = head.weight.detach().clone()
    solver.solve(net, net.get_dataset(X, y), blend=1.0)
    w_star = head.weight.detach().clone()
    head.weight.data.copy_(w0)
    solver.solve(net, net.get_dataset(X, y), blend=blend)
    torch.testing.assert_close(head.weight.detach(), w0 + blend * (w_star - w0))


def test_calibration_scales_but_keeps_predictions(data):
    X, y = data
    results = {}
    for calibrate in (False, True):
        torch.manual_seed(0)
        solver = RidgeHeadSolver(1.0, calibrate=calibrate, random_state=0)
        net = _net(solver)
        net.initialize()
        solver.solve(net, net.get_dataset(X, y), blend=1.0)
        results[calibrate] = (net.predict_proba(X), solver.scale_)
    (p_raw, s_raw), (p_cal, s_cal) = results[False], results[True]
    assert s_raw == 1.0 and s_cal > 1.0
    np.testing.assert_array_equal(p_raw.argmax(1), p_cal.argmax(1))
    assert p_cal.max(1).mean() > p_raw.max(1).mean()


@pytest.mark.parametrize("solve_every", [1, 2, 3])
def test_solve_every_and_history(data, solve_every):
    net = _net(RidgeHeadSolver(solve_every=solve_every), max_epochs=4).fit(*data)
    solved = [("solve_dur" in row) for row in net.history]
    assert solved == [(e % solve_every == 0) for e in range(1, 5)]
    assert "init_solve_dur" in net.history[0]
    assert 0 <= net.history[0, "init_train_acc_before_solve"] <= 1


def test_batchnorm_recalibrated_to_population_statistics():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    module = nn.Sequential(nn.BatchNorm1d(5), nn.Linear(5, 2))
    solver = RidgeHeadSolver(1.0, init_solve=False)
    net = _net(solver, module=module)
    net.initialize()
    solver.solve(net, net.get_dataset(X, y), blend=1.0)
    bn = net.module_[0]
    np.testing.assert_allclose(bn.running_mean, X.mean(0), rtol=1e-5)
    # Unbiased per-batch variances averaged over the pass's batches.
    batch_vars = [b.var(0, ddof=1) for b in np.array_split(X, 4)]
    np.testing.assert_allclose(bn.running_var, np.mean(batch_vars, 0), rtol=1e-4)
    assert bn.momentum == 0.1  # restored


def test_head_must_be_linear(data):
    module = nn.Sequential(nn.Linear(6, 3), nn.Softmax(dim=1))
    with pytest.raises(ValueError, match=r"nn\.Linear head"):
        _net(RidgeHeadSolver(), module=module).fit(*data)


@pytest.mark.parametrize("ridge_lambda", [0.0, -1, "Auto", None, True, [1.0]])
def test_bad_lambda(data, ridge_lambda):
    message = (
        "The 'ridge_lambda' parameter of RidgeHeadSolver must be a float in the "
        f"range (0.0, inf) or a str among {{'auto'}}. Got {ridge_lambda!r} instead."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        _net(RidgeHeadSolver(ridge_lambda)).fit(*data)


@pytest.mark.parametrize("ridge_lambda", [np.float32(0.5), np.int64(2), 3])
def test_numpy_and_integer_lambdas_are_accepted(data, ridge_lambda):
    solver = RidgeHeadSolver(ridge_lambda, init_solve=False)
    net = _net(solver).fit(*data)
    assert net.history[-1, "ridge_lambda"] == ridge_lambda


def test_sgd_feature_source_needs_no_extra_pass(data):
    X, y = data
    solver = RidgeHeadSolver(1.0, feature_source="sgd", init_solve=False)
    net = _net(solver, max_epochs=2)
    modes = []
    net.initialize()
    net.module_[0].register_forward_pre_hook(lambda m, a: modes.append(m.training))
    net.partial_fit(X, y)
    # Only SGD (train-mode) forwards ran: 90 rows in batches of 16, 2 epochs.
    assert modes == [True] * 12
    assert solver.stats_.n_samples == len(X)
    assert len(net.history[:, "solve_dur"]) == 2


@pytest.mark.parametrize("dropout", [False, True])
def test_sgd_feature_source_matches_ridge_on_the_epoch_features(data, dropout):
    # With a dropout feeding the head, the statistics hold the features
    # before it: what predict sees, not their masked and rescaled copies.
    X, y = data
    solver = RidgeHeadSolver(
        0.5, feature_source="sgd", init_solve=False, calibrate=False, blend=1.0
    )
    layers = [nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)]
    if dropout:
        layers.insert(2, nn.Dropout(0.5))
    net = _net(solver, module=nn.Sequential(*layers))
    net.initialize()
    seen = []
    net.module_[1].register_forward_hook(
        lambda m, a, out: seen.append(out.detach().clone()) if m.training else None
    )
    labels = []
    net.callbacks_.append(("spy", _LabelSpy(labels)))
    net.partial_fit(X, y)
    H = torch.cat(seen).double().numpy()
    T = np.where(np.concatenate(labels)[:, None] == np.arange(3), 1.0, -1.0)
    ref = Ridge(alpha=0.5).fit(H, T)
    np.testing.assert_allclose(
        net.module_[-1].weight.detach().double(), ref.coef_, rtol=1e-4, atol=1e-5
    )


def test_training_feature_tap_keeps_a_dropout_that_does_not_feed_the_head():
    from skfastretrain.head._features import TrainingFeatureTap

    module = nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 4), nn.Linear(4, 2))
    tap = TrainingFeatureTap(module, module[2])
    torch.manual_seed(0)
    x = torch.ones(8, 4)
    module(x)
    features = tap.pop()
    with torch.no_grad():
        assert not torch.equal(features, module[1](x))
    assert tap.pop() is None
    module.eval()
    module(x)
    assert tap.pop() is None  # eval-mode forwards are not training features
    tap.remove()
    module.train()
    module(x)
    assert tap.pop() is None


class _LabelSpy(Callback):
    def __init__(self, labels):
        self.labels = labels

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training:
            self.labels.append(np.asarray(batch[1]))


def test_bad_feature_source(data):
    match = invalid_param(
        "feature_source", "RidgeHeadSolver", "'pass'", "'sgd'", got="'cache'"
    )
    with pytest.raises(ValueError, match=match):
        _net(RidgeHeadSolver(feature_source="cache")).fit(*data)


def _stage_scaled(H, widths, weight):
    # The scaling of a head on several stages, computed with numpy: the
    # earlier stages to the last layer's mean variance, times the weight.
    last = H.shape[1] - widths[-1]
    var = H.var(0)
    scale = np.ones(H.shape[1])
    scale[:last] = weight * np.sqrt(var[last:].mean() / var[:last])
    return scale


def test_stage_solve_matches_sklearn_ridge_on_scaled_features(data):
    X, y = data
    solver = RidgeHeadSolver(
        2.0, calibrate=False, init_solve=False, stage_widths=[5, 7]
    )
    net = _net(solver)
    net.initialize()
    solver.solve(net, net.get_dataset(X, y), blend=1.0)
    with torch.no_grad():
        H = net.module_[1](net.module_[0](torch.from_numpy(X))).double().numpy()
        logits = net.module_[2](torch.from_numpy(H).float()).double().numpy()
    # A fixed strength weighs every stage alike.
    assert solver.stage_weight_ == 1.0
    Hs = H * _stage_scaled(H, [5, 7], 1.0)
    T = np.where(y[:, None] == np.arange(3), 1.0, -1.0)
    ref = Ridge(alpha=2.0).fit(Hs, T)
    np.testing.assert_allclose(logits, ref.predict(Hs), rtol=1e-4, atol=1e-5)


def test_stage_weight_is_chosen_once_and_the_relative_strength_kept(data):
    X, y = data
    solver = RidgeHeadSolver("auto", stage_widths=[5, 7], stage_weights=(0.0, 1.0))
    net = _net(solver, max_epochs=2).fit(X, y)
    weights = net.history[:, "stage_weight"]
    assert weights[0] == weights[1] in (0.0, 1.0)
    assert solver.stage_weight_ == weights[0]


@pytest.mark.parametrize("sgd_updates_head", [True, False])
def test_head_held_out_of_sgd_and_restored(data, sgd_updates_head):
    X, y = data

    class Watch(Callback):
        def initialize(self):
            self.grads, self.start = [], None
            return self

        def on_epoch_begin(self, net, **kwargs):
            if self.start is None:  # after the solve before the first epoch
                self.start = net.module_[2].weight.detach().clone()

        def on_batch_end(self, net, training=False, **kwargs):
            if training:
                self.grads.append(net.module_[2].weight.requires_grad)

    # No solve after the first: whatever moves the head is SGD.
    solver = RidgeHeadSolver(
        1.0, solve_every=5, sgd_updates_head=sgd_updates_head, calibrate=False
    )
    watch = Watch()
    net = _net(solver, max_epochs=2)
    net.callbacks = [("ridge", solver), ("watch", watch)]
    net.fit(X, y)
    assert set(watch.grads) == {sgd_updates_head}
    moved = not torch.equal(net.module_[2].weight.detach(), watch.start)
    assert moved is sgd_updates_head
    # The held parameters train again after the fit.
    assert all(p.requires_grad for p in net.module_.parameters())


def test_non_finite_features_raise_with_the_rate_to_try(data):
    class Poison(Callback):
        # A probe or scheduler set the optimizer's rate; then, before the
        # solver, the epoch's backbone blew up.
        def on_train_begin(self, net, **kwargs):
            net.optimizer_.param_groups[0]["lr"] = 0.2

        def on_epoch_end(self, net, **kwargs):
            with torch.no_grad():
                net.module_[0].weight.fill_(float("nan"))

    net = _net(RidgeHeadSolver(init_solve=False))
    net.set_params(lr=0.5, callbacks=[("poison", Poison()), *net.callbacks])
    with pytest.raises(DivergenceError) as caught:
        net.fit(*data)
    # The rate that diverged is the optimizer's, not the net's lr.
    assert caught.value.lr == 0.2
    message = str(caught.value)
    assert "NaN or inf after epoch 1 (lr=0.2)" in message
    assert "for instance to 0.02;" in message
