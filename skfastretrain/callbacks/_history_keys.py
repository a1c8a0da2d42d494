"""The history keys that one part of a fit writes and another reads.

A callback records its results in the skorch ``History`` under these names;
the callbacks, the per-epoch table, the estimator and ``plot_history`` that
read them import the names from here, so that a renamed key cannot leave a
reader looking under the old one. Their meanings are listed in
:attr:`FastRetrainClassifier.history_`.
"""

from typing import NamedTuple

__all__ = [
    "CLASSIFICATION_KEYS",
    "DIVERGED",
    "FROZEN_FRACTION",
    "INIT",
    "KEPT_EPOCH",
    "LAYER_LAMBDAS",
    "PREFIX_STORE_ROWS",
    "PROBE_LR",
    "REGRESSION_KEYS",
    "REG_PENALTY",
    "SOLVE_DUR",
    "SOLVE_LAMBDA",
    "STAGE_WEIGHT",
    "STOPPED_EARLY",
    "TRAIN_ACC",
    "TRAIN_ACC_BEFORE_SOLVE",
    "TRAIN_ACC_RIDGE",
    "TRAIN_LOSS",
    "TRAIN_R2",
    "TRAIN_R2_BEFORE_SOLVE",
    "TRAIN_R2_RIDGE",
    "VALID_ACC",
    "VALID_DUR",
    "VALID_LOSS",
    "VALID_R2",
    "ScoreKeys",
    "score_keys",
]

#: skorch's mean SGD loss of the epoch.
TRAIN_LOSS = "train_loss"
#: LayerFreezer: the fraction of candidate layers frozen in the epoch.
FROZEN_FRACTION = "frozen_fraction"
#: LRProbe: the learning rate it chose (first row).
PROBE_LR = "probe_lr"
#: PrefixCache: the rows whose prefix output is stored.
PREFIX_STORE_ROWS = "prefix_cache_rows"
#: RidgeHeadSolver: the epoch's model, after its solve, on training rows.
TRAIN_ACC = "train_acc"
#: RidgeHeadSolver: the epoch's model before its solve.
TRAIN_ACC_BEFORE_SOLVE = "train_acc_before_solve"
#: RidgeHeadSolver: the ridge solution alone.
TRAIN_ACC_RIDGE = "train_acc_ridge"
#: The same three scores of a regression head: R² instead of accuracy.
TRAIN_R2 = "train_r2"
TRAIN_R2_BEFORE_SOLVE = "train_r2_before_solve"
TRAIN_R2_RIDGE = "train_r2_ridge"
#: RidgeHeadSolver: the ridge strength of the solve.
SOLVE_LAMBDA = "ridge_lambda"
#: RidgeHeadSolver: the per-layer strengths of a residual update.
LAYER_LAMBDAS = "layer_lambdas"
#: RidgeHeadSolver: the seconds of the solve (its feature pass included).
SOLVE_DUR = "solve_dur"
#: RidgeHeadSolver with ``stage_widths``: the factor of the earlier stages.
STAGE_WEIGHT = "stage_weight"
#: The prefix of the records of the start of the fit, in the first row
#: (``init_train_acc``: the head solved before the first epoch).
INIT = "init_"
#: ValidationScoring: the validation log loss, accuracy and seconds.
VALID_LOSS = "valid_loss"
VALID_ACC = "valid_acc"
VALID_DUR = "valid_dur"
#: ValidationScoring: the validation R² of a regression.
VALID_R2 = "valid_r2"
#: ValidationScoring: set in the row where training stopped early.
STOPPED_EARLY = "stopped_early"
#: DivergenceGuard: why training stopped, and the epoch whose model is kept.
DIVERGED = "diverged"
KEPT_EPOCH = "kept_epoch"
#: L2SP and DeltaRegularizer: the epoch's mean penalty.
REG_PENALTY = "reg_penalty"


class ScoreKeys(NamedTuple):
    """The keys of one kind of score: on training rows after the solve,
    before it, of the ridge solution alone, and on validation rows."""

    train: str
    before_solve: str
    ridge: str
    valid: str


#: Accuracy, for classes.
CLASSIFICATION_KEYS = ScoreKeys(
    TRAIN_ACC, TRAIN_ACC_BEFORE_SOLVE, TRAIN_ACC_RIDGE, VALID_ACC
)
#: R², for real-valued targets.
REGRESSION_KEYS = ScoreKeys(TRAIN_R2, TRAIN_R2_BEFORE_SOLVE, TRAIN_R2_RIDGE, VALID_R2)


def score_keys(regression):
    """The :class:`ScoreKeys` of a regression (R²) or a classification
    (accuracy)."""
    return REGRESSION_KEYS if regression else CLASSIFICATION_KEYS
