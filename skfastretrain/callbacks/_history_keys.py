"""The history keys that one part of a fit writes and another reads.

A callback records its results in the skorch ``History`` under these names;
the callbacks, the per-epoch table, the estimator and ``plot_history`` that
read them import the names from here, so that a renamed key cannot leave a
reader looking under the old one. Their meanings are listed in
:attr:`FastRetrainClassifier.history_`.
"""

__all__ = [
    "DIVERGED",
    "FROZEN_FRACTION",
    "INIT",
    "KEPT_EPOCH",
    "LAYER_LAMBDAS",
    "PREFIX_STORE_ROWS",
    "PROBE_LR",
    "REG_PENALTY",
    "SOLVE_DUR",
    "SOLVE_LAMBDA",
    "STAGE_WEIGHT",
    "STOPPED_EARLY",
    "TRAIN_ACC",
    "TRAIN_ACC_BEFORE_SOLVE",
    "TRAIN_ACC_RIDGE",
    "TRAIN_LOSS",
    "VALID_ACC",
    "VALID_DUR",
    "VALID_LOSS",
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
#: ValidationScoring: set in the row where training stopped early.
STOPPED_EARLY = "stopped_early"
#: DivergenceGuard: why training stopped, and the epoch whose model is kept.
DIVERGED = "diverged"
KEPT_EPOCH = "kept_epoch"
#: L2SP and DeltaRegularizer: the epoch's mean penalty.
REG_PENALTY = "reg_penalty"
