"""The SGD step: the skorch net that runs the SGD-with-momentum epochs."""

import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import ProgressBar
from torch import nn

__all__ = [
    "batchnorm_layers",
    "has_trained_statistics",
    "hold_in_eval",
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


def has_trained_statistics(module):
    """Whether any BatchNorm layer's running statistics moved from init."""
    return any(
        bool((m.running_mean != 0).any() or (m.running_var != 1).any())
        for m in batchnorm_layers(module)
    )


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
    return str(resolved)


def setup_batchnorm(backbone, mode, momentum):
    """Resolve ``bn_mode="auto"`` and apply the momentum of the train mode.

    Returns ``"eval"`` or ``"train"``: eval when the running statistics are
    trained (pretrained weights), so SGD, the head solve and predict all see
    the same features; train when they are still at their initial values.
    """
    if mode == "auto":
        mode = "eval" if has_trained_statistics(backbone) else "train"
    if mode == "train" and momentum is not None:
        set_bn_momentum(backbone, momentum)
    return mode


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
):
    """A skorch classifier over ``module`` trained by SGD with momentum.

    ``train_collate`` (augmentation) goes to the training iterator only, so
    the head solve's feature pass and predict see the data unchanged.
    """
    loader = {"num_workers": num_workers, "pin_memory": pin_memory}
    train_loader = {**loader, "shuffle": True, "generator": generator}
    if train_collate is not None:
        train_loader["collate_fn"] = train_collate
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
