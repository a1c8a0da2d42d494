"""Loader for the Fashion-MNIST image classification data set.

The data are read from the four IDX files of the Fashion-MNIST release
(gzipped or not), by default from the folder where Debian's
``dataset-fashion-mnist`` package installs them. Nothing is downloaded.
"""

import gzip
import numbers
import os
import zlib
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch

__all__ = ["load_fashion_mnist"]

DEFAULT_PATH = Path("/usr/share/datasets/fashion-mnist")

TARGET_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# File name stems of the release, per split: (images, labels).
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_GZIP_MAGIC = b"\x1f\x8b"

_INSTALL_HINT = (
    "Install them with `apt-get install dataset-fashion-mnist` (Debian and "
    "Ubuntu put them in {default}), or pass `path=` to a folder holding the "
    "four IDX files of the Fashion-MNIST release "
    "(https://github.com/zalandoresearch/fashion-mnist): "
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
    "and t10k-labels-idx1-ubyte, each gzipped (.gz) or not."
)

DESCR = """\
.. _fashion_mnist_dataset:

Fashion-MNIST dataset
---------------------

**Data Set Characteristics:**

:Number of Instances: 60000 (train split) and 10000 (test split)
:Number of Classes: 10, with 6000 train and 1000 test images each
:Image size: 28x28 grayscale pixels, uint8 in [0, 255]
:Creators: Han Xiao, Kashif Rasul and Roland Vollgraf (Zalando Research)
:License: MIT
:Date: 2017

Fashion-MNIST is a data set of Zalando's article images, meant as a drop-in
replacement for MNIST with the same image size, the same train/test sizes and
the same IDX file format, but a harder task. The classes are:

=====  ===========
label  description
=====  ===========
0      T-shirt/top
1      Trouser
2      Pullover
3      Dress
4      Coat
5      Sandal
6      Shirt
7      Sneaker
8      Bag
9      Ankle boot
=====  ===========

**References**

- Xiao, H., Rasul, K. and Vollgraf, R. (2017). Fashion-MNIST: a Novel Image
  Dataset for Benchmarking Machine Learning Algorithms. arXiv:1708.07747.
"""


def _find_file(folder, stem):
    """Return the path of ``stem.gz`` or ``stem`` in ``folder``, or None."""
    for name in (stem + ".gz", stem):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(filename):
    """Read a file, decompressing it when it starts with the gzip magic."""
    with open(filename, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"{filename} is not a valid gzip file (corrupt or truncated): {exc}"
        ) from exc


def _parse_idx(raw, *, magic, ndim, filename="<bytes>"):
    """Parse an IDX buffer of unsigned bytes into a uint8 array.

    Parameters
    ----------
    raw : bytes
        The uncompressed file content.
    magic : int
        The expected magic number: ``0x00000803`` for 3-D image arrays,
        ``0x00000801`` for 1-D label arrays.
    ndim : int
        The number of dimensions ``magic`` encodes (its lowest byte).
    filename : str or os.PathLike, default="<bytes>"
        Used in error messages only.

    Returns
    -------
    array : ndarray of uint8
        The array the header describes. It owns its memory and is writable.

    Raises
    ------
    ValueError
        If the magic number is not ``magic`` or the payload size does not
        match the dimensions in the header.
    """
    header_size = 4 * (1 + ndim)
    if len(raw) < header_size:
        raise ValueError(
            f"{filename} is too short ({len(raw)} bytes) for an IDX header of "
            f"{header_size} bytes; the file is truncated or not an IDX file."
        )
    header = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    found = int(header[0])
    if found != magic:
        raise ValueError(
            f"{filename} has IDX magic number {found:#010x}, expected "
            f"{magic:#010x}; the file is corrupt or not the expected IDX file."
        )
    shape = tuple(int(d) for d in header[1:])
    expected = int(np.prod(shape, dtype=np.int64))
    payload = len(raw) - header_size
    if payload != expected:
        what = "truncated" if payload < expected else "has trailing bytes"
        raise ValueError(
            f"{filename} is corrupt: its header announces shape {shape} "
            f"({expected} bytes of data) but it holds {payload} bytes ({what})."
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_size)
    return data.reshape(shape).copy()


def _load_split(folder, split):
    """Read and check the images and labels of one split from ``folder``."""
    stems = _FILES[split]
    found = [_find_file(folder, stem) for stem in stems]
    missing = [stem for stem, f in zip(stems, found, strict=True) if f is None]
    if missing:
        where = (
            f"The folder {folder} does not exist."
            if not folder.is_dir()
            else f"No {' nor '.join(missing)} (.gz or plain) in {folder}."
        )
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files not found. {where} "
            + _INSTALL_HINT.format(default=DEFAULT_PATH)
        )
    images_file, labels_file = found
    images = _parse_idx(
        _read_bytes(images_file), magic=_IMAGES_MAGIC, ndim=3, filename=images_file
    )
    labels = _parse_idx(
        _read_bytes(labels_file), magic=_LABELS_MAGIC, ndim=1, filename=labels_file
    )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_file} holds {images.shape[0]} images but {labels_file} "
            f"holds {labels.shape[0]} labels."
        )
    if labels.size and labels.max() >= len(TARGET_NAMES):
        raise ValueError(
            f"{labels_file} holds label {int(labels.max())}; Fashion-MNIST "
            f"labels are in [0, {len(TARGET_NAMES) - 1}]."
        )
    return images, labels.astype(np.int64)


def _check_subset(subset, y):
    """Validate ``subset`` against the labels ``y``; return it as an int."""
    if subset is None:
        return None
    if not isinstance(subset, numbers.Integral) or isinstance(subset, bool):
        raise ValueError(
            f"subset must be None or a positive int, got {subset!r} "
            f"of type {type(subset).__name__}."
        )
    subset = int(subset)
    n_samples = y.shape[0]
    n_classes = np.unique(y).size
    if subset == n_samples:
        return subset
    if not n_classes <= subset <= n_samples - n_classes:
        raise ValueError(
            f"subset={subset} is out of range: a stratified subset of "
            f"{n_samples} images in {n_classes} classes needs between "
            f"{n_classes} and {n_samples - n_classes} images (or exactly "
            f"{n_samples}, or None, for all of them)."
        )
    return subset


def load_fashion_mnist(
    path=None, *, split="train", subset=None, random_state=0, return_X_y=False
):
    """Load the Fashion-MNIST images and labels (classification).

    Fashion-MNIST [1]_ holds 28x28 grayscale images of Zalando articles in 10
    balanced classes: 60000 in the train split and 10000 in the test split.

    =================   ==============
    Classes                         10
    Samples per class   6000 (train), 1000 (test)
    Samples total       60000 (train), 10000 (test)
    Dimensionality      28 x 28
    Features            integers 0-255
    =================   ==============

    The files are read from ``path`` and never downloaded. The default
    folder is where Debian's ``dataset-fashion-mnist`` package installs them.

    Parameters
    ----------
    path : str or os.PathLike, default=None
        The folder holding the IDX files of the Fashion-MNIST release
        (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``), each
        gzipped with a ``.gz`` suffix or plain. ``None`` means
        ``/usr/share/datasets/fashion-mnist``. Only the two files of
        ``split`` need to be present.

    split : {"train", "test"}, default="train"
        Which split of the release to load.

    subset : int, default=None
        If an int, return a stratified random subset of that many images of
        the split, in their original order, so that every class keeps its
        share. It must leave at least one image per class on both sides: at
        least the number of classes, and at most the split's size minus the
        number of classes, unless it equals the split's size. ``None``
        returns the whole split.

    random_state : int, RandomState instance or None, default=0
        Seeds the choice of the subset; ignored when ``subset`` is None.
        Pass an int for reproducible output across calls.

    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch object.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : ndarray of uint8, shape (n_samples, 28, 28)
            The images, pixel values in [0, 255]; 0 is the background.
        target : ndarray of int64, shape (n_samples,)
            The labels, in [0, 9].
        target_names : ndarray of str, shape (10,)
            The class names, indexed by label.
        DESCR : str
            The full description of the data set.

    (data, target) : tuple if ``return_X_y`` is True
        The two arrays described above.

    Raises
    ------
    FileNotFoundError
        If the folder or one of the two files of ``split`` is missing. The
        message tells how to get them.
    ValueError
        If ``split`` or ``subset`` is invalid, or if a file is corrupt: a
        wrong magic number, a size that does not match its header, a bad
        gzip stream, or labels out of range.

    See Also
    --------
    sklearn.datasets.load_digits : A smaller built-in set of 8x8 digits.

    Notes
    -----
    The arrays are read with :func:`numpy.frombuffer` after checking each
    header: images must carry the IDX magic number ``0x00000803`` (unsigned
    bytes, 3 dimensions) and labels ``0x00000801`` (unsigned bytes,
    1 dimension). Gzip compression is detected from the file content, not
    its name.

    References
    ----------
    .. [1] H. Xiao, K. Rasul and R. Vollgraf, "Fashion-MNIST: a Novel Image
       Dataset for Benchmarking Machine Learning Algorithms",
       arXiv:1708.07747, 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from skfastretrain.datasets import load_fashion_mnist
    >>> fmnist = load_fashion_mnist(subset=1000, random_state=0)
    >>> fmnist.data.shape, fmnist.data.dtype
    ((1000, 28, 28), dtype('uint8'))
    >>> np.bincount(fmnist.target)
    array([100, 100, 100, 100, 100, 100, 100, 100, 100, 100])
    >>> fmnist.target_names[[0, 9]]
    array(['T-shirt/top', 'Ankle boot'], dtype='<U11')
    >>> X_test, y_test = load_fashion_mnist(split="test", return_X_y=True)
    >>> X_test.shape, y_test.shape
    ((10000, 28, 28), (10000,))
    """
    if not isinstance(split, str) or split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    folder = DEFAULT_PATH if path is None else Path(os.fspath(path))

    images, labels = _load_split(folder, split)
    n_keep = _check_subset(subset, labels)
    if n_keep is not None and n_keep < labels.shape[0]:
        keep, _ = train_test_split(
            np.arange(labels.shape[0]),
            train_size=n_keep,
            stratify=labels,
            random_state=random_state,
        )
        keep = np.sort(keep)
        images, labels = images[keep], labels[keep]

    if return_X_y:
        return images, labels
    return Bunch(
        data=images,
        target=labels,
        target_names=np.array(TARGET_NAMES),
        DESCR=DESCR,
    )
