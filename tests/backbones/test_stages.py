import numpy as np
import pytest
import torch
import torchvision
from conftest import make_tiny_cnn
from torch import nn

from skfastretrain import FastRetrainModule, efficientnet_lite
from skfastretrain.backbones import _stages, find_stages
from skfastretrain.backbones._module import build_module
from skfastretrain.backbones._registry import backbone_spec
from skfastretrain.backbones._stages import pool_stage, resolve_stage


class Block(nn.Module):
    """A residual block: a unit with submodules of its own."""

    def __init__(self, channels, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        out = self.act(self.conv(x))
        return out if out.shape == x.shape else out + x[..., ::2, ::2]


def blocky():
    # stem (8 x 8), two blocks at 8 x 8, one down to 4 x 4, one at 4 x 4,
    # pooled: the last map is block 3's.
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(Block(4), Block(4)),
        nn.Sequential(Block(4, stride=2), Block(4)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


X8 = torch.zeros(2, 1, 8, 8)


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("blocks", ("2.0", "2.1", "3.0")),
        ("resolution", ("2.1",)),
        ("auto", ("2.0", "2.1", "3.0")),
    ],
)
def test_rules_on_a_small_backbone(rule, expected):
    assert find_stages(blocky(), X8, rule=rule) == expected


def test_auto_takes_the_resolution_rule_without_blocks():
    # Layers only, no block: the last map at 8 x 8 is the second ReLU's.
    assert find_stages(make_tiny_cnn(), X8) == ("5",)
    assert find_stages(make_tiny_cnn(), X8, rule="blocks") == ()


def test_auto_takes_the_resolution_rule_past_the_width_limit(monkeypatch):
    monkeypatch.setattr(_stages, "MAX_STAGE_FEATURES", 8)
    assert find_stages(blocky(), X8) == ("2.1",)
    monkeypatch.setattr(_stages, "MAX_STAGE_FEATURES", 3)
    assert find_stages(blocky(), X8) == ()


def test_lite0_stages():
    backbone = efficientnet_lite("efficientnet_lite0", weights=None)
    backbone._fc = nn.Identity()
    x = torch.zeros(2, 3, 64, 64)
    assert find_stages(backbone, x, rule="blocks") == tuple(
        f"_blocks.{i}" for i in range(16)
    )
    assert find_stages(backbone, x, rule="resolution") == (
        "_blocks.0",
        "_blocks.2",
        "_blocks.4",
        "_blocks.10",
    )


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("blocks", ("layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0")),
        ("resolution", ("relu", "layer1.1", "layer2.1", "layer3.1")),
    ],
)
def test_torchvision_resnet_stages(rule, expected):
    backbone = torchvision.models.resnet18()
    backbone.fc = nn.Identity()
    stages = find_stages(backbone, torch.zeros(2, 3, 64, 64), rule=rule)
    assert stages[: len(expected)] == expected
    # The last block's pooled output is the backbone's output.
    assert "layer4.1" not in stages


def test_unknown_rule():
    with pytest.raises(ValueError, match="rule must be one of"):
        find_stages(blocky(), X8, rule="every")


def test_pool_stage_averages_maps_and_keeps_vectors():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
    pooled = pool_stage(torch.from_numpy(maps))
    np.testing.assert_allclose(pooled.numpy(), maps.mean((2, 3)), rtol=1e-5, atol=1e-6)
    vectors = torch.ones(3, 4, dtype=torch.bfloat16)
    assert pool_stage(vectors).dtype == torch.float32
    with pytest.raises(ValueError, match=r"got shape \(3, 4, 5\)"):
        pool_stage(torch.ones(3, 4, 5))


def test_resolve_stage():
    backbone = blocky()
    # A Sequential's output is its last module's.
    assert resolve_stage(backbone, "2") == "2.1"
    assert resolve_stage(backbone, "2.0.conv") == "2.0.conv"
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        resolve_stage(backbone, "nope")
    backbone.extra = nn.ModuleList([nn.ReLU()])
    with pytest.raises(ValueError, match="never called"):
        resolve_stage(backbone, "extra")


def _hooked_reference(backbone, x, names):
    # The head's input computed independently: forward hooks on the named
    # modules, numpy means over space.
    outputs = {}
    handles = [
        backbone.get_submodule(n).register_forward_hook(
            lambda m, a, out, n=n: outputs.__setitem__(n, out.detach().numpy())
        )
        for n in names
    ]
    with torch.no_grad():
        last = backbone(x).numpy()
    for h in handles:
        h.remove()
    return np.concatenate([*(outputs[n].mean((2, 3)) for n in names), last], 1)


def test_module_features_read_every_stage():
    backbone = blocky().eval()
    module = FastRetrainModule(nn.Identity(), backbone, nn.Identity(), stages=["2"])
    assert module.stages == ("2.1",)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = module.features(x).numpy()
    np.testing.assert_allclose(
        features, _hooked_reference(backbone, x, ["2.1"]), rtol=1e-6
    )


@pytest.mark.parametrize("stage_gradients", [False, True])
def test_stage_gradients(stage_gradients):
    backbone = blocky()
    module = FastRetrainModule(
        nn.Identity(),
        backbone,
        nn.Identity(),
        stages=["2.0"],
        stage_gradients=stage_gradients,
    )
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    # Only the stage's columns of the head's input reach the loss.
    module.features(x)[:, :4].sum().backward()
    grad = backbone[2][0].conv.weight.grad
    assert (grad is not None and bool(grad.abs().sum() > 0)) is stage_gradients


@pytest.mark.parametrize("stages", [None, "auto", ["2.0", "3.0"]])
def test_build_module_widths(stages):
    spec = backbone_spec(make_tiny_cnn)
    X = np.zeros((2, 1, 8, 8), dtype=np.float32)
    model = build_module(blocky(), spec, X, 3, input_size=(8, 8), stages=stages)
    expected = {None: (4,), "auto": (4, 4, 4, 4), "2.0": (4, 4, 4)}
    key = stages if not isinstance(stages, list) else "2.0"
    assert model.stage_widths == expected[key]
    assert model.head.in_features == sum(expected[key])
