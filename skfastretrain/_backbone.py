"""Backbone resolution and head attachment: the backbone step of the path."""

import copy
import os
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from ._data import Preprocess

__all__ = ["FastRetrainModule", "build_module", "find_head", "resolve_backbone"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class BackboneSpec:
    """What a named backbone expects: normalization and default input size."""

    mean: tuple | None = None
    std: tuple | None = None
    input_size: tuple | None = None


def _leaves(module):
    return [(n, m) for n, m in module.named_modules() if not list(m.children())]


def find_head(module, name=None):
    """The classifier head: ``name``, or the last leaf if it is an nn.Linear."""
    if name is not None:
        return module.get_submodule(name)
    leaves = _leaves(module)
    if leaves and isinstance(leaves[-1][1], nn.Linear):
        return leaves[-1][1]
    return None


def _is_weights_path(weights):
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        os.sep in weights or weights.endswith((".pt", ".pth"))
    )


def load_state_dict_file(module, path):
    """Load a state_dict file into ``module`` without unpickling code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weight file not found: {path!r}.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"Weights in {path!r} do not fit the backbone: {exc}") from exc
    return module


def _torchvision_model(name, weights):
    if weights is None or _is_weights_path(weights):
        model = torchvision.models.get_model(name, weights=None)
        if weights is not None:
            load_state_dict_file(model, weights)
        return model, BackboneSpec(_IMAGENET_MEAN, _IMAGENET_STD, None)
    try:
        enum = torchvision.models.get_model_weights(name).verify(weights)
    except (ValueError, KeyError) as exc:
        valid = [w.name for w in torchvision.models.get_model_weights(name)]
        raise ValueError(
            f"Unknown weights {weights!r} for {name!r}; valid: 'DEFAULT', {valid}."
        ) from exc
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    filename = os.path.basename(enum.url)
    try:
        model = torchvision.models.get_model(name, weights=enum)
    except OSError as exc:  # URLError is an OSError: no network, no cache
        raise OSError(
            f"Could not load {enum} for {name!r}: {filename!r} is not in the "
            f"torchvision cache and downloading it failed ({exc}). Copy "
            f"{filename!r} into {folder!r} (set TORCH_HOME to move the cache)."
        ) from exc
    preset = enum.transforms()
    size = tuple(preset.crop_size) * (2 // len(preset.crop_size))
    return model, BackboneSpec(tuple(preset.mean), tuple(preset.std), size)


def _timm_model(name, weights):
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            f"Backbone 'timm:{name}' needs timm: pip install timm."
        ) from exc
    if name not in timm.list_models():
        raise ValueError(f"Unknown timm model {name!r}; see timm.list_models().")
    pretrained = weights is not None and not _is_weights_path(weights)
    if pretrained and weights != "DEFAULT":
        raise ValueError(
            f"For timm backbones weights must be None, 'DEFAULT' or a path; "
            f"got {weights!r}."
        )
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except OSError as exc:  # no network and nothing in the Hugging Face cache
        raise OSError(
            f"Could not load pretrained timm weights for {name!r}: {exc}. Put them "
            "in the Hugging Face cache (HF_HOME) or pass weights=<state_dict path>."
        ) from exc
    if weights is not None and not pretrained:
        load_state_dict_file(model, weights)
    config = timm.data.resolve_data_config({}, model=model)
    size = tuple(config["input_size"][1:]) if weights is not None else None
    return model, BackboneSpec(tuple(config["mean"]), tuple(config["std"]), size)


def _named_backbone(name, weights):
    if name.startswith("timm:"):
        return _timm_model(name.removeprefix("timm:"), weights)
    if name.startswith("efficientnet_lite"):
        from ._efficientnet_lite import (
            LITE_MEAN,
            LITE_SPECS,
            LITE_STD,
            efficientnet_lite,
        )

        model = efficientnet_lite(name, weights=weights)
        # Stochastic depth drops whole residual branches in train mode, so the
        # features SGD sees stray far from the eval-mode ones the head is
        # solved on; on digits at 32 px it turned the training loss upward
        # (2.1 -> 2.9 over two epochs; 2.0 -> 1.2 without it).
        for block in model._blocks:
            block.drop_connect = 0.0
        size = None if weights is None else (LITE_SPECS[name].resolution,) * 2
        return model, BackboneSpec(LITE_MEAN, LITE_STD, size)
    if name in torchvision.models.list_models():
        return _torchvision_model(name, weights)
    from ._efficientnet_lite import LITE_SPECS

    valid = sorted([*LITE_SPECS, *torchvision.models.list_models()])
    raise ValueError(
        f"Unknown backbone {name!r}. Valid names: {', '.join(valid)}, and "
        "'timm:<name>' for timm models."
    )


def resolve_backbone(backbone, weights=None):
    """Turn the ``backbone`` parameter into a fresh module and its spec."""
    if isinstance(backbone, str):
        return _named_backbone(backbone, weights)
    if isinstance(backbone, nn.Module):
        module = copy.deepcopy(backbone)
    elif callable(backbone):
        module = backbone()
        if not isinstance(module, nn.Module):
            raise TypeError(
                "A callable backbone must return a torch.nn.Module, got "
                f"{type(module).__name__}."
            )
    else:
        raise TypeError(
            "backbone must be a model name, a torch.nn.Module or a callable "
            f"returning one; got {type(backbone).__name__}."
        )
    # "DEFAULT" (the estimator's default) keeps a module's own weights, as
    # None does: a module has no pretrained weights other than its own.
    if weights is not None and weights != "DEFAULT":
        if not _is_weights_path(weights):
            raise ValueError(
                "For a module backbone, weights must be 'DEFAULT' or None (its "
                f"own weights) or a path to a state_dict file; got {weights!r}."
            )
        load_state_dict_file(module, weights)
    return module, BackboneSpec()


def first_conv(module):
    """The first registered weight layer if it is a convolution, else None."""
    for _, m in _leaves(module):
        if isinstance(m, (*_CONV_TYPES, nn.Linear)):
            return m if isinstance(m, _CONV_TYPES) else None
    return None


class FastRetrainModule(nn.Module):
    """Preprocessing, a feature extractor and a linear head, in forward order.

    Parameters
    ----------
    preprocess : nn.Module
    backbone : nn.Module
        Maps preprocessed input to features (flattened after it).
    head : nn.Linear
        The classifier, solved in closed form by the ridge step.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` runs the backbone under bf16 autocast on
        channels-last images; features and head stay float32.
    """

    precision = "float32"  # modules pickled before the option existed

    def __init__(self, preprocess, backbone, head, *, precision="float32"):
        super().__init__()
        self.preprocess = preprocess
        self.backbone = backbone
        self.head = head
        self.precision = precision

    def features(self, x):
        # A PrefixCache installed for the fit runs only the layers after the
        # frozen prefix.
        cache = getattr(self, "_prefix_cache", None)
        if cache is not None:
            h = cache.backbone_output(self, x)
            if h is not None:
                return torch.flatten(h, 1)
        x = self.preprocess(x)
        if self.precision != "bfloat16":
            return torch.flatten(self.backbone(x), 1)
        if x.ndim == 4:
            # channels-last alone slowed the CPU step; with bf16 it paid
            # (benchmarks/results/levers.md).
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            h = self.backbone(x)
        return torch.flatten(h, 1).float()

    def forward(self, x):
        return self.head(self.features(x))

    def __getstate__(self):
        # The store of a fit in progress is not part of the model.
        state = super().__getstate__()
        state.pop("_prefix_cache", None)
        return state


def make_head(width, n_classes, hidden=()):
    """A linear head, or an MLP head with ReLU between its dense layers."""
    if not hidden:
        return nn.Linear(width, n_classes)
    layers, inputs = [], width
    for units in hidden:
        layers += [nn.Linear(inputs, units), nn.ReLU()]
        inputs = units
    return nn.Sequential(*layers, nn.Linear(inputs, n_classes))


def reinit_last_layers(backbone, n_layers):
    """Re-initialize the last ``n_layers`` conv and linear layers in place.

    TASCNet's first stage replaces the deepest layers, the most task-specific
    ones, with freshly trained ones. Every parametrized layer from the first
    re-initialized one on restarts, BatchNorm statistics included.
    """
    if not n_layers:
        return backbone
    layers = [
        m for _, m in _leaves(backbone) if isinstance(m, (*_CONV_TYPES, nn.Linear))
    ]
    if n_layers > len(layers):
        raise ValueError(
            f"reinit_layers={n_layers} but the backbone has only {len(layers)} "
            "conv and linear layers."
        )
    first = layers[-n_layers]
    reset = False
    for _, m in _leaves(backbone):
        reset = reset or m is first
        # BatchNorm after the first re-initialized layer restarts too: its
        # pretrained statistics describe activations that no longer exist.
        if reset and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return backbone


def build_module(
    backbone, spec, X, n_classes, *, input_size=None, hidden=(), reinit_layers=0
):
    """Strip the backbone's classifier and attach a fresh ``n_classes`` head.

    ``X`` (a few samples in model layout) drives one dry forward pass that
    finds the head's input width and checks that the backbone takes the data.
    """
    head = find_head(backbone)
    if head is not None:
        path = next(n for n, m in backbone.named_modules() if m is head)
        parent, _, child = path.rpartition(".")
        setattr(backbone.get_submodule(parent), child, nn.Identity())
    reinit_last_layers(backbone, reinit_layers)
    conv = first_conv(backbone)
    size = input_size if input_size is not None else spec.input_size
    preprocess = Preprocess(
        channels=None if conv is None else conv.in_channels,
        size=size,
        mean=spec.mean if X.ndim == 4 else None,
        std=spec.std if X.ndim == 4 else None,
    )
    if conv is not None and X.shape[1] not in (1, conv.in_channels):
        raise ValueError(
            f"The backbone takes {conv.in_channels}-channel images; X has "
            f"{X.shape[1]} channels."
        )
    model = FastRetrainModule(preprocess, backbone, nn.Identity())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            width = model.features(torch.as_tensor(X[:2])).shape[1]
    except RuntimeError as exc:
        raise ValueError(
            f"The backbone failed on input of shape {tuple(X.shape[1:])} "
            f"(after preprocessing): {exc}"
        ) from exc
    model.train(was_training)
    model.head = make_head(width, n_classes, hidden)
    return model
