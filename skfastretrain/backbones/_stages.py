"""The backbone's stages: where a head that reads every stage taps it."""

from itertools import pairwise

import torch
from torch import nn

__all__ = [
    "CONTAINERS",
    "MAX_STAGE_FEATURES",
    "STAGE_RULES",
    "find_stages",
    "pool_stage",
    "resolve_stage",
]

#: Modules that only hold others: a traced graph (the prefix store's split)
#: calls what they hold, never them.
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def pool_stage(output):
    """A stage's output as one vector per sample, in float32.

    A feature map ``(n, c, h, w)`` is averaged over its spatial positions,
    a ``(n, c)`` output is kept as it is. The mean runs in float32 whatever
    the autocast dtype, so that bfloat16 maps are not summed in bfloat16.
    """
    if output.ndim == 4:
        return output.float().mean((2, 3))
    if output.ndim == 2:
        return output.float()
    raise ValueError(
        f"A stage's output must be a (n, c, h, w) feature map or (n, c) "
        f"features; got shape {tuple(output.shape)}."
    )


def resolve_stage(backbone, name):
    """The module whose output is stage ``name``'s output.

    An ``nn.Sequential`` returns its last child's output, which is the
    module that runs (a traced graph calls the child, never the container):
    the last child is taken, recursively.
    """
    try:
        module = backbone.get_submodule(name)
    except AttributeError as exc:
        raise ValueError(f"The backbone has no submodule {name!r}.") from exc
    while isinstance(module, nn.Sequential) and len(module):
        name = f"{name}.{len(module) - 1}"
        module = module[-1]
    if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
        raise ValueError(
            f"Stage {name!r} is a {type(module).__name__}, which is never called: "
            "name one of its modules."
        )
    return name


def _units(backbone):
    # The modules that run as a whole: not containers, and every module
    # above them up to the backbone is a container. They are the modules a
    # traced graph calls (the prefix store's split) and, in the usual
    # backbones, the stem's layers, the blocks and the head's layers.
    units, stack = [], [("", backbone)]
    while stack:
        prefix, module = stack.pop()
        for name, child in reversed(list(module.named_children())):
            path = f"{prefix}{name}"
            if isinstance(child, CONTAINERS):
                stack.append((f"{path}.", child))
            else:
                units.append((path, child))
    return units


#: The rules :func:`find_stages` knows, in the order ``"auto"`` tries them.
STAGE_RULES = ("blocks", "resolution")

#: The most stage features (the last layer's excluded) ``"auto"`` accepts:
#: the head solve decomposes a Gram matrix of the total width once per
#: fold, about 3 s at 3,088 features (Lite0's blocks) on 2 CPU cores.
MAX_STAGE_FEATURES = 2048


def _unit_outputs(backbone, x):
    outputs = []
    units = _units(backbone)
    handles = [
        module.register_forward_hook(
            lambda m, args, out, name=name: outputs.append((name, out))
        )
        for name, module in units
    ]
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(x)
    finally:
        backbone.train(was_training)
        for handle in handles:
            handle.remove()
    composite = {name for name, module in units if list(module.children())}
    # Feature maps only: a 1 x 1 map is pooled already (a squeeze-excitation
    # gate, the global pooling).
    return [
        (name, tuple(out.shape[1:]), name in composite)
        for name, out in outputs
        if isinstance(out, torch.Tensor) and out.ndim == 4 and out[0, 0].numel() > 1
    ]


def find_stages(backbone, x, rule="auto"):
    """The stages of ``backbone`` a head that reads every stage taps.

    One forward pass of ``x`` (preprocessed input, eval mode, no gradients)
    records the output of every *unit* of the backbone: a module that is not
    a container and whose parents up to the backbone all are (the stem's
    layers, the blocks and the head's layers of EfficientNet-Lite,
    torchvision's ResNets and EfficientNets, timm's models). Units whose
    output is a feature map larger than 1 x 1 are kept, in the order they
    finish; the last of them is dropped, because its pooled output is the
    backbone's output, which the head reads already.

    - ``"blocks"``: every kept unit that has submodules of its own (a
      block: an MBConv, a ResNet bottleneck).
    - ``"resolution"``: the last kept unit at each spatial size, where the
      next map has another size.
    - ``"auto"``: the first of ``"blocks"`` and ``"resolution"`` that finds
      stages adding at most :data:`MAX_STAGE_FEATURES` features, else none.

    Parameters
    ----------
    backbone : nn.Module
        The feature extractor, its classifier removed.
    x : torch.Tensor
        A preprocessed batch (two samples suffice).
    rule : {"auto", "blocks", "resolution"}, default="auto"

    Returns
    -------
    stages : tuple of str
        Names in ``backbone`` of the modules whose outputs are the stages,
        in forward order; empty for a backbone without feature maps.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skfastretrain.backbones import find_stages
    >>> backbone = nn.Sequential(
    ...     nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
    ...     nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
    ...     nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> find_stages(backbone, torch.zeros(2, 3, 16, 16), rule="resolution")
    ('1',)
    """
    if rule not in ("auto", *STAGE_RULES):
        raise ValueError(f"rule must be one of {['auto', *STAGE_RULES]}, got {rule!r}.")
    maps = _unit_outputs(backbone, x)
    found = {
        "blocks": [(name, shape) for name, shape, composite in maps[:-1] if composite],
        "resolution": [
            (name, shape)
            for (name, shape, _), (_, after, _) in pairwise(maps)
            if after[1:] != shape[1:]
        ],
    }
    if rule == "auto":
        for candidate in STAGE_RULES:
            width = sum(shape[0] for _, shape in found[candidate])
            if 0 < width <= MAX_STAGE_FEATURES:
                rule = candidate
                break
        else:
            return ()
    return tuple(name for name, _ in found[rule])
