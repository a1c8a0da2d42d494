"""Reading IDX files, the format of the MNIST and Fashion-MNIST releases.

An IDX file is a big-endian header (a magic number whose lowest byte is the
number of dimensions, then one 32-bit size per dimension) followed by the
raw array. Both releases ship four of them, gzipped, under the same names.
"""

import gzip
import zlib

import numpy as np

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_GZIP_MAGIC = b"\x1f\x8b"

# File name stems of the releases, per split: (images, labels).
RELEASE_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_file(folder, stem):
    """Return the path of ``stem.gz`` or ``stem`` in ``folder``, or None.

    Parameters
    ----------
    folder : pathlib.Path
        The folder to look in.
    stem : str
        The file name without the ``.gz`` suffix.

    Returns
    -------
    path : pathlib.Path or None
        The gzipped file when both exist, as the releases ship them gzipped.
    """
    for name in (stem + ".gz", stem):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def release_files(folder, split):
    """The (images, labels) files of ``split`` in ``folder``, None if missing.

    Parameters
    ----------
    folder : pathlib.Path
        The folder to look in.
    split : {"train", "test"}
        The split whose two files to find.

    Returns
    -------
    files : tuple of (pathlib.Path or None)
        The images file and the labels file, each None when missing.
    """
    return tuple(find_file(folder, stem) for stem in RELEASE_FILES[split])


def read_bytes(filename):
    """Read a file, decompressing it when it starts with the gzip magic.

    Parameters
    ----------
    filename : str or os.PathLike
        The file to read.

    Returns
    -------
    raw : bytes
        The uncompressed content.

    Raises
    ------
    ValueError
        If the file starts with the gzip magic but is not a valid gzip stream.
    """
    with open(filename, "rb") as f:
        raw = f.read()
    # Checked on the content, not the name: renamed or re-compressed copies
    # of the release are common.
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"{filename} is not a valid gzip file (corrupt or truncated): {exc}"
        ) from exc


def parse_idx(raw, *, magic, ndim, filename="<bytes>"):
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
    # A copy, so that callers get a writable array that does not keep the
    # whole decompressed buffer alive.
    return data.reshape(shape).copy()


def read_split(images_file, labels_file, *, n_classes):
    """Read and cross-check the image and label files of one split.

    Parameters
    ----------
    images_file, labels_file : pathlib.Path
        The IDX files of the images (3-D) and of their labels (1-D), gzipped
        or not.
    n_classes : int
        Labels must lie in ``[0, n_classes)``.

    Returns
    -------
    images : ndarray of uint8, shape (n_samples, height, width)
        The images, in the file's order.
    labels : ndarray of int64, shape (n_samples,)
        Their labels.

    Raises
    ------
    ValueError
        If a file is corrupt (see :func:`parse_idx` and :func:`read_bytes`),
        the two files hold different numbers of samples, or a label is out
        of range.
    """
    images = parse_idx(
        read_bytes(images_file), magic=IMAGES_MAGIC, ndim=3, filename=images_file
    )
    labels = parse_idx(
        read_bytes(labels_file), magic=LABELS_MAGIC, ndim=1, filename=labels_file
    )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_file} holds {images.shape[0]} images but {labels_file} "
            f"holds {labels.shape[0]} labels."
        )
    if labels.size and labels.max() >= n_classes:
        raise ValueError(
            f"{labels_file} holds label {int(labels.max())}; the labels of "
            f"its {n_classes} classes are in [0, {n_classes - 1}]."
        )
    return images, labels.astype(np.int64)
