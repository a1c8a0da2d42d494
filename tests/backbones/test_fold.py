import pytest
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from skfastretrain.backbones._fold import inference_copy


def _trained_bn(bn, seed):
    # Running statistics and affine parameters away from their initial
    # values, so that a fold that ignored one of them would show.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(bn.num_features, generator=g))
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
    return bn


def _plain_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        _trained_bn(nn.BatchNorm2d(8), 1),
        nn.ReLU6(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        _trained_bn(nn.BatchNorm2d(8), 2),
        nn.ReLU(),
    ).eval()


class _ReadsTheConv(nn.Module):
    # The convolution's output feeds its BatchNorm and, unnormalized, the
    # sum: folding the BatchNorm into it would change the sum.
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = _trained_bn(nn.BatchNorm2d(4), 3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


@pytest.fixture
def x():
    return torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(4))


def test_folds_every_pair_like_torch_fx_fuse(x):
    net = _plain_net()
    copy = inference_copy(net, x)
    # torch's own conv-BatchNorm fusion is the reference.
    reference = fuse(net)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), reference(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(copy(x), net(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    assert copy(x).is_contiguous()


def test_leaves_the_module_unchanged(x):
    net = _plain_net().train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    inference_copy(net, x)
    assert net.training
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2


def test_no_fold_where_another_layer_reads_the_conv(x):
    net = _ReadsTheConv().eval()
    copy = inference_copy(net, x)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), net(x), rtol=1e-5, atol=1e-6)
    # Checked against the module and refused: the BatchNorm stays.
    assert any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())


def test_tuple_outputs_and_flat_input():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6), nn.ReLU()).eval()

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            y = self.net(x)
            return y, 2 * y

    x = torch.randn(4, 6)
    module = Pair().eval()
    copy = inference_copy(module, x)
    with torch.no_grad():
        for a, b in zip(copy(x), module(x), strict=True):
            torch.testing.assert_close(a, b)


def test_the_check_is_relative_to_the_outputs_scale():
    # Folding rounds every element at the scale of the largest: an output
    # near zero moves by more than rtol of itself, and the copy still counts
    # as the same function (the estimator's own images have many such).
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    net = nn.Sequential(conv, _trained_bn(nn.BatchNorm2d(4), 5)).eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        out = net(x)
        # Shift one channel so that some outputs sit at 1e-7 of the largest.
        net[1].bias[0] -= out[:, 0].mean()
    copy = inference_copy(net, x, rtol=1e-4, atol=0.0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
