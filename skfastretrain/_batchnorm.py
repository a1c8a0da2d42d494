"""BatchNorm during the SGD epochs: which layers run on their running statistics."""

from torch import nn

__all__ = [
    "batchnorm_layers",
    "hold_in_eval",
    "is_held_in_eval",
    "set_bn_momentum",
    "setup_batchnorm",
]


def batchnorm_layers(module):
    """All BatchNorm layers of ``module`` that track running statistics."""
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def _eval_pre_hook(module, args):
    # skorch switches the whole module to train mode before every step, so a
    # held layer is put back in eval mode right before it runs.
    module.training = False


def hold_in_eval(modules):
    """Keep ``modules`` in eval mode whatever train() says; returns handles."""
    return [m.register_forward_pre_hook(_eval_pre_hook) for m in modules]


def _trained(bn):
    return bool((bn.running_mean != 0).any() or (bn.running_var != 1).any())


def setup_batchnorm(backbone, mode, momentum):
    """Choose which BatchNorm layers SGD runs in eval mode.

    Returns the layers to hold in eval mode: all of them for ``"eval"``, none
    for ``"train"``, and for ``"auto"`` those whose running statistics are
    trained (pretrained), so that SGD, the head solve and predict see the same
    features there, while layers at their initial statistics (a backbone
    without weights, or re-initialized layers) train on batch statistics.
    The others get ``momentum``.
    """
    layers = batchnorm_layers(backbone)
    if mode == "auto":
        held = [m for m in layers if _trained(m)]
    else:
        held = layers if mode == "eval" else []
    if momentum is not None:
        for m in layers:
            if not any(m is h for h in held):
                m.momentum = momentum
    return held


def is_held_in_eval(module):
    """Whether :func:`hold_in_eval` keeps ``module`` in eval mode."""
    return _eval_pre_hook in module._forward_pre_hooks.values()


def set_bn_momentum(module, momentum):
    """Set the running-statistics momentum of every BatchNorm layer.

    Running statistics that lag behind the weights make the eval-mode features
    (used by the head solve and by predict) disagree with the train-mode ones;
    a faster momentum keeps them in step during short fine-tuning runs.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
