"""Input checking and on-the-fly preprocessing: the data step of the path."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Preprocess", "to_model_layout"]


def to_model_layout(X, *, expects_images):
    """Put a validated array in the layout the backbone takes.

    Images come as (n, H, W), (n, H, W, C) or (n, C, H, W) and leave as
    (n, C, H, W). Four-dimensional arrays are read as channels-first when
    their second axis has at most 4 entries, else as channels-last. uint8 is
    kept (it is scaled by 1/255 per batch, saving 4x memory); other dtypes
    become float32. 2-D arrays are tabular and only change dtype.
    """
    if X.ndim == 2:
        if expects_images:
            raise ValueError(
                "This backbone starts with a convolution and needs images of "
                "shape (n, H, W), (n, H, W, C) or (n, C, H, W); got a 2-D array "
                f"of shape {X.shape}. Pass images, or a backbone that takes "
                "feature vectors (such as an MLP)."
            )
    elif X.ndim == 3:
        X = X[:, None]
    elif X.ndim == 4:
        if X.shape[1] > 4:
            if X.shape[3] > 4:
                raise ValueError(
                    f"Cannot tell the channel axis of images of shape {X.shape}: "
                    "expected 1 to 4 channels first (n, C, H, W) or last "
                    "(n, H, W, C)."
                )
            X = X.transpose(0, 3, 1, 2)
    else:
        raise ValueError(
            f"X must be 2-D (n, features) or images with 3 or 4 dimensions; got "
            f"{X.ndim} dimensions, shape {X.shape}."
        )
    dtype = np.uint8 if X.dtype == np.uint8 else np.float32
    return np.ascontiguousarray(X, dtype=dtype)


class Preprocess(nn.Module):
    """Scale, repeat channels, resize and normalize a batch inside the model.

    Doing this per batch keeps the dataset compact (uint8 stays uint8), runs on
    the model's device, and makes the trained module usable on raw input.

    Parameters
    ----------
    channels : int or None, default=None
        Channels the backbone wants; a single input channel is repeated to
        that many. None leaves the input as it is.
    size : tuple of int or None, default=None
        (height, width) to resize images to (bilinear, antialiased).
    mean, std : sequence of float or None, default=None
        Per-channel normalization applied after scaling to [0, 1].
    """

    def __init__(self, *, channels=None, size=None, mean=None, std=None):
        super().__init__()
        self.channels = channels
        self.size = None if size is None else tuple(size)
        if mean is None:
            self.register_buffer("mean", None)
            self.register_buffer("std", None)
        else:
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        elif x.dtype != torch.float32:
            x = x.float()
        if x.ndim != 4:
            return x
        if self.channels is not None and x.shape[1] == 1 and self.channels > 1:
            x = x.expand(-1, self.channels, -1, -1)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(
                x, size=self.size, mode="bilinear", align_corners=False, antialias=True
            )
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def extra_repr(self):
        return f"channels={self.channels}, size={self.size}"
