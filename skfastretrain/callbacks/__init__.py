"""The steps of a fit as skorch callbacks, usable in a plain skorch net.

In the order the estimator runs them: :class:`LayerFreezer` (the freezing
step), :class:`LRProbe` (``lr="auto"``), :class:`PrefixCache` (the frozen
prefix computed once), :class:`RidgeHeadSolver` (the Gram statistics, the
solve and the head update), the transfer regularizers (:class:`L2SP`,
:class:`DeltaRegularizer`), :class:`ValidationScoring` (the validation
split scored after the solve, early stopping), :class:`DivergenceGuard` and
:class:`TrainingCheckpoint`; :class:`EpochTable` prints the per-epoch table.
"""

from ._checkpoint import TrainingCheckpoint
from ._divergence import DivergenceError, DivergenceGuard, DivergenceWarning
from ._freezing import LayerFreezer, RandomFreezer
from ._lr_probe import LR_CANDIDATES, LRProbe
from ._prefix_cache import PrefixCache
from ._progress import EpochTable
from ._regularizers import L2SP, DeltaLoss, DeltaRegularizer
from ._ridge_head import RidgeHeadSolver
from ._validation_scoring import ValidationScoring

__all__ = [
    "L2SP",
    "LR_CANDIDATES",
    "DeltaLoss",
    "DeltaRegularizer",
    "DivergenceError",
    "DivergenceGuard",
    "DivergenceWarning",
    "EpochTable",
    "LRProbe",
    "LayerFreezer",
    "PrefixCache",
    "RandomFreezer",
    "RidgeHeadSolver",
    "TrainingCheckpoint",
    "ValidationScoring",
]
