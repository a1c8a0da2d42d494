"""Assembling and running the skorch net behind FastRetrainClassifier."""

import copy
import warnings

import torch

from ._backbone import build_module, first_conv, resolve_backbone
from ._checkpoint import TrainingCheckpoint, module_copy
from ._data import AugmentCollate, make_augment, model_data
from ._freezing import RandomFreezer
from ._head import RidgeHeadSolver
from ._regularizers import regularizer_components
from ._sgd_epoch import (
    DivergenceError,
    batchnorm_layers,
    hold_in_eval,
    make_net,
    setup_batchnorm,
)
from ._validation import check_input_size

__all__ = ["fit_recovering", "train_net"]


def train_net(est, X, y, *, n_classes, seed, device, plan=None, resume=False):
    """Assemble the module, callbacks and skorch net of ``est``, and fit it.

    ``plan`` is (fingerprint, seed, epochs done) from
    :func:`~skfastretrain._checkpoint.plan_run`. Returns the fitted net, the
    per-sample input shape and the names of the BatchNorm layers held in
    eval mode.
    """
    backbone, spec = resolve_backbone(est.backbone, est.weights)
    conv = first_conv(backbone)
    size = check_input_size(est.input_size) or spec.input_size
    data, targets, sample = model_data(X, y, conv=conv, size=size)
    module = build_module(
        backbone,
        spec,
        sample,
        n_classes,
        input_size=size,
        hidden=tuple(est.head_hidden or ()),
        reinit_layers=est.reinit_layers,
    )
    held_bns = setup_batchnorm(module.backbone, est.bn_mode, est.bn_momentum)
    augment = make_augment(est.augment, sample.shape[-2:])
    callbacks = [
        (
            "freezer",
            RandomFreezer(
                est.freeze_prob,
                mode=est.freeze_mode,
                head="head",
                random_state=seed,
            ),
        )
    ]
    if est.ridge_lambda is not None:
        solver = RidgeHeadSolver(
            est.ridge_lambda,
            blend=est.head_blend,
            solve_every=est.solve_every,
            init_solve=est.init_head == "ridge",
            head="head",
            recalibrate_bn=len(held_bns) < len(batchnorm_layers(module)),
            feature_source="sgd" if est.reuse_features else "pass",
            update=est.head_update,
            random_state=seed,
        )
        callbacks.append(("ridge_head", solver))
    layers = est.reg_layers
    if layers is not None:
        layers = [f"backbone.{name}" for name in layers]
    reg_callbacks, criterion = regularizer_components(
        est.regularizer,
        alpha=est.reg_alpha,
        beta=est.reg_beta,
        layers=layers,
        head="head",
    )
    callbacks += reg_callbacks
    callbacks += copy.deepcopy(list(est.callbacks or []))
    fingerprint, _, done = plan or (None, seed, 0)
    # Last, so that it saves each epoch after every other callback is done.
    ckpt = TrainingCheckpoint(est.checkpoint, resume=resume, fingerprint=fingerprint)
    callbacks.append(("checkpoint", ckpt))
    pin = device.startswith("cuda") if est.pin_memory == "auto" else est.pin_memory
    net = make_net(
        module,
        callbacks=callbacks,
        criterion=criterion,
        lr=est.lr,
        momentum=est.momentum,
        weight_decay=est.weight_decay,
        batch_size=est.batch_size,
        max_epochs=est.max_epochs,
        device=device,
        generator=torch.Generator().manual_seed(seed),
        verbose=est.verbose,
        num_workers=est.num_workers,
        pin_memory=pin,
        train_collate=None if augment is None else AugmentCollate(augment),
    )
    held = hold_in_eval(held_bns)
    try:
        fit_recovering(net, data, targets, epochs=est.max_epochs - done)
    finally:
        for handle in held:
            handle.remove()
    names = [n for n, m in module.named_modules() if any(m is h for h in held_bns)]
    return net, tuple(sample.shape[1:]), names


def fit_recovering(net, X, y, *, epochs):
    """``net.fit`` that falls back to the last complete epoch when it stops
    early, and puts the last good weights back when training diverges.

    ``net`` needs a :class:`TrainingCheckpoint` callback. An interrupt
    (KeyboardInterrupt, which skorch swallows) before any epoch completed is
    raised again; a later one warns.
    """
    callbacks = [cb[1] if isinstance(cb, tuple) else cb for cb in net.callbacks]
    ckpt = next(cb for cb in callbacks if isinstance(cb, TrainingCheckpoint))
    try:
        net.fit(X, y, epochs=epochs)
        _fall_back_if_stopped(net, ckpt)
    except DivergenceError as exc:
        ckpt.restore_module(net)
        exc.state_dict = module_copy(net.module_)
        # skorch skips on_train_end after an error: unfreeze and unhook here.
        net.notify("on_train_end", X=X, y=y)
        raise
    finally:
        # The copy would double the size of a pickled estimator.
        ckpt.release()
    return net


def _fall_back_if_stopped(net, ckpt):
    done = ckpt.epochs_
    if len(net.history) <= done:
        return
    if done == 0:
        raise KeyboardInterrupt
    ckpt.restore_module(net)
    del net.history[done:]
    warnings.warn(
        f"Training stopped during epoch {done + 1} (KeyboardInterrupt, or a "
        "callback that ends training); the estimator keeps the model of "
        f"the last completed epoch, {done}.",
        UserWarning,
        stacklevel=5,
    )
