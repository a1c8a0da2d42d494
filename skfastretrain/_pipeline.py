"""The callback pipeline of a fit: its stages, built in one declared order.

skorch runs a net's callbacks in list order at every event, so the order is
part of the method. :data:`STAGES` states it once, each stage with the reason
for its place; :func:`build_pipeline` builds the stages that the run
configuration asks for, in that order, and keeps typed references to those
whose results the estimator exposes.
"""

import copy
import math
from dataclasses import dataclass

from skorch.callbacks import LRScheduler, ProgressBar
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from ._distributed import train_sampler
from ._resume import is_checkpoint
from ._settings import regularizer_components
from .callbacks import (
    DivergenceGuard,
    LayerFreezer,
    LRProbe,
    PrefixCache,
    RidgeHeadSolver,
    TrainingCheckpoint,
    ValidationScoring,
)
from .callbacks._validation_scoring import held_out_rows, validation_split

__all__ = ["STAGES", "FitPipeline", "Stage", "build_pipeline"]


@dataclass(frozen=True)
class Stage:
    """One place in the callback pipeline: its name and why it is there."""

    name: str
    reason: str


#: Every stage a fit can have, in the order skorch runs them.
STAGES = (
    Stage(
        "progress_bar",
        "first, so that its bar over the epoch's batches closes before the "
        "head solve's and the validation's bars open (verbose fits only)",
    ),
    Stage(
        "divergence_guard",
        "before every stage that changes the model, so that the model it "
        "keeps from the start of the fit is the one the fit started from",
    ),
    Stage(
        "freezer",
        "before the probe and the prefix store: the probe must train what "
        "epoch 1 trains, and the store stores the freezer's prefix",
    ),
    Stage(
        "lr_probe",
        "after the freezer, so that it probes the layers epoch 1 trains; "
        "before the solver, whose head it starts from",
    ),
    Stage(
        "prefix_cache",
        "after the freezer, whose frozen prefix it stores; before the "
        "solver, whose first feature pass fills the store",
    ),
    Stage(
        "ridge_head",
        "after the SGD epoch's other stages, so that each solve sees the "
        "epoch's backbone; before the regularizers and validation",
    ),
    Stage(
        "regularizer",
        "after the head solve: DELTA's channel attention needs a trained head",
    ),
    Stage(
        "validation",
        "after the head solve and the regularizers, so that it scores the "
        "model the epoch ends with; before the user's callbacks, which may "
        "watch valid_loss",
    ),
    Stage(
        "lr_schedule",
        "after the stages that set the rate (the probe) and read the model",
    ),
    Stage(
        "user",
        "the estimator's ``callbacks``, after its own stages, in their order",
    ),
    Stage(
        "checkpoint",
        "last, so that it saves each epoch after every other stage is done",
    ),
)

_ORDER = {stage.name: i for i, stage in enumerate(STAGES)}


@dataclass(frozen=True, repr=False)
class FitPipeline:
    """The callbacks of one fit, in order, with typed references to them.

    Parameters
    ----------
    callbacks : list of (str, Callback)
        Named callbacks in the order of :data:`STAGES` (the user's keep
        their own names).
    criterion : type or nn.Module
        The SGD loss (a :class:`DeltaLoss` for a DELTA regularizer).
    train_split : callable or None
        The held-out validation rows' split; None without validation.
    train_sampler : Sampler or None
        This rank's shard in a data-parallel fit.
    guard, checkpoint : Callback
        The stages that training's recovery reads (``fit_recovering``).
    probe, regularizer, validation : Callback or None
        The optional stages whose results the estimator exposes (``lr_``,
        ``attention_``, ``best_epoch_``), None where the configuration
        leaves them out.
    """

    callbacks: list
    criterion: object
    train_split: object
    train_sampler: object
    guard: DivergenceGuard
    checkpoint: TrainingCheckpoint
    probe: LRProbe | None = None
    regularizer: object = None
    validation: ValidationScoring | None = None

    @property
    def stage_names(self):
        """The names of the callbacks, in order."""
        return [name for name, _ in self.callbacks]

    def __repr__(self):
        return f"FitPipeline({' -> '.join(self.stage_names)})"


def build_pipeline(config, model):
    """The :class:`FitPipeline` of a run: each stage ``config`` asks for.

    ``model`` is the :class:`BuiltModel` (the solver re-estimates BatchNorm
    statistics where some layer trains them).
    """
    seed = config.seed
    stages = {}
    if config.verbose:
        stages["progress_bar"] = ProgressBar()
    stages["divergence_guard"] = guard = DivergenceGuard()
    stages["freezer"] = LayerFreezer(
        config.freeze_prob, mode=config.freeze_mode, head="head", random_state=seed
    )
    if config.probe_lr:
        stages["lr_probe"] = LRProbe(random_state=seed)
    if config.prefix_store:
        stages["prefix_cache"] = PrefixCache(dtype=config.sgd.cache_dtype)
    head = config.head
    if config.solves_head:
        stage_widths = head.solves_stages(model.module.stage_widths)
        stages["ridge_head"] = RidgeHeadSolver(
            config.ridge_lambda,
            blend=head.blend,
            solve_every=head.solve_every,
            init_solve=head.init == "ridge",
            head="head",
            recalibrate_bn=model.recalibrates_batchnorm,
            feature_source="sgd" if head.reuse_features else "pass",
            update=head.update,
            random_state=seed,
            distributed=config.distributed,
            stage_widths=stage_widths,
            # The head's own SGD step on many rescaled stages undid its
            # solve (RidgeHeadSolver's sgd_updates_head).
            sgd_updates_head=stage_widths is None,
            keep_statistics=head.keep_statistics,
        )
    regularizers, criterion = regularizer_components(
        config.regularizer,
        head="head",
        prefix="backbone.",
        # DELTA's attention needs a trained head; the solver fits one first
        # only with RidgeHead(init="ridge").
        fit_head=not config.solves_head or head.init != "ridge",
        loss=nn.MSELoss if config.regression else nn.CrossEntropyLoss,
    )
    stages.update(regularizers)
    train_split, n_train = None, len(model.data)
    if config.validates:
        fraction = config.early_stopping.validation_fraction
        train_split = validation_split(fraction, model.labels, seed)
        n_train -= held_out_rows(fraction, len(model.data))
        stages["validation"] = ValidationScoring(
            config.early_stopping.n_iter_no_change,
            tol=config.early_stopping.tol,
            scoring=config.early_stopping.scoring,
            # With RidgeHead(init="ridge") the start is a trained model, a
            # linear probe: the epochs must beat it to be kept.
            score_start=True,
        )
    sampler = train_sampler(n_train, seed) if config.distributed else None
    if config.lr_schedule:
        n_rows = n_train if sampler is None else len(sampler)
        steps = config.max_epochs * math.ceil(n_rows / config.batch_size)
        stages["lr_schedule"] = LRScheduler(
            CosineAnnealingLR, T_max=steps, step_every="batch"
        )
    user = [cb for cb in copy.deepcopy(list(config.callbacks)) if not is_checkpoint(cb)]
    stages["checkpoint"] = checkpoint = TrainingCheckpoint(
        config.checkpoint, resume=config.resume, fingerprint=config.fingerprint
    )
    ordered = sorted(stages.items(), key=lambda item: _ORDER[item[0]])
    cut = _ORDER["user"]
    callbacks = [
        *(item for item in ordered if _ORDER[item[0]] < cut),
        *user,
        *(item for item in ordered if _ORDER[item[0]] > cut),
    ]
    return FitPipeline(
        callbacks=callbacks,
        criterion=criterion,
        train_split=train_split,
        train_sampler=sampler,
        guard=guard,
        checkpoint=checkpoint,
        probe=stages.get("lr_probe"),
        regularizer=stages.get("regularizer"),
        validation=stages.get("validation"),
    )
