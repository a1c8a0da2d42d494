"""Input checking and on-the-fly preprocessing: the data step of the path."""

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from skorch.dataset import Dataset as SkorchDataset
from skorch.helper import SliceDataset
from torch import nn
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

__all__ = [
    "IMAGES",
    "SAMPLE_WEIGHT",
    "AugmentCollate",
    "Dihedral",
    "FitInput",
    "ImageDataset",
    "Preprocess",
    "WeightedRows",
    "as_pixels",
    "check_paths",
    "dataset_labels",
    "input_kind",
    "make_augment",
    "model_data",
    "resize_images",
    "split_weights",
    "to_model_layout",
]


def as_pixels(X):
    """Integer images as uint8 pixel intensities; anything else unchanged.

    Integer images of any dtype hold intensities in [0, 255], scaled by 1/255
    inside the model as uint8 is; other values would be fed unscaled as if
    they were floats in [0, 1], so they raise. Only images (arrays or tensors
    of 3 or more dimensions) are read so: 2-D integer arrays are feature
    vectors, numbers rather than pixels.
    """
    if isinstance(X, torch.Tensor):
        integer = not (X.dtype.is_floating_point or X.dtype.is_complex)
        integer = integer and X.dtype not in (torch.bool, torch.uint8)
    else:
        integer = X.dtype.kind in "iu" and X.dtype != np.uint8
    if X.ndim < 3 or not integer or 0 in X.shape:
        return X
    lo, hi = int(X.min()), int(X.max())
    if lo < 0 or hi > 255:
        raise ValueError(
            f"Integer images are read as pixel intensities in [0, 255], but X "
            f"has dtype {X.dtype} with values in [{lo}, {hi}]. Convert such "
            "images to float in [0, 1] first, e.g. X / 65535 for 16-bit images."
        )
    if isinstance(X, torch.Tensor):
        return X.to(torch.uint8)
    return X.astype(np.uint8)


def _is_channels_last(shape):
    """Whether 4-d images of ``shape`` are read as (n, H, W, C): their second
    axis has more than 4 entries, too many for channels."""
    return len(shape) == 4 and shape[1] > 4


def to_model_layout(X, *, expects_images):
    """Put a validated array in the layout the backbone takes.

    Images come as (n, H, W), (n, H, W, C) or (n, C, H, W) and leave as
    (n, C, H, W). Four-dimensional arrays are read as channels-first when
    their second axis has at most 4 entries, else as channels-last. Integer
    images become uint8 (:func:`as_pixels`); uint8 is kept (it is scaled by
    1/255 per batch, saving 4x memory); other dtypes become float32. 2-D
    arrays are tabular and only change dtype (2-D uint8 stays uint8).
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
        if _is_channels_last(X.shape):
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
    X = as_pixels(X)
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


def _is_image_item(item):
    return isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim in (2, 3)


def input_kind(X):
    """How ``X`` is read: ``"dataset"``, ``"folder"``, ``"paths"``,
    ``"images"`` or ``"array"``.

    A str or path is a folder of class subfolders. ``"images"`` is a list or
    tuple holding PIL images, or of 2-D and 3-D arrays or tensors of more
    than one shape, read one by one as files are; equal shapes stack into
    one array, and nested lists of numbers are arrays too.
    """
    if isinstance(X, (Dataset, SliceDataset)):
        return "dataset"
    if isinstance(X, (str, os.PathLike)):
        return "folder"
    if isinstance(X, (list, tuple)) and X:
        if isinstance(X[0], (str, os.PathLike)):
            return "paths"
        if any(isinstance(x, Image.Image) for x in X) or (
            all(_is_image_item(x) for x in X) and len({x.shape for x in X}) > 1
        ):
            return "images"
    if (
        isinstance(X, np.ndarray)
        and X.ndim == 1
        and X.size
        and isinstance(X.flat[0], (str, os.PathLike))
    ):
        return "paths"
    return "array"


def _to_chw(image):
    """A PIL image, array (H, W[, C]) or tensor (C, H, W) as a CHW tensor."""
    if isinstance(image, Image.Image):
        return as_pixels(TF.pil_to_tensor(image))
    if isinstance(image, torch.Tensor):
        return as_pixels(image if image.ndim == 3 else image[None])
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"An image must be 2-D or 3-D, got shape {array.shape}.")
    array = as_pixels(array)
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class ImageDataset(Dataset):
    """Images read lazily from files or another dataset, at one size.

    Every item is a (C, H, W) tensor (uint8 stays uint8) resized to ``size``
    so that items batch together, paired with an integer label.

    Parameters
    ----------
    source : sequence of paths, torch Dataset or skorch SliceDataset
        Items of a dataset may be images or (image, label) pairs; the label
        in an item is ignored in favour of ``labels``.
    labels : ndarray or None
        Encoded labels (int) or regression targets (float rows), or None at
        predict time (labels are then 0).
    size : tuple of int or None
        (height, width); None takes the size of the first image.
    channels : int or None
        Channels wanted: files are decoded as RGB for 3 and as L for 1.
    """

    def __init__(self, source, labels=None, *, size=None, channels=None):
        self.source = source
        self.labels = labels
        self.channels = channels
        self.is_paths = input_kind(source) == "paths"
        self.size = tuple(size) if size is not None else None
        if self.size is None:
            self.size = tuple(self._load(0).shape[-2:])

    def __len__(self):
        return len(self.source)

    def _load(self, i):
        mode = {1: "L", 3: "RGB"}.get(self.channels)
        item = self.source[i]
        if not self.is_paths:
            item = item[0] if isinstance(item, tuple) else item
            if not isinstance(item, Image.Image):
                return _to_chw(item)
        # PIL images are converted to the backbone's mode as files are.
        try:
            if not self.is_paths:
                return _to_chw(item.convert(mode) if mode else item)
            with Image.open(item) as img:
                return _to_chw(img.convert(mode) if mode else img)
        except OSError as exc:  # a truncated file decodes only so far
            name = repr(str(os.fspath(item))) if self.is_paths else f"{i}"
            raise ValueError(f"Cannot read image {name}: {exc}") from exc

    def __getitem__(self, i):
        x = self._load(i)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = TF.resize(x, list(self.size), antialias=True)
        if self.channels == 3 and x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        if self.channels is not None and x.shape[0] != self.channels:
            # Else the first convolution fails with a shape error.
            mode = {1: " (grayscale)", 3: " (RGB)"}.get(self.channels, "")
            raise ValueError(
                f"Image {i} has {x.shape[0]} channels, but the backbone takes "
                f"{self.channels}-channel{mode} images; convert the images to "
                f"{self.channels} channels first."
            )
        return x, (0 if self.labels is None else self.labels[i])


def dataset_labels(dataset):
    """Labels of a dataset of (image, label) items.

    ``targets`` (as torchvision datasets have, also through a ``Subset``) is
    read without decoding images, and mapped to the names in ``classes``
    where the dataset has them, so that an ``ImageFolder`` gives its folder
    names as classes; else each item's label is read.
    """
    base, index = dataset, slice(None)
    if isinstance(dataset, Subset):
        base, index = dataset.dataset, np.asarray(dataset.indices, dtype=np.int64)
    targets = getattr(base, "targets", None)
    if targets is None:
        return np.asarray([dataset[i][1] for i in range(len(dataset))])
    targets = np.asarray(targets)[index]
    classes = getattr(base, "classes", None)
    if classes is None or targets.size == 0:
        return targets
    classes = np.asarray(classes)
    if classes.ndim != 1 or targets.ndim != 1 or targets.dtype.kind not in "iu":
        return targets
    if targets.min() < 0 or targets.max() >= len(classes):
        raise ValueError(
            f"The dataset's targets range over [{targets.min()}, "
            f"{targets.max()}], but it has {len(classes)} classes; targets "
            "must index its classes."
        )
    return classes[targets]


def check_paths(paths):
    """Fail before any pass, naming the file, when one is not a readable image.

    Each file's header is opened and verified (PIL's ``verify``, which does
    not decode the pixels): a missing file is a FileNotFoundError, a folder,
    a non-image or a corrupt header a ValueError. A file cut short after a
    valid header is found only when it is decoded, and then named too.
    """
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"Expected image file paths, got {type(path).__name__}.")
        if os.path.isdir(path):
            raise ValueError(
                f"{str(os.fspath(path))!r} is a folder, not an image file; pass the "
                "paths of the image files in it."
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image file not found: {str(os.fspath(path))!r}.")
        try:
            with Image.open(path) as img:
                img.verify()
        except (OSError, SyntaxError, ValueError) as exc:
            # PIL's UnidentifiedImageError is an OSError; verify raises
            # SyntaxError for some broken headers.
            raise ValueError(
                f"{str(os.fspath(path))!r} is not a readable image: {exc}"
            ) from exc


class Dihedral:
    """A random symmetry of the image's square (or rectangle), per sample.

    One of the eight flips and quarter turns of a square image, each
    equally likely; a non-square image takes one of the four that keep its
    shape (the identity, either flip, the half turn), so that a batch still
    stacks. Label-preserving for images without a canonical orientation:
    cells, tiles, micrographs, aerial views (not for digits or text).
    Draws from torch's global generator, as torchvision's transforms do.
    """

    def __call__(self, image):
        height, width = image.shape[-2:]
        turns = int(torch.randint(4, ()))
        if height != width:
            turns -= turns % 2
        image = torch.rot90(image, turns, dims=(-2, -1))
        if bool(torch.randint(2, ())):
            image = torch.flip(image, dims=(-1,))
        return image

    def __repr__(self):
        return "Dihedral()"


def make_augment(augment, size):
    """The per-sample training transform for ``augment``, or None."""
    if augment is None:
        return None
    if augment == "dihedral":
        return Dihedral()
    if augment == "light":
        return v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
            ]
        )
    if callable(augment):
        return augment
    raise ValueError(
        "augment must be None, 'light', 'dihedral' or a callable transform, "
        f"got {augment!r}."
    )


class AugmentCollate:
    """Collate function that transforms each sample before stacking.

    Used only by the training iterator, so augmentation never reaches the
    head-solve feature pass or predict. A class, not a closure, so that
    DataLoader workers can pickle it.
    """

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, batch):
        xs, ys = zip(*batch, strict=True)
        if isinstance(xs[0], dict):
            # Weighted rows (WeightedRows): the images are transformed, the
            # weights ride along.
            images = [self.transform(torch.as_tensor(x[IMAGES])) for x in xs]
            weights = torch.as_tensor(np.asarray([x[SAMPLE_WEIGHT] for x in xs]))
            X = {IMAGES: torch.stack(images), SAMPLE_WEIGHT: weights}
            return X, torch.as_tensor(np.asarray(ys))
        xs = [self.transform(torch.as_tensor(x)) for x in xs]
        return torch.stack(xs), torch.as_tensor(np.asarray(ys))


#: The keys of a weighted row's input: skorch passes a dict input to the
#: module as keyword arguments (``FastRetrainModule.forward(x,
#: sample_weight)``), and ``get_loss`` reads the weights from it.
IMAGES, SAMPLE_WEIGHT = "x", "sample_weight"


class WeightedRows(Dataset):
    """Rows of ``dataset`` with their weights, as skorch's idiom for sample
    weights has them: item ``i`` is ``({"x": X_i, "sample_weight": w_i},
    y_i)`` for ``dataset[i] == (X_i, y_i)``.

    Parameters
    ----------
    dataset : torch Dataset
        Yields ``(X_i, y_i)``.
    weights : ndarray of shape (len(dataset),)
        The rows' weights (float32).
    """

    def __init__(self, dataset, weights):
        self.dataset = dataset
        self.weights = np.asarray(weights, dtype=np.float32)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return {IMAGES: x, SAMPLE_WEIGHT: self.weights[i]}, y


def split_weights(X):
    """``(X, weights)`` of a batch input: a weighted row's dict, or a plain
    input and None."""
    if isinstance(X, dict) and SAMPLE_WEIGHT in X:
        return X[IMAGES], X[SAMPLE_WEIGHT]
    return X, None


@dataclass(frozen=True, repr=False)
class FitInput:
    """The training data of a fit, checked and classified once.

    Parameters
    ----------
    kind : {"array", "paths", "images", "dataset"}
        How ``X`` is read (:func:`input_kind`; a folder arrives as its
        paths).
    X : ndarray, list or Dataset
        The checked input.
    y : ndarray
        The labels encoded as ``0 .. n_classes - 1`` (int64), or for a
        regression the targets standardized (float32, (n, n_outputs)).
    classes : ndarray or None
        The class labels, in the order of their codes; None for a
        regression.
    sample_weight : ndarray of float or None, default=None
        The rows' weights (``sample_weight`` times the ``class_weight`` of
        their labels), or None when every row weighs 1.
    target_mean, target_scale : ndarray or None, default=None
        A regression's targets are ``y * target_scale + target_mean``, of
        shape () for 1-D targets and (n_outputs,) for 2-D ones.
    """

    kind: str
    X: object
    y: np.ndarray
    classes: np.ndarray | None
    sample_weight: np.ndarray | None = None
    target_mean: np.ndarray | None = None
    target_scale: np.ndarray | None = None

    @property
    def regression(self):
        """Whether the targets are real values rather than classes."""
        return self.classes is None

    @property
    def n_outputs(self):
        """The head's outputs: the classes, or the regression's targets."""
        return self.y.shape[1] if self.regression else len(self.classes)

    @property
    def native_size(self):
        """(height, width) of array images in model layout; None when it is
        unknown before reading (files, lists, datasets) or for vectors."""
        if self.kind != "array" or self.X.ndim not in (3, 4):
            return None
        shape = self.X.shape
        height, width = shape[1:3] if _is_channels_last(shape) else shape[-2:]
        return (int(height), int(width))

    def __repr__(self):
        return (
            f"FitInput(kind={self.kind!r}, n_samples={len(self.y)}, "
            f"n_outputs={self.n_outputs}, regression={self.regression}, "
            f"native_size={self.native_size})"
        )


def model_data(fit_input, *, conv, size):
    """What skorch trains on: ``(data, targets, sample)``.

    Arrays (of a :class:`FitInput`) become one array in model layout; paths
    and datasets become an :class:`ImageDataset` carrying its labels (so
    ``targets`` is None). With sample weights, either becomes
    :class:`WeightedRows` carrying labels and weights. ``sample`` holds two
    inputs for the dry forward pass.
    """
    X, y = fit_input.X, fit_input.y
    if fit_input.kind == "array":
        data = to_model_layout(X, expects_images=conv is not None)
        targets, sample = y, data[:2]
    else:
        channels = None if conv is None else conv.in_channels
        data = ImageDataset(X, y, size=size, channels=channels)
        sample = torch.stack([data[i][0] for i in range(min(2, len(data)))])
        targets, sample = None, sample.numpy()
    if fit_input.sample_weight is not None:
        rows = data if targets is None else SkorchDataset(data, targets)
        data, targets = WeightedRows(rows, fit_input.sample_weight), None
    return data, targets, sample


def resize_images(X, size, *, chunk=256):
    """Images (n, C, H, W) resized to ``size`` as :class:`ImageDataset`
    resizes files (bilinear, antialiased; uint8 stays uint8)."""
    out = np.empty((len(X), X.shape[1], *size), dtype=X.dtype)
    # By chunks, so that the float copies made inside stay small.
    for start in range(0, len(X), chunk):
        block = torch.from_numpy(X[start : start + chunk])
        resized = TF.resize(block, list(size), antialias=True)
        out[start : start + chunk] = resized.numpy()
    return out
