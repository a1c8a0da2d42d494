"""The SGD step: the skorch net that runs the SGD-with-momentum epochs."""

import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import ProgressBar
from torch import nn

from ._divergence import DivergenceGuard

__all__ = [
    "batchnorm_layers",
    "hold_in_eval",
    "is_held_in_eval",
    "make_net",
    "resolve_device",
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


def resolve_device(device):
    """``"auto"`` is cuda when available, else cpu; anything else is checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"Invalid device {device!r}: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available.")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r}: there are {torch.cuda.device_count()} CUDA devices."
        )
    return str(resolved)


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


def make_net(
    module,
    *,
    callbacks,
    lr,
    momentum,
    weight_decay,
    batch_size,
    max_epochs,
    device,
    generator,
    verbose,
    num_workers=0,
    pin_memory=False,
    train_collate=None,
    criterion=nn.CrossEntropyLoss,
    train_sampler=None,
):
    """A skorch classifier over ``module`` trained by SGD with momentum.

    ``train_collate`` (augmentation) goes to the training iterator only, so
    the head solve's feature pass and predict see the data unchanged.
    ``train_sampler`` (a rank's shard) replaces the training shuffle.
    """
    loader = {"num_workers": num_workers, "pin_memory": pin_memory}
    if train_sampler is None:
        train_loader = {**loader, "shuffle": True, "generator": generator}
    else:
        train_loader = {**loader, "sampler": train_sampler}
    if train_collate is not None:
        train_loader["collate_fn"] = train_collate
    callbacks = [("divergence_guard", DivergenceGuard()), *callbacks]
    if verbose:
        # A tqdm bar over each epoch's batches; skorch's table prints the
        # per-epoch records. verbose=0 prints nothing (quiet in searches).
        callbacks = [*callbacks, ("progress_bar", ProgressBar())]
    return NeuralNetClassifier(
        module,
        criterion=criterion,
        optimizer=torch.optim.SGD,
        lr=lr,
        optimizer__momentum=momentum,
        optimizer__weight_decay=weight_decay,
        batch_size=batch_size,
        max_epochs=max_epochs,
        train_split=None,
        callbacks=callbacks,
        device=device,
        verbose=verbose,
        **{f"iterator_train__{k}": v for k, v in train_loader.items()},
        **{f"iterator_valid__{k}": v for k, v in loader.items()},
    )
