"""skfastretrain: fast transfer learning with a scikit-learn API.

The path from data to prediction, one place per step (see the Design page):

- data: ``_data.py`` (input layout, preprocessing) and :mod:`.datasets`;
- backbone: :mod:`.backbones` (names, weights, :class:`FastRetrainModule`);
- freezing, the learning-rate probe, the prefix store, the head solve and the
  transfer regularizers: skorch callbacks in :mod:`.callbacks`;
- the SGD epoch: the skorch net of ``_net.py``, configured by
  :class:`SGDEpoch`; the head by :class:`RidgeHead`; early stopping by
  :class:`EarlyStopping`;
- Gram statistics and the ridge solve: :mod:`.linalg`, with the head
  solve's feature passes in ``head/``;
- pruning: :mod:`.pruning`;
- deployment: ``_export.py`` (:func:`export_onnx`, :func:`export_torch`);

all driven by :class:`FastRetrainClassifier` and
:class:`FastRetrainRegressor` (their shared base in ``_base.py``), whose
``fit`` validates the
input (``_validation.py``), resolves a run configuration (``_config.py``),
builds the module (``_model.py``) and the callback pipeline
(``_pipeline.py``), and trains (``_train.py``).
"""

from . import backbones, callbacks, datasets, linalg, pruning
from ._classifier import FastRetrainClassifier
from ._export import DeployedModel, export_onnx, export_torch
from ._plotting import plot_history
from ._regressor import FastRetrainRegressor
from ._settings import EarlyStopping, RidgeHead, SGDEpoch
from .backbones import FastRetrainModule, efficientnet_lite, find_stages, pool_stage
from .callbacks import (
    L2SP,
    LR_CANDIDATES,
    DeltaLoss,
    DeltaRegularizer,
    DivergenceError,
    DivergenceGuard,
    DivergenceWarning,
    EpochTable,
    LayerFreezer,
    LRProbe,
    PrefixCache,
    RandomFreezer,
    RidgeHeadSolver,
    TrainingCheckpoint,
    ValidationScoring,
)
from .linalg import (
    LAMBDA_GRID,
    STAGE_WEIGHT_GRID,
    GramAccumulator,
    ridge_solve,
    select_lambda,
    select_stage_weight,
    stage_scale,
)
from .pruning import PruningReport, count_flops, count_params, prune_filters

__version__ = "0.1.0.dev0"

__all__ = [
    "L2SP",
    "LAMBDA_GRID",
    "LR_CANDIDATES",
    "STAGE_WEIGHT_GRID",
    "DeltaLoss",
    "DeltaRegularizer",
    "DeployedModel",
    "DivergenceError",
    "DivergenceGuard",
    "DivergenceWarning",
    "EarlyStopping",
    "EpochTable",
    "FastRetrainClassifier",
    "FastRetrainModule",
    "FastRetrainRegressor",
    "GramAccumulator",
    "LRProbe",
    "LayerFreezer",
    "PrefixCache",
    "PruningReport",
    "RandomFreezer",
    "RidgeHead",
    "RidgeHeadSolver",
    "SGDEpoch",
    "TrainingCheckpoint",
    "ValidationScoring",
    "__version__",
    "backbones",
    "callbacks",
    "count_flops",
    "count_params",
    "datasets",
    "efficientnet_lite",
    "export_onnx",
    "export_torch",
    "find_stages",
    "linalg",
    "plot_history",
    "pool_stage",
    "prune_filters",
    "pruning",
    "ridge_solve",
    "select_lambda",
    "select_stage_weight",
    "stage_scale",
]
