import copy
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import invalid_param
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from torch import nn

from skfastretrain import LayerFreezer, RandomFreezer
from skfastretrain._batchnorm import hold_in_eval, is_held_in_eval


def _module():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )


def _net(freezer, max_epochs=1, lr=0.1, module=None):
    return NeuralNetClassifier(
        _module() if module is None else module,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        lr=lr,
        max_epochs=max_epochs,
        batch_size=16,
        train_split=None,
        verbose=0,
        callbacks=[("freezer", freezer)],
    )


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 1, 8, 8)).astype(np.float32)
    return X, rng.integers(0, 3, 48)


class _Snapshot(LayerFreezer):
    """Records the frozen set and the weights at each epoch's start."""

    def on_epoch_begin(self, net, **kwargs):
        super().on_epoch_begin(net, **kwargs)
        self.log = getattr(self, "log", [])
        state = copy.deepcopy(net.module_.state_dict())
        self.log.append((list(self.frozen_), state))


@pytest.mark.parametrize("mode", ["random", "prefix"])
@pytest.mark.parametrize("freeze_prob", [0.0, 0.25, 0.5, 0.75])
def test_frozen_layers_do_not_move(data, mode, freeze_prob):
    freezer = _Snapshot(freeze_prob, mode=mode, random_state=0)
    net = _net(freezer).fit(*data)
    frozen, before = freezer.log[0]
    after = net.module_.state_dict()
    assert len(freezer.candidates_) == 4  # the head (last Linear) is excluded
    assert len(frozen) == round(freeze_prob * 4)
    assert net.history[-1, "frozen_fraction"] == len(frozen) / 4
    for name in freezer.candidates_:
        moved = not torch.equal(before[f"{name}.weight"], after[f"{name}.weight"])
        assert moved == (name not in frozen)
    assert not torch.equal(before["10.weight"], after["10.weight"])


def test_random_mode_draws_differ_and_are_seeded(data):
    runs = []
    for _ in range(2):
        freezer = _Snapshot(0.5, random_state=3)
        _net(freezer, max_epochs=6).fit(*data)
        runs.append([tuple(f) for f, _ in freezer.log])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1


def test_schedule_per_epoch(data):
    schedule = [0.0, 0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75]
    net = _net(LayerFreezer(schedule, random_state=0), max_epochs=9).fit(*data)
    # The last value repeats once the schedule runs out.
    assert net.history[:, "frozen_fraction"] == [*schedule, 0.75]


def test_prefix_freezes_forward_prefix_and_holds_batchnorm(data):
    freezer = _Snapshot(0.5, mode="prefix")
    net = _net(freezer).fit(*data)
    frozen, before = freezer.log[0]
    assert frozen == ["0", "3"]
    after = net.module_.state_dict()
    # The BatchNorm between the frozen convs is part of the fixed prefix:
    # neither its affine parameters nor its running statistics change.
    for key in ["1.weight", "1.bias", "1.running_mean", "1.running_var"]:
        assert torch.equal(before[key], after[key])


def test_prefix_builds_no_graph_for_the_prefix(data):
    freezer = LayerFreezer(0.5, mode="prefix")
    net = _net(freezer)
    net.initialize()
    X, y = data
    net.notify("on_train_begin", X=X, y=y)
    net.history.new_epoch()
    freezer.on_epoch_begin(net)
    seen = {}
    hooks = [
        net.module_[i].register_forward_hook(
            lambda m, a, out, i=i: seen.__setitem__(i, out.requires_grad)
        )
        for i in (2, 4, 6)
    ]
    net.module_.train()
    net.module_(torch.from_numpy(X[:4]))
    for h in hooks:
        h.remove()
    assert seen == {2: False, 4: False, 6: True}


def test_prefix_and_random_give_same_gradients_for_same_frozen_set(data):
    X, y = data
    grads = {}
    for mode in ("random", "prefix"):
        torch.manual_seed(0)
        module = _module()
        freezer = LayerFreezer(0.5, mode=mode, random_state=0)
        net = _net(freezer)
        net.initialize()
        net.module_.load_state_dict(module.state_dict())
        net.notify("on_train_begin", X=X, y=y)
        net.history.new_epoch()
        if mode == "random":
            freezer._rng = SimpleNamespace(
                choice=lambda n, size, replace: np.arange(size)
            )
        freezer.on_epoch_begin(net)
        # Same frozen convs; BatchNorm uses running stats in both runs.
        net.module_.eval()
        loss = nn.functional.cross_entropy(
            net.module_(torch.from_numpy(X)), torch.from_numpy(y)
        )
        loss.backward()
        grads[mode] = {
            n: p.grad.clone()
            for n, p in net.module_.named_parameters()
            if p.grad is not None
        }
    assert {"5.weight", "7.weight", "10.weight"} <= set(grads["prefix"])
    for name, g in grads["prefix"].items():
        torch.testing.assert_close(g, grads["random"][name])


def test_everything_unfrozen_after_training(data):
    net = _net(LayerFreezer(0.75, mode="prefix"), max_epochs=2).fit(*data)
    assert all(p.requires_grad for p in net.module_.parameters())
    assert not any(m._forward_pre_hooks for m in net.module_.modules())


def test_bad_mode_raises(data):
    match = invalid_param(
        "mode", "LayerFreezer", "'prefix'", "'random'", got="'middle'"
    )
    with pytest.raises(ValueError, match=match):
        _net(LayerFreezer(0.5, mode="middle")).fit(*data)


class _AtTrainBegin(Callback):
    """Records which parameters train when the fit begins, after the freezer."""

    def on_train_begin(self, net, **kwargs):
        self.trainable = [
            n for n, p in net.module_.named_parameters() if p.requires_grad
        ]
        self.bn_held = is_held_in_eval(net.module_[1])


@pytest.mark.parametrize(
    "mode, held, frozen",
    [
        (
            "prefix",
            True,
            ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"],
        ),
        ("prefix", False, []),
        ("random", True, []),
    ],
)
def test_a_held_prefix_is_frozen_from_train_begin(data, mode, held, frozen):
    # What runs before the first epoch (a head solve's pass, which fills
    # PrefixCache) sees the first epoch's prefix, where its BatchNorm is held
    # already (pretrained statistics). A BatchNorm that nothing held waits
    # for the epoch, so that the head solve's pass can re-estimate its
    # statistics; a random draw waits too.
    module = _module()
    if held:
        hold_in_eval([module[1]])
    seen = _AtTrainBegin()
    net = _net(LayerFreezer([0.5, 0.0], mode=mode, random_state=0), module=module)
    net.callbacks = [*net.callbacks, ("seen", seen)]
    net.fit(*data)
    names = [n for n, _ in net.module_.named_parameters()]
    frozen += ["3.bias"] if frozen else []
    assert seen.trainable == [n for n in names if n not in frozen]
    assert seen.bn_held is held


def test_freezing_at_train_begin_keeps_the_random_stream(data):
    # Drawing nothing, the early prefix leaves the fit's random stream alone:
    # the weights equal those of freezing only when the epoch begins.
    class EpochOnly(LayerFreezer):
        def on_train_begin(self, net, X=None, y=None, **kwargs):
            mode, self.mode = self.mode, "random"
            try:
                super().on_train_begin(net, X=X, y=y, **kwargs)
            finally:
                self.mode = mode

    weights = []
    for cls in (LayerFreezer, EpochOnly):
        torch.manual_seed(0)
        module = _module()
        hold_in_eval([module[1]])
        net = _net(cls(0.5, mode="prefix"), max_epochs=2, module=module).fit(*data)
        weights.append(net.module_.state_dict())
    assert all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())


def test_random_freezer_is_a_deprecated_alias(digits):
    X, y = digits
    with pytest.warns(FutureWarning, match="renamed LayerFreezer"):
        old = RandomFreezer(0.5, random_state=0)
    assert isinstance(old, LayerFreezer)
    assert old.get_params() == LayerFreezer(0.5, random_state=0).get_params()
    # It freezes as the new name does.
    frozen = []
    for freezer in (old, LayerFreezer(0.5, random_state=0)):
        module = nn.Sequential(
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Linear(32, 32),
            nn.ReLU(),
            nn.Linear(32, 16),
            nn.ReLU(),
            nn.Linear(16, 10),
        )
        net = NeuralNetClassifier(
            module,
            max_epochs=1,
            train_split=None,
            verbose=0,
            callbacks=[("freezer", freezer)],
        )
        with warnings.catch_warnings():
            # skorch re-creates callbacks through get_params; the alias warns.
            warnings.simplefilter("ignore", FutureWarning)
            net.fit(X[:64], y[:64])
        frozen.append(freezer.frozen_)
    assert frozen[0] == frozen[1]
