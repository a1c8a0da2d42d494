"""skfastretrain: fast transfer learning with a scikit-learn API.

The path from data to prediction has one private module per step:
``_data`` (input layout and preprocessing), ``_backbone`` (model resolution
and head attachment), ``_freezing`` (:class:`RandomFreezer`),
``_prefix_cache`` (:class:`PrefixCache`), ``_lr_probe`` (:class:`LRProbe`,
the rate of ``lr="auto"``), ``_sgd_epoch`` (the skorch SGD loop) guarded by
``_divergence`` (:class:`DivergenceGuard`), ``_gram``
(:class:`GramAccumulator`), ``_solve`` (:func:`ridge_solve`), ``_calibration``
(the solved head's temperature) and ``_head`` (:class:`RidgeHeadSolver`), all
driven by :class:`FastRetrainClassifier`.
"""

from . import datasets
from ._backbone import FastRetrainModule
from ._checkpoint import TrainingCheckpoint
from ._classifier import FastRetrainClassifier
from ._divergence import DivergenceError, DivergenceGuard, DivergenceWarning
from ._efficientnet_lite import efficientnet_lite
from ._flops import count_flops, count_params
from ._freezing import RandomFreezer
from ._gram import GramAccumulator
from ._head import RidgeHeadSolver
from ._lr_probe import LR_CANDIDATES, LRProbe
from ._plotting import plot_history
from ._prefix_cache import PrefixCache
from ._pruning import PruningReport, prune_filters
from ._regularizers import L2SP, DeltaLoss, DeltaRegularizer
from ._solve import LAMBDA_GRID, ridge_solve, select_lambda

__version__ = "0.1.0.dev0"

__all__ = [
    "L2SP",
    "LAMBDA_GRID",
    "LR_CANDIDATES",
    "DeltaLoss",
    "DeltaRegularizer",
    "DivergenceError",
    "DivergenceGuard",
    "DivergenceWarning",
    "FastRetrainClassifier",
    "FastRetrainModule",
    "GramAccumulator",
    "LRProbe",
    "PrefixCache",
    "PruningReport",
    "RandomFreezer",
    "RidgeHeadSolver",
    "TrainingCheckpoint",
    "__version__",
    "count_flops",
    "count_params",
    "datasets",
    "efficientnet_lite",
    "plot_history",
    "prune_filters",
    "ridge_solve",
    "select_lambda",
]
