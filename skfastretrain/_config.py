"""The run configuration: what a fit will do, resolved once from the estimator.

:func:`resolve_config` reads the estimator's parameters and the checked data
(:class:`FitInput`) and returns a frozen :class:`RunConfig`. Every later step
of the fit (building the module, the callback pipeline, the net, training)
reads that object, never the estimator. The run policy, the rules that turn
``"auto"`` values and combinations of parameters into decisions, lives here
beside it.
"""

from dataclasses import dataclass, field, fields

import numpy as np
import torch
from sklearn.utils import check_random_state

from ._distributed import broadcast_seed, setup_distributed
from ._progress import resolve_verbose
from ._resume import checkpoint_path, plan_run
from ._settings import (
    EarlyStopping,
    RidgeHead,
    SGDEpoch,
    reads_feature_maps,
    resolve_early_stopping,
    resolve_head,
    resolve_sgd,
)
from ._validation import check_params
from .backbones._registry import BackboneSpec, backbone_spec

__all__ = [
    "AUTO_LR",
    "RunConfig",
    "probes_lr",
    "resolve_config",
    "resolve_device",
    "resolve_input_size",
    "stores_prefix",
]


#: What ``lr="auto"`` is without a probe, and where the probe starts: the
#: best fixed rate for pretrained backbones in the defaults pilot.
AUTO_LR = 1e-3

#: The smallest side ``input_size="auto"`` resizes to on a CPU.
_CPU_MIN_SIDE = 64


@dataclass(frozen=True)
class RunConfig:
    """Everything a fit of :class:`FastRetrainClassifier` will do.

    Made by :func:`resolve_config` before anything is built; the steps after
    it (module, callback pipeline, net, training) read only this.

    Parameters
    ----------
    device : str
        The torch device of this process.
    distributed : bool
        Whether this process is one rank of a data-parallel fit.
    backbone : str, nn.Module or callable
        The ``backbone`` parameter, built by the module step (not shown in
        the repr but by ``backbone_name``).
    weights : str, path or None
        The ``weights`` parameter.
    backbone_spec : BackboneSpec
        The backbone's normalization and pretrained input size (not shown in
        the repr).
    input_kind : {"array", "paths", "images", "dataset"}
        How the training data is read.
    native_size : tuple of int or None
        (height, width) of array images; None when unknown.
    input_size : tuple of int or None
        (height, width) the model resizes its input to.
    n_outputs : int
        Outputs of the head: the classes, or the regression's targets.
    regression : bool
        Whether the targets are real values (:class:`FastRetrainRegressor`):
        a squared-error SGD loss and an R² score instead of cross-entropy
        and accuracy.
    precision : {"float32", "bfloat16"}
        The backbone's precision.
    head : RidgeHead
        The head and its updates.
    sgd : SGDEpoch
        The SGD epochs' settings.
    freeze_prob : float or tuple of float
        The frozen fraction, or one per epoch.
    freeze_mode : {"random", "prefix"}
        Which layers are frozen.
    lr : float
        The starting learning rate (the probe's start with ``lr="auto"``).
    batch_size, max_epochs, num_workers, verbose : int
        As the estimator's parameters (``verbose`` resolved).
    probe_lr : bool
        Whether :class:`LRProbe` chooses the learning rate.
    prefix_store : bool
        Whether :class:`PrefixCache` stores the frozen prefix's output.
    ridge_lambda : float, "auto" or None
        The head solve's strength; None: no :class:`RidgeHeadSolver`.
    regularizer : str, L2SP, DeltaRegularizer or None
        The transfer regularizer.
    early_stopping : EarlyStopping or None
        The held-out rows and early stopping; None: no validation.
    callbacks : tuple
        The user's extra callbacks (copied when the pipeline is built).
    checkpoint : str or None
        The file of the user's :class:`TrainingCheckpoint`, if any.
    seed : int
        The seed of every random draw of the run.
    fingerprint : str
        What a checkpoint of the run must match (not in the repr).
    epochs_done : int
        Epochs a resumed checkpoint already holds.
    resume : bool
        Whether the fit resumes from ``checkpoint``.
    """

    device: str
    distributed: bool
    backbone: object = field(repr=False)
    weights: object = field(repr=False)
    backbone_spec: BackboneSpec = field(repr=False)
    input_kind: str
    native_size: tuple | None
    input_size: tuple | None
    n_outputs: int
    regression: bool
    precision: str
    head: RidgeHead
    sgd: SGDEpoch
    freeze_prob: float | tuple
    freeze_mode: str
    lr: float
    batch_size: int
    max_epochs: int
    num_workers: int
    verbose: int
    probe_lr: bool
    prefix_store: bool
    ridge_lambda: float | str | None
    regularizer: object
    early_stopping: EarlyStopping | None
    callbacks: tuple
    checkpoint: str | None
    seed: int
    fingerprint: str = field(repr=False)
    epochs_done: int
    resume: bool

    @property
    def backbone_name(self):
        """The backbone's name, or its class name for a module."""
        if isinstance(self.backbone, str):
            return self.backbone
        return getattr(self.backbone, "__name__", type(self.backbone).__name__)

    @property
    def solves_head(self):
        """Whether :class:`RidgeHeadSolver` runs."""
        return self.ridge_lambda is not None

    @property
    def validates(self):
        """Whether rows are held out and scored each epoch."""
        return self.early_stopping is not None

    @property
    def lr_schedule(self):
        """Whether the learning rate is annealed batch by batch."""
        return self.sgd.lr_schedule == "cosine"

    def __repr__(self):
        # One field a line, as a reader scans a configuration.
        shown = [f for f in fields(self) if f.repr]
        lines = [f"    backbone_name={self.backbone_name!r},"]
        lines += [f"    {f.name}={getattr(self, f.name)!r}," for f in shown]
        return "RunConfig(\n" + "\n".join(lines) + "\n)"


def resolve_config(est, fit_input, *, resume=False):
    """The :class:`RunConfig` of a fit of ``est`` on ``fit_input``.

    Resolves the settings objects and every ``"auto"``, checks what the
    parameters' declared constraints cannot check alone, sets up the
    data-parallel group, draws the run's seed (rank 0's in a data-parallel
    fit) and plans a resumption.
    """
    head, sgd = resolve_head(est.head), resolve_sgd(est.sgd)
    check_params(est, head, sgd)
    _check_task(est, fit_input, head)
    device = resolve_device(est.device)
    distributed, device = setup_distributed(est.distributed, device)
    spec = backbone_spec(est.backbone, est.weights)
    seed = int(check_random_state(est.random_state).randint(np.iinfo(np.int32).max))
    if distributed:
        seed = broadcast_seed(seed)
    plan = plan_run(est, fit_input.X, fit_input.y, seed, resume=resume)
    freeze_prob = est.freeze_prob
    if np.ndim(freeze_prob) == 1:
        freeze_prob = tuple(float(p) for p in freeze_prob)
    return RunConfig(
        device=device,
        distributed=distributed,
        backbone=est.backbone,
        weights=est.weights,
        backbone_spec=spec,
        input_kind=fit_input.kind,
        native_size=fit_input.native_size,
        input_size=resolve_input_size(
            est.input_size, spec.input_size, fit_input.native_size, device
        ),
        n_outputs=fit_input.n_outputs,
        regression=fit_input.regression,
        precision=est.precision,
        head=head,
        sgd=sgd,
        freeze_prob=freeze_prob,
        freeze_mode=est.freeze_mode,
        # The probe sets the rate before the first step.
        lr=AUTO_LR if isinstance(est.lr, str) else float(est.lr),
        # torch's samplers and loaders take Python ints only (np.int64 fails).
        batch_size=int(est.batch_size),
        max_epochs=int(est.max_epochs),
        num_workers=int(est.num_workers),
        verbose=resolve_verbose(est.verbose),
        probe_lr=probes_lr(est.lr, est.ridge_lambda, head),
        prefix_store=stores_prefix(
            sgd, est.freeze_mode, est.precision, est.regularizer
        ),
        ridge_lambda=est.ridge_lambda,
        regularizer=est.regularizer,
        early_stopping=resolve_early_stopping(est.early_stopping),
        callbacks=tuple(est.callbacks or ()),
        checkpoint=checkpoint_path(est.callbacks),
        seed=plan.seed,
        fingerprint=plan.fingerprint,
        epochs_done=plan.done,
        resume=resume,
    )


def _check_task(est, fit_input, head):
    """What the task (classes or real targets, weights) rules out."""
    if fit_input.sample_weight is not None and head.update == "residual":
        raise ValueError(
            "head update 'residual' does not weigh its solves by sample_weight "
            "or class_weight; use the default update='blend' with weights."
        )
    if fit_input.regression and head.update == "residual":
        raise ValueError(
            "head update 'residual' corrects a softmax head and needs classes; "
            "a regressor's head takes the default update='blend'."
        )
    early = resolve_early_stopping(est.early_stopping)
    wrong = "accuracy" if fit_input.regression else "r2"
    if early is not None and early.scoring == wrong:
        right = "r2" if fit_input.regression else "accuracy"
        raise ValueError(
            f"EarlyStopping(scoring={wrong!r}) does not score a "
            f"{'regressor' if fit_input.regression else 'classifier'}; use "
            f"'loss' or {right!r}."
        )


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


def _as_pair(input_size):
    """(height, width) from an int or a pair of ints (validated at fit)."""
    size = np.atleast_1d(np.asarray(input_size, dtype=object))
    return (int(size[0]), int(size[-1]))


def resolve_input_size(input_size, pretrained_size, native_size, device):
    """The (height, width) images are resized to inside the model, or None.

    ``"auto"`` resizes only for a backbone with a pretrained input size: on a
    GPU to that size; on a CPU to the images' own size, raised to at least
    64 px (smaller inputs leave too little of the image after the backbone's
    downsampling) and capped at the pretrained size, because every doubling
    of the side costs four times the compute. ``native_size`` is None when
    it is unknown (image files, datasets): the pretrained size is used then.
    """
    if input_size is None:
        return pretrained_size
    if not isinstance(input_size, str):
        return _as_pair(input_size)
    if pretrained_size is None:
        return None
    if str(device).startswith("cuda") or native_size is None:
        return tuple(pretrained_size)
    return tuple(
        int(min(cap, max(_CPU_MIN_SIDE, side)))
        for side, cap in zip(native_size, pretrained_size, strict=True)
    )


def stores_prefix(sgd, freeze_mode, precision, regularizer):
    """Whether the frozen prefix's output is stored (``cache_prefix``).

    ``"auto"`` stores it wherever ``cache_prefix=True`` would be accepted
    (``check_params``), since the stored prefix computes the same function
    for less time.
    """
    if isinstance(sgd.cache_prefix, bool):
        return sgd.cache_prefix
    return (
        freeze_mode == "prefix"
        and sgd.augment is None
        and precision == "float32"
        and not reads_feature_maps(regularizer)
    )


def probes_lr(lr, ridge_lambda, head):
    """Whether ``lr="auto"`` runs :class:`LRProbe`.

    The probe compares each rate's loss with that of a solved head; from a
    random head every rate that trains the head quickly looks good, however
    much it harms the backbone (a pretrained Lite0 lost its features at the
    0.03 the probe chose then), so such fits take ``AUTO_LR``.
    """
    return isinstance(lr, str) and ridge_lambda is not None and head.init == "ridge"
