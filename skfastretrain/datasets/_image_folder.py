"""Loader for a folder of images in one subfolder per class.

The layout is that of torchvision's ``ImageFolder``: ``root/<class>/<file>``.
:func:`scan_image_folder` lists it; ``FastRetrainClassifier.fit(folder)``
and :func:`load_image_folder` both read a folder through it, so that they
see the same files in the same order.
"""

import os

import numpy as np
from sklearn.utils import Bunch
from torchvision.datasets.folder import IMG_EXTENSIONS

from .._data import ImageDataset

__all__ = ["IMG_EXTENSIONS", "load_image_folder", "scan_image_folder"]

_MODES = {"RGB": 3, "L": 1}

_DESCR = """\
.. _image_folder_dataset:

Image folder
------------

**Loaded from:** {root}

:Number of Instances: {n_images}
:Number of Classes: {n_classes}
:Images per class: {per_class}
:File types: {extensions} (any case)
{images}
Each class is a subfolder of the root, named after it; its image files, in
its subfolders too, are listed in sorted order, as torchvision's ImageFolder
lists them. Hidden files and folders (names starting with ".") are skipped.
"""


def _is_image(name):
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _class_files(folder):
    """The image files under ``folder``, in ImageFolder's order."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        # Followed links could lead back up the tree: walk each folder once.
        seen.add(os.path.realpath(dirpath))
        dirnames[:] = [
            d
            for d in dirnames
            if not d.startswith(".")
            and os.path.realpath(os.path.join(dirpath, d)) not in seen
        ]
        names = sorted(f for f in filenames if _is_image(f))
        found.append((dirpath, [os.path.join(dirpath, f) for f in names]))
    # ImageFolder sorts the walk by folder path, then each folder's files.
    return [path for _, paths in sorted(found) for path in paths]


def scan_image_folder(root):
    """The image files and classes of ``root/<class>/<file>``.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding one subfolder per class.

    Returns
    -------
    filenames : ndarray of str
        The image files, class by class in sorted class order.
    target : ndarray of int64
        Each file's class, an index into ``target_names``.
    target_names : ndarray of str
        The class subfolders' names, sorted.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist.
    ValueError
        If ``root`` is a file, has no class subfolders, or one of them holds
        no image file (named in the message).
    """
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(
            f"An image folder must be a str or os.PathLike, got {type(root).__name__}."
        )
    shown = os.fspath(root)
    if not os.path.exists(root):
        raise FileNotFoundError(f"Image folder not found: {shown!r}.")
    if not os.path.isdir(root):
        raise ValueError(
            f"{shown!r} is a file, not a folder. A str or path X is read as a "
            "folder with one subfolder of images per class; pass a list of "
            f"paths for image files (e.g. [{shown!r}])."
        )
    with os.scandir(root) as entries:
        entries = list(entries)
    classes = sorted(e.name for e in entries if e.is_dir() and e.name[0] != ".")
    if not classes:
        loose = sum(e.is_file() and _is_image(e.name) for e in entries)
        raise ValueError(
            f"The folder {shown!r} has no class subfolders: it must hold one "
            "subfolder of images per class (root/<class>/<image file>, the "
            "layout of torchvision's ImageFolder)"
            + (
                f"; it holds {loose} image files directly. Move them into "
                "class subfolders, or pass their paths as X with labels y."
                if loose
                else "."
            )
        )
    filenames, target = [], []
    for index, name in enumerate(classes):
        files = _class_files(os.path.join(root, name))
        if not files:
            raise ValueError(
                f"The class folder {name!r} in {shown!r} has no image files "
                f"({', '.join(IMG_EXTENSIONS)}, in any case); add images to it "
                "or remove it."
            )
        filenames += files
        target += [index] * len(files)
    return np.array(filenames), np.array(target, dtype=np.int64), np.array(classes)


def _decode(filenames, size, mode):
    """The images of ``filenames`` as one (n, H, W, C) uint8 array."""
    # Through ImageDataset, so that files are decoded and resized exactly as
    # the estimator reads them.
    images = ImageDataset(filenames, size=size, channels=_MODES[mode])
    first = images.size
    data = np.empty((len(filenames), *first, _MODES[mode]), dtype=np.uint8)
    for i, path in enumerate(filenames):
        x = images._load(i) if size is None else images[i][0]
        if tuple(x.shape[-2:]) != first:
            raise ValueError(
                f"The images differ in size: {str(filenames[0])!r} is "
                f"{first[0]}x{first[1]} (height x width) but {str(path)!r} is "
                f"{x.shape[-2]}x{x.shape[-1]}. Pass size=(height, width) to "
                "resize them all to one size."
            )
        data[i] = x.expand(_MODES[mode], -1, -1).permute(1, 2, 0).numpy()
    return data


def load_image_folder(
    root, *, load_images=False, size=None, mode="RGB", return_X_y=False
):
    """Load the image files of a folder of one subfolder per class.

    The layout is that of torchvision's :class:`~torchvision.datasets.ImageFolder`
    and, for text, of :func:`sklearn.datasets.load_files`::

        root/cat/001.png
        root/cat/002.jpg
        root/dog/sub/003.JPEG

    Each subfolder of ``root`` is a class named after it; its image files
    (the extensions of ``IMG_EXTENSIONS``, in any case; in its own
    subfolders too) are its samples. ``FastRetrainClassifier.fit(root)``
    reads a folder through this listing, so a folder fits as its
    ``filenames`` with the labels ``target_names[target]``.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding one subfolder per class.
    load_images : bool, default=False
        Also decode the images into ``data``. The file paths alone can be
        passed to ``fit`` and ``predict``, which read the files batch by
        batch.
    size : tuple of (int, int) or None, default=None
        With ``load_images``, resize every image to this (height, width),
        bilinear and antialiased, as the estimator resizes files. None needs
        all images to be of one size.
    mode : {"RGB", "L"}, default="RGB"
        With ``load_images``, decode the images as RGB (3 channels) or as
        grayscale (``"L"``, 1 channel).
    return_X_y : bool, default=False
        If True, return ``(data, target)`` (``load_images=True``) or
        ``(filenames, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        filenames : ndarray of str, shape (n_samples,)
            The image files, class by class in sorted class order, each
            class's files in sorted order (ImageFolder's order).
        target : ndarray of int64, shape (n_samples,)
            Each file's class, an index into ``target_names``.
        target_names : ndarray of str, shape (n_classes,)
            The class subfolders' names, sorted.
        data : ndarray of uint8, shape (n_samples, height, width, channels)
            The decoded images; only with ``load_images=True``.
        DESCR : str
            A description of the folder read.

    (data, target) or (filenames, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist.
    ValueError
        If ``root`` is a file, if it has no class subfolders, if a class
        subfolder holds no image file (it is named), if ``mode`` or ``size``
        is invalid, if a file cannot be decoded, or if the images differ in
        size and ``size`` is None.

    See Also
    --------
    sklearn.datasets.load_files : The same layout, for text files.

    Notes
    -----
    Hidden files and folders, whose names start with ``"."`` (such as
    ``.ipynb_checkpoints``), are skipped; ImageFolder would list them.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from PIL import Image
    >>> from skfastretrain.datasets import load_image_folder
    >>> root = Path(tempfile.mkdtemp())
    >>> for name, value in [("cat", 0), ("cat", 50), ("dog", 255)]:
    ...     (root / name).mkdir(exist_ok=True)
    ...     image = Image.fromarray(np.full((4, 6), value, np.uint8))
    ...     image.save(root / name / f"{value}.png")
    >>> folder = load_image_folder(root, load_images=True, mode="L")
    >>> [Path(f).name for f in folder.filenames]
    ['0.png', '50.png', '255.png']
    >>> folder.target, folder.target_names
    (array([0, 0, 1]), array(['cat', 'dog'], dtype='<U3'))
    >>> folder.data.shape, folder.data.dtype
    ((3, 4, 6, 1), dtype('uint8'))
    """
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}.")
    if size is not None:
        if (
            np.ndim(size) != 1
            or len(size) != 2
            or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
                for s in size
            )
        ):
            raise ValueError(
                f"size must be None or a pair of positive ints, got {size!r}."
            )
        size = (int(size[0]), int(size[1]))
    filenames, target, target_names = scan_image_folder(root)
    data = _decode(filenames, size, mode) if load_images else None
    if return_X_y:
        return (filenames if data is None else data), target
    counts = np.bincount(target, minlength=len(target_names))
    images = ""
    if data is not None:
        how = "" if size is None else ", resized"
        images = (
            f":Images: {data.shape[1]}x{data.shape[2]} {mode}{how}, uint8 in [0, 255]\n"
        )
    bunch = Bunch(
        filenames=filenames,
        target=target,
        target_names=target_names,
        DESCR=_DESCR.format(
            root=os.fspath(root),
            n_images=len(filenames),
            n_classes=len(target_names),
            per_class=", ".join(
                f"{n} {c}" for n, c in zip(counts, target_names, strict=True)
            ),
            extensions=", ".join(IMG_EXTENSIONS),
            images=images,
        ),
    )
    if data is not None:
        bunch.data = data
    return bunch
