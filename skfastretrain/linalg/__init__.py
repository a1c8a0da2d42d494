"""The head solve's arithmetic: Gram statistics, ridge solves, the λ grid.

Pure functions and accumulators over tensors: no hooks, no skorch and no
reduction over ranks (the callbacks reduce the statistics they gather).
"""

from ._gram import GramAccumulator
from ._solve import (
    LAMBDA_GRID,
    STAGE_WEIGHT_GRID,
    ridge_solve,
    select_lambda,
    select_stage_weight,
    stage_scale,
)

__all__ = [
    "LAMBDA_GRID",
    "STAGE_WEIGHT_GRID",
    "GramAccumulator",
    "ridge_solve",
    "select_lambda",
    "select_stage_weight",
    "stage_scale",
]
