"""Training: the skorch net of a fit, run over the built model and pipeline."""

import torch

from ._batchnorm import hold_in_eval
from ._data import AugmentCollate, make_augment
from ._net import make_net
from ._resume import fit_recovering
from .callbacks._progress import table_columns

__all__ = ["run_net", "train"]


def run_net(config, model, pipeline):
    """The :class:`FastRetrainNet` of a run, not yet initialized.

    ``config`` is the :class:`RunConfig`, ``model`` the :class:`BuiltModel`
    and ``pipeline`` the :class:`FitPipeline` of the run.
    """
    augment = make_augment(config.sgd.augment, model.input_shape[-2:])
    return make_net(
        model.module,
        callbacks=pipeline.callbacks,
        criterion=pipeline.criterion,
        regression=config.regression,
        lr=config.lr,
        momentum=config.sgd.momentum,
        weight_decay=config.sgd.weight_decay,
        batch_size=config.batch_size,
        max_epochs=config.max_epochs,
        device=config.device,
        generator=torch.Generator().manual_seed(config.seed),
        verbose=config.verbose,
        num_workers=config.num_workers,
        # Pinned host memory speeds up copies to a GPU and costs nothing else.
        pin_memory=config.device.startswith("cuda"),
        train_collate=None if augment is None else AugmentCollate(augment),
        train_sampler=pipeline.train_sampler,
        ddp_device=config.device if config.distributed else None,
        train_split=pipeline.train_split,
        table_columns=table_columns(
            solves=config.solves_head,
            validates=config.validates,
            regression=config.regression,
        ),
    )


def train(config, model, pipeline):
    """Fit the run's net (:func:`run_net`) over ``model`` with ``pipeline``.

    The BatchNorm layers the model holds are held in eval mode for the time
    of training. With a data-parallel ``config`` this rank trains its shard
    through DDP. Returns the fitted net.
    """
    net = run_net(config, model, pipeline)
    targets = model.targets
    if pipeline.train_split is not None and targets is None:
        # A dataset carries its labels; the stratified split needs them too.
        targets = model.labels
    held = hold_in_eval(model.held_batchnorm)
    try:
        fit_recovering(
            net,
            model.data,
            targets,
            epochs=config.max_epochs - config.epochs_done,
            checkpoint=pipeline.checkpoint,
            guard=pipeline.guard,
        )
    finally:
        for handle in held:
            handle.remove()
    return net
