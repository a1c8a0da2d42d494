"""Assembling and running the skorch net behind FastRetrainClassifier."""

import copy
import math

import torch
import torch.distributed as dist
from skorch import NeuralNetClassifier
from skorch.callbacks import LRScheduler, ProgressBar
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import CosineAnnealingLR

from ._batchnorm import batchnorm_layers, hold_in_eval, setup_batchnorm
from ._data import AugmentCollate, input_kind, make_augment, model_data
from ._distributed import train_sampler
from ._resume import _is_checkpoint, checkpoint_path, fit_recovering
from ._validation import prefix_cache_applies, resolve_input_size
from .backbones._module import build_module, first_conv
from .backbones._registry import resolve_backbone
from .callbacks._checkpoint import TrainingCheckpoint
from .callbacks._divergence import DivergenceGuard
from .callbacks._freezing import RandomFreezer
from .callbacks._lr_probe import LRProbe
from .callbacks._prefix_cache import PrefixCache
from .callbacks._regularizer_names import regularizer_components
from .callbacks._ridge_head import RidgeHeadSolver

__all__ = ["AUTO_LR", "FastRetrainNet", "make_net", "probes_lr", "train_net"]


class FastRetrainNet(NeuralNetClassifier):
    """The skorch net of :class:`FastRetrainClassifier`.

    A :class:`~skorch.NeuralNetClassifier` whose training steps, in a
    data-parallel fit (``ddp_device`` set), run through
    :class:`~torch.nn.parallel.DistributedDataParallel`: only the step sees
    the wrapper, so the callbacks, the head solve's feature passes and
    predict see ``module_`` as the plain module. Freezing changes which
    parameters get gradients from epoch to epoch, so DDP cannot assume a
    static graph: ``find_unused_parameters=True`` lets it find them by
    walking the autograd graph once per step, and frozen parameters, unused
    on every rank, keep no gradient.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`~skorch.NeuralNetClassifier`.
    ddp_device : str or None, default=None
        The device of this rank in a data-parallel fit; None trains alone.
    """

    def __init__(self, *args, ddp_device=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ddp_device = ddp_device

    def notify(self, method_name, **cb_kwargs):
        super().notify(method_name, **cb_kwargs)
        if method_name == "on_train_begin" and self.ddp_device is not None:
            # After the callbacks' on_train_begin (a resumed fit has loaded
            # its weights), so the wrapper starts from the fit's state.
            ids = [torch.device(self.ddp_device)]
            ids = ids if self.ddp_device.startswith("cuda") else None
            # Not a component of the net (skorch would register, move and
            # save it): a wrapper around module_ for the training steps only.
            vars(self)["ddp_module_"] = DistributedDataParallel(
                self.module_, device_ids=ids, find_unused_parameters=True
            )

    def on_epoch_begin(self, net, **kwargs):
        super().on_epoch_begin(net, **kwargs)
        sampler = getattr(self, "iterator_train__sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(len(self.history))

    def on_epoch_end(self, net, **kwargs):
        super().on_epoch_end(net, **kwargs)
        if getattr(self, "ddp_module_", None) is not None:
            # Before the callbacks (the head solve): every rank takes rank
            # 0's buffers, as DDP does before each forward; the last step
            # left each rank's BatchNorm statistics updated from its batch.
            for buffer in self.module_.buffers():
                dist.broadcast(buffer, src=0)

    def on_train_end(self, net, **kwargs):
        super().on_train_end(net, **kwargs)
        # The wrapper holds the process group, which cannot be pickled.
        vars(self)["ddp_module_"] = None

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        # The epoch's own steps only: a callback's steps (LRProbe's trial
        # steps on this rank's batches) stay on the plain module.
        vars(self)["in_epoch_"] = training
        try:
            return super().run_single_epoch(
                iterator, training, prefix, step_fn, **fit_params
            )
        finally:
            vars(self)["in_epoch_"] = False

    def train_step_single(self, batch, **fit_params):
        ddp = getattr(self, "ddp_module_", None)
        if ddp is None or not getattr(self, "in_epoch_", False):
            return super().train_step_single(batch, **fit_params)
        plain, self.module_ = self.module_, ddp
        try:
            return super().train_step_single(batch, **fit_params)
        finally:
            self.module_ = plain


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
    ddp_device=None,
):
    """A :class:`FastRetrainNet` over ``module`` trained by SGD with momentum.

    ``train_collate`` (augmentation) goes to the training iterator only, so
    the head solve's feature pass and predict see the data unchanged.
    ``train_sampler`` (a rank's shard) replaces the training shuffle, and
    ``ddp_device`` makes the training steps data-parallel.
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
    return FastRetrainNet(
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
        ddp_device=ddp_device,
    )


def train_net(
    est,
    X,
    y,
    *,
    n_classes,
    head,
    sgd,
    plan,
    device,
    distributed=False,
    resume=False,
):
    """Assemble the module, callbacks and skorch net of ``est``, and fit it.

    With ``distributed`` this rank trains on its shard through DDP (see
    :class:`FastRetrainNet`) and the head solves
    reduce their statistics over the ranks. ``head`` and ``sgd`` are the
    resolved :class:`RidgeHead` and :class:`SGDEpoch`; ``plan`` is the
    :class:`RunPlan` of :func:`plan_run`.

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
        hidden=head.hidden_widths(),
        reinit_layers=head.reinit_layers,
    )
    if est.precision == "bfloat16":
        if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"precision='bfloat16' needs a GPU with bfloat16 support; "
                f"{torch.cuda.get_device_name(device)} has none. Use 'float32'."
            )
        module.precision = "bfloat16"
        module.backbone.to(memory_format=torch.channels_last)
    held_bns = setup_batchnorm(module.backbone, sgd.bn_mode, sgd.bn_momentum)
    augment = make_augment(est.augment, sample.shape[-2:])
    callbacks = [
        (
            "freezer",
            RandomFreezer(
                est.freeze_prob,
                mode=est.freeze_mode,
                head="head",
                random_state=plan.seed,
            ),
        )
    ]
    if probes_lr(est, head):
        # After the freezer, so that the probe trains what epoch 1 trains.
        callbacks.append(("lr_probe", LRProbe(random_state=plan.seed)))
    if prefix_cache_applies(est, sgd):
        # After the freezer, whose frozen prefix it stores.
        callbacks.append(("prefix_cache", PrefixCache()))
    if est.ridge_lambda is not None:
        solver = RidgeHeadSolver(
            est.ridge_lambda,
            blend=head.blend,
            solve_every=head.solve_every,
            init_solve=head.init == "ridge",
            head="head",
            recalibrate_bn=len(held_bns) < len(batchnorm_layers(module)),
            feature_source="sgd" if head.reuse_features else "pass",
            update=head.update,
            random_state=plan.seed,
            distributed=distributed,
        )
        callbacks.append(("ridge_head", solver))
    reg_callbacks, criterion = regularizer_components(
        est.regularizer,
        head="head",
        prefix="backbone.",
        # DELTA's attention needs a trained head; ridge_head fits one first
        # only with RidgeHead(init="ridge").
        fit_head=est.ridge_lambda is None or head.init != "ridge",
    )
    callbacks += reg_callbacks
    sampler = None
    if distributed:
        sampler = train_sampler(len(data), plan.seed)
    if sgd.lr_schedule == "cosine":
        n_rows = len(data) if sampler is None else len(sampler)
        steps = est.max_epochs * math.ceil(n_rows / est.batch_size)
        schedule = LRScheduler(CosineAnnealingLR, T_max=steps, step_every="batch")
        callbacks.append(("lr_schedule", schedule))
    extra = copy.deepcopy(list(est.callbacks or []))
    # Last, so that it saves each epoch after every other callback is done.
    ckpt = TrainingCheckpoint(
        checkpoint_path(est.callbacks), resume=resume, fingerprint=plan.fingerprint
    )
    callbacks += [cb for cb in extra if not _is_checkpoint(cb)]
    callbacks.append(("checkpoint", ckpt))
    net = make_net(
        module,
        callbacks=callbacks,
        criterion=criterion,
        # The probe sets the rate before the first step.
        lr=AUTO_LR if isinstance(est.lr, str) else est.lr,
        momentum=sgd.momentum,
        weight_decay=sgd.weight_decay,
        # torch's samplers and loaders take Python ints only (np.int64 fails).
        batch_size=int(est.batch_size),
        max_epochs=int(est.max_epochs),
        device=device,
        generator=torch.Generator().manual_seed(plan.seed),
        verbose=est.verbose,
        num_workers=int(est.num_workers),
        # Pinned host memory speeds up copies to a GPU and costs nothing else.
        pin_memory=device.startswith("cuda"),
        train_collate=None if augment is None else AugmentCollate(augment),
        train_sampler=sampler,
        ddp_device=device if distributed else None,
    )
    held = hold_in_eval(held_bns)
    try:
        fit_recovering(net, data, targets, epochs=est.max_epochs - plan.done)
    finally:
        for handle in held:
            handle.remove()
    names = [n for n, m in module.named_modules() if any(m is h for h in held_bns)]
    return net, tuple(sample.shape[1:]), names


#: What ``lr="auto"`` is without a probe, and where the probe starts: the
#: best fixed rate for pretrained backbones in benchmarks/defaults.py.
AUTO_LR = 1e-3


def probes_lr(est, head):
    """Whether ``lr="auto"`` runs :class:`LRProbe`.

    The probe compares each rate's loss with that of a solved head; from a
    random head every rate that trains the head quickly looks good, however
    much it harms the backbone (a pretrained Lite0 lost its features at the
    0.03 the probe chose then), so such fits take ``AUTO_LR``.
    """
    return (
        isinstance(est.lr, str)
        and est.ridge_lambda is not None
        and head.init == "ridge"
    )
