"""Assembling and running the skorch net behind FastRetrainClassifier."""

import copy
import hashlib
import json
import math
import numbers
import os
import re
import warnings

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import LRScheduler, ProgressBar
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from ._batchnorm import batchnorm_layers, hold_in_eval, setup_batchnorm
from ._data import AugmentCollate, input_kind, make_augment, model_data
from ._distributed import DDPEnter, DDPExit, train_sampler
from ._validation import prefix_cache_applies, resolve_input_size
from .backbones._module import build_module, first_conv
from .backbones._registry import resolve_backbone
from .callbacks._checkpoint import TrainingCheckpoint, module_copy, read_checkpoint
from .callbacks._divergence import DivergenceError, DivergenceGuard
from .callbacks._freezing import RandomFreezer
from .callbacks._lr_probe import LRProbe
from .callbacks._prefix_cache import PrefixCache
from .callbacks._regularizers import regularizer_components
from .callbacks._ridge_head import RidgeHeadSolver

__all__ = [
    "AUTO_LR",
    "fit_recovering",
    "make_net",
    "plan_run",
    "probes_lr",
    "train_net",
]

# Parameters that may change between a run and its resumption: they do not
# change the arithmetic on one device (max_epochs may grow to train longer).
_FREE_PARAMS = ("checkpoint", "verbose", "device", "pin_memory", "max_epochs")


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


def train_net(
    est, X, y, *, n_classes, seed, device, distributed=False, plan=None, resume=False
):
    """Assemble the module, callbacks and skorch net of ``est``, and fit it.

    With ``distributed`` this rank trains on its shard through DDP (see
    :class:`~skfastretrain._distributed.DDPEnter`) and the head solves
    reduce their statistics over the ranks. ``plan`` is (fingerprint, seed,
    epochs done) from :func:`plan_run`.

    Returns the fitted net, the per-sample input shape and the names of the
    BatchNorm layers held in eval mode.
    """
    backbone, spec = resolve_backbone(est.backbone, est.weights)
    conv = first_conv(backbone)
    # Files and datasets are read at the size resolved without their own
    # (unknown) size; arrays keep theirs, which "auto" may then use.
    size = resolve_input_size(est.input_size, spec.input_size, None, device)
    data, targets, sample = model_data(X, y, conv=conv, size=size)
    if input_kind(X) == "array" and sample.ndim == 4:
        size = resolve_input_size(
            est.input_size, spec.input_size, sample.shape[-2:], device
        )
    module = build_module(
        backbone,
        spec,
        sample,
        n_classes,
        input_size=size,
        hidden=tuple(est.head_hidden or ()),
        reinit_layers=est.reinit_layers,
    )
    if est.precision == "bfloat16":
        if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"precision='bfloat16' needs a GPU with bfloat16 support; "
                f"{torch.cuda.get_device_name(device)} has none. Use 'float32'."
            )
        module.precision = "bfloat16"
        module.backbone.to(memory_format=torch.channels_last)
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
    if probes_lr(est):
        # After the freezer, so that the probe trains what epoch 1 trains.
        callbacks.append(("lr_probe", LRProbe(random_state=seed)))
    if prefix_cache_applies(est):
        # After the freezer, whose frozen prefix it stores.
        callbacks.append(("prefix_cache", PrefixCache()))
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
            distributed=distributed,
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
        # DELTA's attention needs a trained head; ridge_head fits one first
        # only with init_head="ridge".
        fit_head=est.ridge_lambda is None or est.init_head != "ridge",
    )
    callbacks += reg_callbacks
    sampler = ddp = None
    if distributed:
        sampler = train_sampler(len(data), seed)
    if est.lr_schedule == "cosine":
        n_rows = len(data) if sampler is None else len(sampler)
        steps = est.max_epochs * math.ceil(n_rows / est.batch_size)
        schedule = LRScheduler(CosineAnnealingLR, T_max=steps, step_every="batch")
        callbacks.append(("lr_schedule", schedule))
    callbacks += copy.deepcopy(list(est.callbacks or []))
    fingerprint, _, done = plan or (None, seed, 0)
    # Last, so that it saves each epoch after every other callback is done.
    ckpt = TrainingCheckpoint(est.checkpoint, resume=resume, fingerprint=fingerprint)
    callbacks.append(("checkpoint", ckpt))
    pin = device.startswith("cuda") if est.pin_memory == "auto" else est.pin_memory
    if distributed:
        ddp = DDPEnter(sampler, device)
        callbacks = [("ddp_exit", DDPExit(ddp)), *callbacks, ("ddp_enter", ddp)]
    net = make_net(
        module,
        callbacks=callbacks,
        criterion=criterion,
        # The probe sets the rate before the first step.
        lr=AUTO_LR if isinstance(est.lr, str) else est.lr,
        momentum=est.momentum,
        weight_decay=est.weight_decay,
        # torch's samplers and loaders take Python ints only (np.int64 fails).
        batch_size=int(est.batch_size),
        max_epochs=int(est.max_epochs),
        device=device,
        generator=torch.Generator().manual_seed(seed),
        verbose=est.verbose,
        num_workers=int(est.num_workers),
        pin_memory=pin,
        train_collate=None if augment is None else AugmentCollate(augment),
        train_sampler=sampler,
    )
    held = hold_in_eval(held_bns)
    try:
        fit_recovering(net, data, targets, epochs=est.max_epochs - done)
    finally:
        for handle in held:
            handle.remove()
        if ddp is not None:
            ddp.on_train_end(net)
    names = [n for n, m in module.named_modules() if any(m is h for h in held_bns)]
    return net, tuple(sample.shape[1:]), names


#: What ``lr="auto"`` is without a probe, and where the probe starts: the
#: best fixed rate for pretrained backbones in benchmarks/defaults.py.
AUTO_LR = 1e-3


def probes_lr(est):
    """Whether ``lr="auto"`` runs :class:`LRProbe`.

    The probe compares each rate's loss with that of a solved head; from a
    random head every rate that trains the head quickly looks good, however
    much it harms the backbone (a pretrained Lite0 lost its features at the
    0.03 the probe chose then), so such fits take ``AUTO_LR``.
    """
    return (
        isinstance(est.lr, str)
        and est.ridge_lambda is not None
        and est.init_head == "ridge"
    )


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
    guard = next(
        (cb for _, cb in net.callbacks_ if isinstance(cb, DivergenceGuard)), None
    )
    if guard is not None and guard.diverged_ is not None:
        # The guard has put its best model back, warned, and recorded why in
        # the interrupted epoch's row, which stays.
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


def _describe(value):
    # Memory addresses in reprs (functions, callback objects) differ between
    # processes and say nothing about the run.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _fingerprint(est, X, y, seed):
    params = {
        k: _describe(v)
        for k, v in est.get_params(deep=False).items()
        if k not in _FREE_PARAMS and k != "random_state"
    }
    shape = list(X.shape) if hasattr(X, "shape") else [len(X)]
    data = {
        "shape": shape,
        "dtype": str(getattr(X, "dtype", type(X).__name__)),
        "labels": hashlib.sha1(np.ascontiguousarray(y).tobytes()).hexdigest(),
    }
    return {"params": params, "data": data, "seed": seed}


def plan_run(est, X, y, seed, *, resume):
    """The fingerprint text, seed and epochs already done of a fit of ``est``.

    With ``resume`` and an existing checkpoint file, the file must come from
    the same parameters and data; its seed is used unless ``random_state`` is
    an int that gives another one.
    """
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {resume!r}.")
    if resume and est.checkpoint is None:
        raise ValueError("fit(resume=True) needs the checkpoint parameter set.")
    mine = _fingerprint(est, X, y, seed)
    if not resume or not os.path.exists(est.checkpoint):
        return json.dumps(mine, sort_keys=True), seed, 0
    state = read_checkpoint(est.checkpoint)
    try:
        theirs = json.loads(state["fingerprint"])
    except (TypeError, ValueError):
        theirs = {}
    if not isinstance(theirs, dict) or set(theirs) != set(mine):
        raise ValueError(
            f"{est.checkpoint!r} was not written by FastRetrainClassifier."
        )
    if not isinstance(est.random_state, numbers.Integral):
        mine["seed"] = theirs["seed"]
    changed = sorted(
        k
        for k in set(mine["params"]) | set(theirs["params"])
        if mine["params"].get(k) != theirs["params"].get(k)
    )
    data = mine["data"]
    changed += [f"data {k}" for k in data if data[k] != theirs["data"].get(k)]
    changed += ["random_state"] if mine["seed"] != theirs["seed"] else []
    if changed:
        raise ValueError(
            f"Cannot resume from {est.checkpoint!r}: it was written by a fit with "
            f"other {', '.join(changed)}."
        )
    if state["epoch"] > est.max_epochs:
        raise ValueError(
            f"Checkpoint {est.checkpoint!r} holds {state['epoch']} epochs, more "
            f"than max_epochs={est.max_epochs}."
        )
    return state["fingerprint"], theirs["seed"], state["epoch"]
