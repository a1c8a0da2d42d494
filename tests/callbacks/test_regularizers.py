import copy
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit
from torch import nn
from torch.nn import functional as F

from skfastretrain import FastRetrainModule, LayerFreezer, RidgeHeadSolver
from skfastretrain._settings import regularizer_components
from skfastretrain.backbones._efficientnet_lite import efficientnet_lite
from skfastretrain.callbacks._regularizers import (
    L2SP,
    DeltaLoss,
    DeltaRegularizer,
    default_layers,
)

LAYERS = ["act1", "act2"]


def _conv():
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 4, 3, padding=1),
            act1=nn.ReLU(),
            conv2=nn.Conv2d(4, 6, 3, padding=1),
            act2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(2),
            flat=nn.Flatten(),
            head=nn.Linear(24, 10),
        )
    )


class _Residual(nn.Module):
    """A skip connection around ``inner``: a tiled batch cannot pass it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.inner = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.inner(x)
        return self.head(self.pool(x).flatten(1))


class _Spy(Callback):
    """Snapshots the source network at train begin and counts its forwards."""

    def __init__(self, reg):
        self.reg = reg

    def initialize(self):
        self.calls, self.state = 0, None
        return self

    def on_train_begin(self, net, **kwargs):
        self.state = copy.deepcopy(self.reg.source_.state_dict())
        self.reg.source_.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1


@pytest.fixture
def images(digits):
    X, y = digits
    return X[:256].reshape(-1, 1, 8, 8), y[:256].astype(np.int64)


def _net(callbacks, criterion=nn.CrossEntropyLoss, module=None, **kwargs):
    params = {"max_epochs": 3, "train_split": None, **kwargs}
    return NeuralNetClassifier(
        _conv() if module is None else module,
        criterion=criterion,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        lr=0.2,
        batch_size=32,
        verbose=0,
        callbacks=callbacks,
        **params,
    )


def _state(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_l2sp_keeps_backbone_closer_to_start(images):
    X, y = images
    distances = []
    for callbacks in ([], [L2SP(alpha=1.0, beta=0.0)]):
        torch.manual_seed(0)
        net = _net(callbacks)
        start = _state(net.module)
        net.fit(X, y)
        distances.append(
            sum(
                float((p.detach() - start[n]).pow(2).sum())
                for n, p in net.module_.named_parameters()
                if not n.startswith("head")
            )
        )
    assert distances[1] < 0.5 * distances[0]


@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_l2sp_gradient_is_exact(alpha, beta):
    module = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    net = _net([], module=module).initialize()
    start = _state(module)
    reg = L2SP(alpha, beta).initialize()
    reg.on_train_begin(net)
    first, _, head = module
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    first.bias.grad = None  # as for a frozen parameter
    reg.on_grad_computed(net, named_parameters=module.named_parameters())
    assert set(reg.w0_) == {"0.weight", "0.bias"}
    torch.testing.assert_close(reg.w0_["0.weight"], start["0.weight"])
    expected = alpha * (first.weight - start["0.weight"]).detach()
    torch.testing.assert_close(first.weight.grad, expected)
    assert first.bias.grad is None
    torch.testing.assert_close(head.weight.grad, beta * head.weight.detach())
    assert not head.bias.grad.any()
    drift = sum(
        float((p.detach() - start[f"0.{n}"]).pow(2).sum())
        for n, p in module[0].named_parameters()
    )
    penalty = 0.5 * (alpha * drift + beta * float(head.weight.detach().pow(2).sum()))
    assert reg._epoch_penalty() == pytest.approx(penalty, rel=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_l2sp_frozen_params_and_history(images, alpha):
    X, y = images
    reg = L2SP(alpha, beta=0.1)
    net = _net([("l2sp", reg)]).initialize()
    net.module_.conv1.requires_grad_(False)
    frozen = _state(net.module_.conv1)
    start = _state(net.module_)
    net.fit(X, y)  # fit re-initializes nothing: the module is an instance
    for n, p in net.module_.conv1.named_parameters():
        assert torch.equal(p, frozen[n])
    penalties = net.history[:, "reg_penalty"]
    assert len(penalties) == 3
    drift = sum(
        float((p.detach() - start[n]).pow(2).sum())
        for n, p in net.module_.named_parameters()
        if not n.startswith("head")
    )
    head = float(net.module_.head.weight.detach().pow(2).sum())
    expected = 0.5 * (alpha * drift + 0.1 * head)
    assert penalties[-1] == pytest.approx(expected, rel=1e-5)
    w0 = {n: w.clone() for n, w in reg.w0_.items()}
    net.partial_fit(X, y)  # continues toward the same starting weights
    assert all(torch.equal(reg.w0_[n], w) for n, w in w0.items())


def test_delta_source_is_frozen_and_eval_forwards_skip_it(images):
    X, y = images
    reg = DeltaRegularizer(alpha=1.0, layers=LAYERS)
    spy = _Spy(reg)
    net = _net(
        [("delta", reg), ("spy", spy)],
        criterion=DeltaLoss(),
        max_epochs=2,
        train_split=ValidSplit(4),
    )
    start = copy.deepcopy(net.module.state_dict())
    foreign = net.module.act1.register_forward_hook(lambda m, a, out: None)
    net.fit(X, y)
    source = reg.source_
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in source)
    foreign.remove()
    assert not source.training
    assert not any(p.requires_grad for p in source.parameters())
    for key, value in source.state_dict().items():
        assert torch.equal(value, spy.state[key])
        assert torch.equal(value, start[key])
    assert not torch.equal(net.module_.conv1.weight, source.conv1.weight)
    n_train = sum(
        sum("train_loss" in batch for batch in epoch["batches"])
        for epoch in net.history
    )
    assert spy.calls == n_train  # validation forwards did not run the source
    net.predict(X)
    assert spy.calls == n_train
    assert net.criterion_.regularizer is None
    assert not net.module_._forward_pre_hooks
    assert not net.module_.act1._forward_hooks
    assert len(net.history[:, "reg_penalty"]) == 2
    clone = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(clone.predict(X[:8]), net.predict(X[:8]))


@pytest.mark.parametrize("weighted", [True, False])
def test_attention_weights(images, weighted):
    X, y = images
    reg = DeltaRegularizer(layers=LAYERS, weighted=weighted, attention_batches=2)
    callbacks = [("ridge", RidgeHeadSolver(blend=1.0)), ("delta", reg)]
    _net(callbacks, criterion=DeltaLoss(), max_epochs=1).fit(X, y)
    assert list(reg.attention_) == LAYERS
    for name, n_channels in zip(LAYERS, (4, 6), strict=True):
        w = reg.attention_[name]
        assert w.shape == (n_channels,)
        assert w.sum() == pytest.approx(1.0)
        if weighted:
            assert np.ptp(w) > 1e-3
        else:
            np.testing.assert_array_equal(w, np.full(n_channels, 1.0 / n_channels))


def _naive_attention(module, X, y, name, n_channels, temperature=5.0):
    layer = module.get_submodule(name)
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    rise = []
    with torch.no_grad():
        base = F.cross_entropy(module.eval()(X), y).item()
        for c in range(n_channels):

            def zero(m, args, out, c=c):
                out = out.clone()
                out[:, c] = 0
                return out

            handle = layer.register_forward_hook(zero)
            rise.append(F.cross_entropy(module(X), y).item() - base)
            handle.remove()
    z = (np.array(rise) - np.mean(rise)) / np.std(rise)
    w = np.exp(z / temperature)
    return w / w.sum()


@pytest.mark.parametrize(
    "make, layers", [(_conv, LAYERS), (_Residual, ["inner"])], ids=["tiled", "skip"]
)
def test_attention_matches_channel_by_channel(images, make, layers):
    X, y = images[0][:64], images[1][:64]
    module = make()
    calls = []
    module.register_forward_pre_hook(lambda m, a: calls.append(1))
    reg = DeltaRegularizer(layers=layers, attention_batches=2)  # all 64 rows
    net = _net([("delta", reg)], criterion=DeltaLoss(), module=module).initialize()
    reg.on_train_begin(net, X=X, y=y)
    reg.on_train_end(net)
    n_channels = sum(len(w) for w in reg.attention_.values())
    if make is _conv:  # tiled: one forward per batch for all channels of a layer
        assert len(calls) < 2 * (1 + n_channels)
    for name in layers:
        w = reg.attention_[name]
        expected = _naive_attention(copy.deepcopy(module), X, y, name, len(w))
        np.testing.assert_allclose(reg.attention_[name], expected, rtol=1e-4)


def test_delta_loss_matches_hand_computation(images):
    X, y = images
    alpha, beta = 0.7, 0.3
    reg = DeltaRegularizer(alpha, beta, layers=LAYERS, attention_batches=1)
    net = _net([("delta", reg)], criterion=DeltaLoss()).initialize()
    source = copy.deepcopy(net.module_).eval()
    reg.on_train_begin(net, X=X, y=y)
    target = net.module_
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    Xb, yb = torch.as_tensor(X[:32]), torch.as_tensor(y[:32])
    target.train()
    loss = net.get_loss(net.infer(Xb), yb, X=Xb, training=True)
    target.eval()  # an eval forward, e.g. validation: the base loss only
    eval_loss = net.get_loss(net.infer(Xb), yb)
    reg.on_train_end(net)

    maps = {}
    for tag, model in (("t", target), ("s", source)):
        for name in LAYERS:
            model.get_submodule(name).register_forward_hook(
                lambda m, a, out, key=(tag, name): maps.__setitem__(key, out)
            )
    with torch.no_grad():
        logits = target(Xb)
        source(Xb)
        penalty = 0.0
        for name in LAYERS:
            diff = maps["t", name] - maps["s", name]
            h, w = diff.shape[2:]
            per_sample = diff.pow(2).sum(dim=(2, 3)) / (h * w)  # (N, C)
            weights = torch.as_tensor(reg.attention_[name], dtype=diff.dtype)
            penalty += (per_sample @ weights).mean()
        expected = F.cross_entropy(logits, yb) + alpha * penalty
        expected += beta / 2 * target.head.weight.pow(2).sum()
    assert float(penalty) > 0
    torch.testing.assert_close(loss.detach(), expected)
    assert loss.requires_grad
    torch.testing.assert_close(eval_loss, F.cross_entropy(logits, yb))


@pytest.mark.parametrize("layers", [None, ["conv9"]])
def test_missing_layers_raise(images, layers):
    net = _net([("delta", DeltaRegularizer(layers=layers))], criterion=DeltaLoss())
    found = "no default layers" if layers is None else r"no submodules \['conv9'\]"
    match = rf"DeltaRegularizer found {found} .*name the layers with layers=\["
    with pytest.raises(ValueError, match=match):
        net.fit(*images)


def test_delta_needs_delta_loss(images):
    net = _net([("delta", DeltaRegularizer(layers=LAYERS))])
    with pytest.raises(TypeError, match="DeltaLoss"):
        net.fit(*images)


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_default_layers(name, wrap):
    if name == "resnet18":
        backbone = torchvision.models.resnet18()
        expected = [f"layer{i}" for i in range(1, 5)]
    else:
        backbone = efficientnet_lite(name)
        expected = [f"_blocks.{i}" for i in (0, 2, 4, 10, 15)]
    module = FastRetrainModule(nn.Identity(), backbone, nn.Identity())
    prefix = "backbone." if wrap else ""
    assert default_layers(module if wrap else backbone) == [
        prefix + n for n in expected
    ]
    if name != "resnet18":  # the ends are where the resolution changes next
        sizes = []
        for block in backbone._blocks:
            block.register_forward_hook(lambda m, a, out: sizes.append(out.shape[-1]))
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, 3, 64, 64))
        ends = [i for i in range(len(sizes) - 1) if sizes[i + 1] < sizes[i]]
        assert [*ends, len(sizes) - 1] == [0, 2, 4, 10, 15]


@pytest.mark.parametrize("name", [None, "l2sp", "delta", "feature_map"])
def test_regularizer_components_in_plain_skorch(images, name):
    callbacks, criterion = regularizer_components(name, head="head")
    assert [n for n, _ in callbacks] == ([] if name is None else ["regularizer"])
    assert isinstance(criterion, DeltaLoss) == (name in ("delta", "feature_map"))
    if name is not None:
        # A name is its class at the default strengths; the strengths and
        # layers are the instance's parameters.
        reg = callbacks[0][1]
        assert reg.head == "head"
        reg.set_params(alpha=0.1, beta=0.01)
    if name in ("delta", "feature_map"):
        assert callbacks[0][1].weighted == (name == "delta")
        callbacks[0][1].set_params(layers=LAYERS)
    own = [
        ("freezer", LayerFreezer(0.5, random_state=0)),
        ("ridge", RidgeHeadSolver()),
    ]
    net = _net(own + callbacks, criterion=criterion, max_epochs=1).fit(*images)
    assert ("reg_penalty" in net.history[-1]) == (name is not None)
    assert np.isfinite(net.history[-1, "train_loss"])


def test_regularizer_components_rejects_unknown_name():
    with pytest.raises(ValueError, match="Unknown regularizer"):
        regularizer_components("l1")
