"""TASCNet-style filter pruning of a fitted estimator, and its cost measures."""

from ._flops import count_flops, count_params
from ._prune import PruningReport, prune_filters

__all__ = ["PruningReport", "count_flops", "count_params", "prune_filters"]
