"""The networks of the baselines and measurements: pretrained Lite0 and the
estimator's preprocessing, written out with public torch and skfastretrain."""

import torch
import torch.nn.functional as F
from torch import nn

from skfastretrain import efficientnet_lite

from .data import BATCH_SIZE, IMAGE_SIZE

#: EfficientNet-Lite's normalization: ``(x - 127/255) / (128/255)``.
LITE_MEAN, LITE_STD = 127 / 255, 128 / 255


class Preprocess(nn.Module):
    """What the estimator does to the images, written out for the baselines.

    uint8 / 255, one channel repeated to ``channels``, bilinear antialiased
    resize to ``size`` (unless the images have it), then ``(x - mean) / std``
    per channel (a number: the same for every channel). The defaults are
    EfficientNet-Lite's.
    """

    def __init__(self, size=IMAGE_SIZE, *, channels=3, mean=LITE_MEAN, std=LITE_STD):
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.channels = channels
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).reshape(1, -1, 1, 1))

    def forward(self, x):
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] == 1 and self.channels > 1:
            x = x.expand(-1, self.channels, -1, -1)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(
                x, size=self.size, mode="bilinear", align_corners=False, antialias=True
            )
        return (x - self.mean) / self.std


def pretrained_lite0(n_classes=None):
    """ImageNet EfficientNet-Lite0; its classifier a new ``n_classes``-way
    ``Linear``, or the identity (the 1280 features) when None."""
    model = efficientnet_lite("efficientnet_lite0", weights="DEFAULT")
    model._fc = nn.Identity() if n_classes is None else nn.Linear(1280, n_classes)
    return model


def tiny_cnn():
    """A small CNN with BatchNorm for 1-channel images, trained from scratch
    (the tests' one): 16 x 2 x 2 features, no head."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
    )


def hold_bn_in_eval(module):
    """Keep ``module``'s BatchNorm layers in eval mode (pretrained statistics).

    skorch calls ``module.train()`` before each step; a forward pre-hook puts
    the BatchNorm layers back in eval mode as they run.
    """

    def hook(m, args):
        m.training = False

    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(hook)


def lite_features(backbone, X, size=IMAGE_SIZE):
    """``backbone``'s output for uint8 images ``X`` (n, 28, 28), as numpy."""
    prep = Preprocess(size)
    out = []
    with torch.inference_mode():
        for i in range(0, len(X), BATCH_SIZE):
            batch = torch.from_numpy(X[i : i + BATCH_SIZE, None])
            out.append(backbone(prep(batch)))
    return torch.cat(out).numpy()
