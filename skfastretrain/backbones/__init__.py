"""The backbone step: named backbones, weight loading and the trained model.

A name resolves through :mod:`torchvision`, :mod:`timm` (``"timm:<name>"``) or
the EfficientNet-Lite port; :class:`FastRetrainModule` puts preprocessing, the
backbone and a new head in forward order.
"""

from ._efficientnet_lite import efficientnet_lite
from ._module import FastRetrainModule

__all__ = ["FastRetrainModule", "efficientnet_lite"]
