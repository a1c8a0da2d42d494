"""Loader for the Fashion-MNIST image classification data set.

Two sources, neither downloaded: the IDX files of the Fashion-MNIST release,
by default from the folder of Debian's ``dataset-fashion-mnist`` package, and
a stratified tenth of it bundled in ``data/`` so that the loader works on a
machine with nothing but pip.
"""

import numbers
import os
from importlib import resources
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch

from ._idx import RELEASE_FILES, read_split, release_files

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

_SOURCES = ("auto", "release", "bundled")

# The bundled subset: its file in the package's data folder, and the sizes
# and seed that tools/make_fashion_mnist_subset.py built it with (also
# written down in data/README.md).
BUNDLED_FILENAME = "fashion_mnist_subset.npz"
BUNDLED_SIZES = {"train": 6000, "test": 1000}
BUNDLED_SEED = 0

_BUNDLED_NOTE = (
    " These are the images of the subset bundled with skfastretrain; the full "
    "release (source='release') has 60000 train and 10000 test images."
)

_INSTALL_HINT = (
    "Install them with `apt-get install dataset-fashion-mnist` (Debian and "
    "Ubuntu put them in {default}), or pass `path=` to a folder holding the "
    "four IDX files of the Fashion-MNIST release "
    "(https://github.com/zalandoresearch/fashion-mnist): "
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
    "and t10k-labels-idx1-ubyte, each gzipped (.gz) or not. Without them, "
    "path=None and source='auto' (the defaults) load the subset bundled with "
    "skfastretrain (6,000 train and 1,000 test images)."
)

_DESCR = """\
.. _fashion_mnist_dataset:

Fashion-MNIST dataset
---------------------

**Loaded from:** {loaded_from}

**Data Set Characteristics** (of the full release):

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


def _load_release(folder, split):
    """Read and check the images and labels of one split from ``folder``."""
    found = release_files(folder, split)
    missing = [s for s, f in zip(RELEASE_FILES[split], found, strict=True) if f is None]
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
    images, labels = read_split(*found, n_classes=len(TARGET_NAMES))
    return images, labels, np.arange(labels.shape[0])


def _bundled_file():
    """The bundled subset's npz, as an importlib.resources Traversable."""
    # Through importlib.resources rather than __file__, so that the file is
    # found in any installed layout (editable, wheel, zip).
    return resources.files(__package__).joinpath("data").joinpath(BUNDLED_FILENAME)


def _load_bundled(split):
    """Read one split of the subset bundled with the package."""
    ref = _bundled_file()
    try:
        with ref.open("rb") as f, np.load(f) as npz:
            images = npz[f"{split}_images"]
            labels = npz[f"{split}_labels"].astype(np.int64)
            index = npz[f"{split}_index"].astype(np.int64)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"The Fashion-MNIST subset bundled with skfastretrain is missing "
            f"({ref}): the installation is incomplete; reinstall skfastretrain."
        ) from exc
    return images, labels, index


def _check_subset(subset, y, *, note=""):
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
            f"{n_samples}, or None, for all of them).{note}"
        )
    return subset


def _loaded_from(source, location, split, n_split, n_keep):
    """The DESCR paragraph that says which data were loaded."""
    if source == "release":
        text = (
            f"the full Fashion-MNIST release in {location} ({split} split, "
            f"{n_split} images)."
        )
    else:
        text = (
            f"the subset bundled with skfastretrain ({location}), "
            f"{BUNDLED_SIZES['train']:,} train / {BUNDLED_SIZES['test']:,} test "
            f"images, stratified (10% of each class, seed {BUNDLED_SEED}, in "
            f"the release's order); {split} split, {n_split} images."
        )
    if n_keep is not None and n_keep < n_split:
        text += f" Of these, a stratified random subset of {n_keep} is returned."
    return text


def load_fashion_mnist(
    path=None,
    *,
    split="train",
    source="auto",
    subset=None,
    random_state=0,
    return_X_y=False,
):
    """Load the Fashion-MNIST images and labels (classification).

    Fashion-MNIST [1]_ holds 28x28 grayscale images of Zalando articles in 10
    balanced classes: 60000 in the train split and 10000 in the test split.
    Nothing is downloaded: the release is read from a local folder (by
    default that of Debian's ``dataset-fashion-mnist``), and a stratified
    tenth of it is bundled with skfastretrain, as scikit-learn bundles its
    digits, so that this loader works without the release.

    =================   ================================================
    Classes             10
    Samples per class   6000 (train), 1000 (test); bundled: 600, 100
    Samples total       60000 (train), 10000 (test); bundled: 6000, 1000
    Dimensionality      28 x 28
    Features            integers 0-255
    =================   ================================================

    Parameters
    ----------
    path : str or os.PathLike, default=None
        The folder holding the IDX files of the Fashion-MNIST release
        (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``), each
        gzipped with a ``.gz`` suffix or plain. Only the two files of
        ``split`` need to be present. When given, only this folder is read.
        ``None`` means ``/usr/share/datasets/fashion-mnist`` for the
        release, with the fallback that ``source`` describes.

    split : {"train", "test"}, default="train"
        Which split to load.

    source : {"auto", "release", "bundled"}, default="auto"
        Where the images come from:

        - ``"release"``: the full release in ``path`` (or the default
          folder); a missing file is an error.
        - ``"bundled"``: the subset bundled with skfastretrain, even when
          the release is installed. ``path`` must then be None.
        - ``"auto"``: with ``path`` given, as ``"release"``. With ``path``
          None, the release in the default folder when the two files of
          ``split`` are there, and the bundled subset otherwise.

    subset : int, default=None
        If an int, return a stratified random subset of that many images of
        the split, in their original order, so that every class keeps its
        share. It must leave at least one image per class on both sides: at
        least the number of classes, and at most the split's size minus the
        number of classes, unless it equals the split's size. The split's
        size is that of the source used (6000 or 1000 when bundled).
        ``None`` returns the whole split.

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
        index : ndarray of int64, shape (n_samples,)
            Each image's row in the release's split, increasing.
        source : {"release", "bundled"}
            Which source the images come from (``source="auto"`` resolved).
        path : str
            The folder of the release, or the bundled ``.npz`` file, read.
        DESCR : str
            The description of the data set; its "Loaded from" paragraph,
            under the title, says which source was read.

    (data, target) : tuple if ``return_X_y`` is True
        The two arrays described above.

    Raises
    ------
    FileNotFoundError
        If the release is to be read (``path`` given, or
        ``source="release"``) and the folder or one of the two files of
        ``split`` is missing. The message tells how to get them.
    ValueError
        If ``split``, ``source`` or ``subset`` is invalid, if ``path`` is
        given with ``source="bundled"``, or if a file of the release is
        corrupt: a wrong magic number, a size that does not match its
        header, a bad gzip stream, or labels out of range. A corrupt file in
        the default folder is an error with ``source="auto"`` too: only
        missing files fall back to the bundled subset.

    See Also
    --------
    sklearn.datasets.load_digits : A smaller built-in set of 8x8 digits.

    Notes
    -----
    With ``source="auto"`` the number of images depends on the machine: code
    that needs the full release (a benchmark, say) should pass
    ``source="release"``, code that must give the same result everywhere
    ``source="bundled"``.

    The bundled subset is this function's ``subset=6000`` (train) and
    ``subset=1000`` (test) of the release with ``random_state=0``: 600 and
    100 images per class in their original order, stored with their rows in
    the release. ``tools/make_fashion_mnist_subset.py`` in the source
    repository rebuilds it; its provenance and Fashion-MNIST's MIT license
    (Zalando SE) are in the package's ``datasets/data/README.md``.

    The release's IDX headers are checked before reading: images must carry
    the magic number ``0x00000803`` (unsigned bytes, 3 dimensions) and
    labels ``0x00000801`` (1 dimension). Gzip compression is detected from
    the file content, not its name.

    References
    ----------
    .. [1] H. Xiao, K. Rasul and R. Vollgraf, "Fashion-MNIST: a Novel Image
       Dataset for Benchmarking Machine Learning Algorithms",
       arXiv:1708.07747, 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from skfastretrain.datasets import load_fashion_mnist
    >>> fmnist = load_fashion_mnist(source="bundled")
    >>> fmnist.source, fmnist.data.shape, fmnist.data.dtype
    ('bundled', (6000, 28, 28), dtype('uint8'))
    >>> np.bincount(fmnist.target)
    array([600, 600, 600, 600, 600, 600, 600, 600, 600, 600])
    >>> fmnist.target_names[[0, 9]]
    array(['T-shirt/top', 'Ankle boot'], dtype='<U11')
    >>> X, y = load_fashion_mnist(source="bundled", subset=1000, return_X_y=True)
    >>> X.shape, np.bincount(y)
    ((1000, 28, 28), array([100, 100, 100, 100, 100, 100, 100, 100, 100, 100]))

    With the defaults, the full release when it is installed, else the
    bundled subset (10000 or 1000 test images):

    >>> test = load_fashion_mnist(split="test")
    >>> test.source in ("release", "bundled"), test.data.shape[1:]
    (True, (28, 28))
    """
    if not isinstance(split, str) or split not in RELEASE_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    if not isinstance(source, str) or source not in _SOURCES:
        raise ValueError(
            f"source must be 'auto', 'release' or 'bundled', got {source!r}."
        )
    if path is not None and source == "bundled":
        raise ValueError(
            f"path={path!r} cannot be combined with source='bundled': the "
            "bundled subset is read from the package. Pass path=None, or "
            "source='release' to read the release in that folder."
        )

    folder = DEFAULT_PATH if path is None else Path(os.fspath(path))
    if source == "auto" and path is not None:
        source = "release"  # a folder the user named is read, or raises
    elif source == "auto":
        # Only missing files fall back: a corrupt release raises below.
        complete = None not in release_files(folder, split)
        source = "release" if complete else "bundled"

    if source == "release":
        images, labels, index = _load_release(folder, split)
        location = str(folder)
    else:
        images, labels, index = _load_bundled(split)
        location = str(_bundled_file())

    n_split = labels.shape[0]
    note = _BUNDLED_NOTE if source == "bundled" else ""
    n_keep = _check_subset(subset, labels, note=note)
    if n_keep is not None and n_keep < n_split:
        keep, _ = train_test_split(
            np.arange(n_split),
            train_size=n_keep,
            stratify=labels,
            random_state=random_state,
        )
        keep = np.sort(keep)
        images, labels, index = images[keep], labels[keep], index[keep]

    if return_X_y:
        return images, labels
    return Bunch(
        data=images,
        target=labels,
        target_names=np.array(TARGET_NAMES),
        index=index,
        source=source,
        path=location,
        DESCR=_DESCR.format(
            loaded_from=_loaded_from(source, location, split, n_split, n_keep)
        ),
    )
