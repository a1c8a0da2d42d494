"""Assembling and running the skorch net behind FastRetrainClassifier."""

import copy
import math
from collections import defaultdict

import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import LRScheduler, ProgressBar
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from ._batchnorm import batchnorm_layers, hold_in_eval, setup_batchnorm
from ._components import resolve_early_stopping
from ._data import AugmentCollate, input_kind, make_augment, model_data
from ._distributed import DataParallelSteps, train_sampler
from ._resume import _is_checkpoint, checkpoint_path, fit_recovering
from ._validation import prefix_cache_applies, resolve_input_size
from .backbones._module import build_module, first_conv
from .backbones._registry import resolve_backbone
from .callbacks._checkpoint import TrainingCheckpoint, net_state_without_caches
from .callbacks._divergence import DivergenceGuard
from .callbacks._freezing import RandomFreezer
from .callbacks._lr_probe import LRProbe
from .callbacks._prefix_cache import PrefixCache
from .callbacks._progress import EpochTable, resolve_verbose, table_columns
from .callbacks._regularizer_names import regularizer_components
from .callbacks._ridge_head import RidgeHeadSolver
from .callbacks._validation_scoring import (
    ValidationScoring,
    held_out_rows,
    validation_split,
)

__all__ = [
    "AUTO_LR",
    "FastRetrainNet",
    "make_net",
    "probes_lr",
    "train_net",
]


class FastRetrainNet(DataParallelSteps, NeuralNetClassifier):
    """The skorch net of :class:`FastRetrainClassifier`.

    A :class:`~skorch.NeuralNetClassifier` whose training steps, in a
    data-parallel fit (``ddp_device`` set), run through
    :class:`~torch.nn.parallel.DistributedDataParallel`
    (:class:`DataParallelSteps`), whose per-epoch table keeps its columns
    (:class:`EpochTable`), and whose pickles leave out what only more
    training would use.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`~skorch.NeuralNetClassifier`.
    ddp_device : str or None, default=None
        The device of this rank in a data-parallel fit; None trains alone.
    table_columns : sequence of str or None, default=None
        The columns of the per-epoch table (:class:`EpochTable`), fixed so
        that every row lines up; None takes the first row's keys.
    keep_training_state : bool, default=False
        Whether a pickle keeps what only more training would use: the
        optimizer's momentum buffers and the last head solve's Gram
        statistics (``RidgeHeadSolver.stats_``), each as large as the model
        or larger. The net in memory keeps them either way.

    Notes
    -----
    The validation split (``train_split``) is scored by a
    :class:`ValidationScoring` callback after the epoch's other callbacks
    (the head solve), so skorch's own validation pass during the epoch,
    which would score the model before the solve, does not run, and
    neither do its ``valid_loss`` and ``valid_acc`` scorers.
    """

    def __init__(
        self,
        *args,
        ddp_device=None,
        table_columns=None,
        keep_training_state=False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.ddp_device = ddp_device
        self.table_columns = table_columns
        self.keep_training_state = keep_training_state

    def __getstate__(self):
        optimizer = vars(self).get("optimizer_")
        slim = optimizer is not None and not self.keep_training_state
        if slim:
            # skorch serializes the optimizer inside super().__getstate__, so
            # its state is swapped out only for that call.
            saved, optimizer.state = optimizer.state, defaultdict(dict)
        try:
            state = super().__getstate__()
        finally:
            if slim:
                optimizer.state = saved
        if vars(self).get("module_") is not None and self.module is self.module_:
            # skorch trains the module it was given: without this, a pickle
            # would hold it twice (``module`` and, apart, ``module_``).
            state["module"] = _SAME_AS_MODULE_
        if slim:
            state = net_state_without_caches(state)
        return state

    def __setstate__(self, state):
        same = (
            isinstance(state.get("module"), str) and state["module"] == _SAME_AS_MODULE_
        )
        super().__setstate__(state)
        if same:
            self.module = self.module_

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        if not training and prefix == "valid":
            # ValidationScoring scores these rows after the head solve.
            return None
        return super().run_single_epoch(
            iterator, training, prefix, step_fn, **fit_params
        )

    @property
    def _default_callbacks(self):
        drop = {"valid_loss", "valid_acc", "print_log"}
        columns = self.table_columns
        return [
            *(
                (name, cb)
                for name, cb in super()._default_callbacks
                if name not in drop
            ),
            ("print_log", EpochTable(columns, keys_ignored=_UNTABULATED)),
        ]


#: Stands for ``module_`` in the pickle of a net whose module is module_.
_SAME_AS_MODULE_ = "<module_>"


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
    train_split=None,
    table_columns=None,
):
    """A :class:`FastRetrainNet` over ``module`` trained by SGD with momentum.

    ``train_collate`` (augmentation) goes to the training iterator only, so
    the head solve's feature pass and predict see the data unchanged.
    ``train_sampler`` (a rank's shard) replaces the training shuffle,
    ``ddp_device`` makes the training steps data-parallel, and
    ``train_split`` holds out the validation rows.
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
        # A tqdm bar over each epoch's batches; first, so that it closes
        # before the head solve's and the validation's bars open. The table
        # prints the per-epoch records.
        callbacks = [("progress_bar", ProgressBar()), *callbacks]
    return FastRetrainNet(
        module,
        criterion=criterion,
        optimizer=torch.optim.SGD,
        lr=lr,
        optimizer__momentum=momentum,
        optimizer__weight_decay=weight_decay,
        batch_size=batch_size,
        max_epochs=max_epochs,
        train_split=train_split,
        callbacks=callbacks,
        device=device,
        verbose=verbose,
        **{f"iterator_train__{k}": v for k, v in train_loader.items()},
        **{f"iterator_valid__{k}": v for k, v in loader.items()},
        ddp_device=ddp_device,
        table_columns=table_columns,
    )


#: Records the table leaves out: lists, long messages and details of the
#: start of the fit (``init_*``, dropped by EpochTable itself).
_UNTABULATED = ("layer_lambdas", "diverged", "valid_dur", "prefix_cache_rows")


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
    augment = make_augment(sgd.augment, sample.shape[-2:])
    early_stopping = resolve_early_stopping(est.early_stopping)
    train_split = None
    if early_stopping is not None:
        fraction = early_stopping.validation_fraction
        train_split = validation_split(fraction, y, plan.seed)
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
        callbacks.append(("prefix_cache", PrefixCache(dtype=sgd.cache_dtype)))
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
    if early_stopping is not None:
        # After the head solve and the regularizers, so that it scores the
        # model the epoch ends with; before the user's callbacks, which may
        # watch valid_loss.
        scoring = ValidationScoring(
            early_stopping.n_iter_no_change,
            tol=early_stopping.tol,
            scoring=early_stopping.scoring,
        )
        callbacks.append(("validation", scoring))
    n_train = len(data)
    if train_split is not None:
        n_train -= held_out_rows(early_stopping.validation_fraction, len(data))
    sampler = None
    if distributed:
        sampler = train_sampler(n_train, plan.seed)
    if sgd.lr_schedule == "cosine":
        n_rows = n_train if sampler is None else len(sampler)
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
        verbose=resolve_verbose(est.verbose),
        num_workers=int(est.num_workers),
        # Pinned host memory speeds up copies to a GPU and costs nothing else.
        pin_memory=device.startswith("cuda"),
        train_collate=None if augment is None else AugmentCollate(augment),
        train_sampler=sampler,
        ddp_device=device if distributed else None,
        train_split=train_split,
        table_columns=table_columns(
            solves=est.ridge_lambda is not None, validates=train_split is not None
        ),
    )
    if train_split is not None and targets is None:
        # A dataset carries its labels; the stratified split needs them too.
        targets = y
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
