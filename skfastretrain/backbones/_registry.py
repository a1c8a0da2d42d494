"""Backbone names and what they resolve to: torchvision, timm, EfficientNet-Lite."""

import copy
import difflib
import os
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from ._efficientnet_lite import LITE_MEAN, LITE_SPECS, LITE_STD, efficientnet_lite
from ._weights import is_weights_path, load_state_dict_file

__all__ = ["BackboneSpec", "backbone_spec", "build_backbone", "resolve_backbone"]


_IMAGENET_MEAN = (0.485, 0.456, 0.406)


_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """What a named backbone expects: normalization and default input size."""

    mean: tuple | None = None
    std: tuple | None = None
    input_size: tuple | None = None


def _torchvision_weights(name, weights):
    """The torchvision weight enum ``weights`` names for ``name``, checked."""
    try:
        return torchvision.models.get_model_weights(name).verify(weights)
    except (ValueError, KeyError) as exc:
        valid = [w.name for w in torchvision.models.get_model_weights(name)]
        hint = _did_you_mean(str(weights), ["DEFAULT", *valid])
        raise ValueError(
            f"Unknown weights {weights!r} for {name!r}.{hint} Valid: 'DEFAULT', "
            f"{', '.join(map(repr, valid))}, None or a state_dict file."
        ) from exc


def _torchvision_spec(name, weights):
    if weights is None or is_weights_path(weights):
        return BackboneSpec(_IMAGENET_MEAN, _IMAGENET_STD, None)
    preset = _torchvision_weights(name, weights).transforms()
    size = tuple(preset.crop_size) * (2 // len(preset.crop_size))
    return BackboneSpec(tuple(preset.mean), tuple(preset.std), size)


def _torchvision_model(name, weights):
    if weights is None or is_weights_path(weights):
        model = torchvision.models.get_model(name, weights=None)
        if weights is not None:
            load_state_dict_file(model, weights)
        return model
    enum = _torchvision_weights(name, weights)
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    filename = os.path.basename(enum.url)
    try:
        return torchvision.models.get_model(name, weights=enum)
    except OSError as exc:  # URLError is an OSError: no network, no cache
        raise OSError(
            f"Could not load {enum} for {name!r}: {filename!r} is not in the "
            f"torchvision cache and downloading it failed ({exc}). Copy "
            f"{filename!r} into {folder!r} (set TORCH_HOME to move the cache)."
        ) from exc


def _timm(name):
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            f"Backbone 'timm:{name}' needs timm: pip install timm."
        ) from exc
    return timm


def _check_timm(name, weights):
    timm = _timm(name)
    if name not in timm.list_models():
        raise ValueError(f"Unknown timm model {name!r}; see timm.list_models().")
    pretrained = weights is not None and not is_weights_path(weights)
    if pretrained and weights != "DEFAULT":
        raise ValueError(
            f"For timm backbones weights must be None, 'DEFAULT' or a path; "
            f"got {weights!r}."
        )
    return timm, pretrained


def _timm_spec(name, weights):
    timm, _ = _check_timm(name, weights)
    cfg = timm.models.get_pretrained_cfg(name)
    config = timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict())
    size = tuple(config["input_size"][1:]) if weights is not None else None
    return BackboneSpec(tuple(config["mean"]), tuple(config["std"]), size)


def _timm_model(name, weights):
    timm, pretrained = _check_timm(name, weights)
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except OSError as exc:  # no network and nothing in the Hugging Face cache
        raise OSError(
            f"Could not load pretrained timm weights for {name!r}: {exc}. Put them "
            "in the Hugging Face cache (HF_HOME) or pass weights=<state_dict path>."
        ) from exc
    if weights is not None and not pretrained:
        load_state_dict_file(model, weights)
    return model


def _did_you_mean(value, options):
    """`` Did you mean 'x'?`` for the options closest to ``value``, or ""."""
    by_case = {o.lower(): o for o in options}
    close = difflib.get_close_matches(value.lower(), list(by_case), n=3, cutoff=0.6)
    if not close:
        return ""
    return f" Did you mean {' or '.join(repr(by_case[c]) for c in close)}?"


def _canonical_name(name):
    """``name`` as the registry spells it, or a ValueError naming the valid ones."""
    if name.startswith("timm:"):
        return name
    valid = sorted([*LITE_SPECS, *torchvision.models.list_models()])
    if name not in valid and name.lower() in valid:
        # Every name is lower case: "EfficientNet_Lite0" means the one.
        name = name.lower()
    if name not in valid:
        raise ValueError(
            f"Unknown backbone {name!r}.{_did_you_mean(name, valid)} Valid names: "
            f"{', '.join(valid)}, and 'timm:<name>' for timm models."
        )
    return name


def _named_spec(name, weights):
    name = _canonical_name(name)
    if name.startswith("timm:"):
        return _timm_spec(name.removeprefix("timm:"), weights)
    if name in LITE_SPECS:
        size = None if weights is None else (LITE_SPECS[name].resolution,) * 2
        return BackboneSpec(LITE_MEAN, LITE_STD, size)
    return _torchvision_spec(name, weights)


def _named_backbone(name, weights):
    name = _canonical_name(name)
    if name.startswith("timm:"):
        return _timm_model(name.removeprefix("timm:"), weights)
    if name in LITE_SPECS:
        model = efficientnet_lite(name, weights=weights)
        # Stochastic depth drops whole residual branches in train mode, so the
        # features SGD sees stray far from the eval-mode ones the head is
        # solved on; on digits at 32 px it turned the training loss upward
        # (2.1 -> 2.9 over two epochs; 2.0 -> 1.2 without it).
        for block in model._blocks:
            block.drop_connect = 0.0
        return model
    return _torchvision_model(name, weights)


def backbone_spec(backbone, weights=None):
    """What the ``backbone`` parameter expects, without building it.

    The normalization and pretrained input size of a named backbone (checked
    as :func:`resolve_backbone` checks it); an empty :class:`BackboneSpec`
    for a module or a callable, which bring their own preprocessing.
    """
    if isinstance(backbone, str):
        return _named_spec(backbone, weights)
    return BackboneSpec()


def resolve_backbone(backbone, weights=None):
    """Turn the ``backbone`` parameter into a fresh module and its spec."""
    return build_backbone(backbone, weights), backbone_spec(backbone, weights)


def build_backbone(backbone, weights=None):
    """A fresh module for the ``backbone`` parameter, with its weights."""
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
        if not is_weights_path(weights):
            raise ValueError(
                "For a module backbone, weights must be 'DEFAULT' or None (its "
                f"own weights) or a path to a state_dict file; got {weights!r}."
            )
        load_state_dict_file(module, weights)
    return module
