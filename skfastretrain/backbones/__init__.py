"""The backbone step: named backbones, weight loading and the trained model.

A name resolves through :mod:`torchvision`, :mod:`timm` (``"timm:<name>"``) or
the EfficientNet-Lite port; :class:`FastRetrainModule` puts preprocessing, the
backbone and a new head in forward order; :func:`find_stages` finds the
stages a head that reads every stage taps.
"""

from ._efficientnet_lite import efficientnet_lite
from ._module import FastRetrainModule
from ._stages import MAX_STAGE_FEATURES, STAGE_RULES, find_stages, pool_stage

__all__ = [
    "MAX_STAGE_FEATURES",
    "STAGE_RULES",
    "FastRetrainModule",
    "efficientnet_lite",
    "find_stages",
    "pool_stage",
]
