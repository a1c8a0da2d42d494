"""Images given as a list of PIL images, arrays or tensors.

Such lists are read one image at a time, as image files are (through
``ImageDataset``), so that the images may differ in size. Here they are
checked before any pass, and arrays and tensors laid out as (C, H, W).
"""

import warnings

import numpy as np
import torch
from PIL import Image

from .._data import to_model_layout
from .._stacklevel import outside_stacklevel

__all__ = ["check_image_list", "warn_if_above_one"]


def warn_if_above_one(high):
    """Float images are intensities in [0, 1]: warn when ``high`` says the
    values are pixel values in [0, 255], once per fit or predict call."""
    if high > 1:
        warnings.warn(
            "Float images are read as intensities in [0, 1], but X has values "
            f"up to {high:g}. If they are pixel values in [0, 255], divide "
            "them by 255 (or pass them as uint8).",
            UserWarning,
            stacklevel=outside_stacklevel(),
        )


def _list_item(i, item):
    """Item ``i`` of an image list: a PIL image, or a (C, H, W) tensor laid
    out and checked as the rows of an image array are (to_model_layout)."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu()
        item = (item.float() if item.is_floating_point() else item).numpy()
    if not isinstance(item, np.ndarray) or item.dtype.kind not in "iuf":
        what = getattr(item, "dtype", type(item).__name__)
        raise TypeError(
            f"Image {i} of the list is {what}: pass PIL images, or arrays or "
            "tensors of real numbers."
        )
    if item.ndim not in (2, 3) or 0 in item.shape:
        raise ValueError(
            f"Image {i} has shape {item.shape}; an image in a list is (H, W), "
            "(H, W, C) or (C, H, W)."
        )
    x = to_model_layout(item[None], expects_images=True)[0]
    if x.dtype != np.uint8 and not np.isfinite(x).all():
        raise ValueError(f"Image {i} contains NaN or infinity.")
    # torch warns about arrays it cannot write to (np.asarray of PIL images).
    return torch.from_numpy(x if x.flags.writeable else x.copy())


def check_image_list(X):
    """A list of PIL images, arrays or tensors, checked for ImageDataset.

    Arrays and tensors come back as (C, H, W) tensors and must share one
    channel count; float ones above 1 warn once, as float arrays do.
    """
    images = [_list_item(i, item) for i, item in enumerate(X)]
    tensors = [x for x in images if isinstance(x, torch.Tensor)]
    channels = sorted({x.shape[0] for x in tensors})
    if len(channels) > 1:
        raise ValueError(
            f"The images have {' and '.join(map(str, channels))} channels; "
            "convert them to one number of channels (PIL images are "
            "converted to the backbone's mode, as files are)."
        )
    floats = [float(x.max()) for x in tensors if x.dtype.is_floating_point]
    if floats:
        warn_if_above_one(max(floats))
    return images
