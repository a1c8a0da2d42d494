"""Build (or check) the Fashion-MNIST subset bundled with skfastretrain.

The subset is what ``load_fashion_mnist`` returns on the full release with
``subset=6000`` (train) and ``subset=1000`` (test) and ``random_state=0``:
600 train and 100 test images per class, stratified, in the release's order.
It is written with :func:`numpy.savez_compressed` to
``skfastretrain/datasets/data/fashion_mnist_subset.npz`` with the arrays

- ``train_images``, ``test_images``: uint8, shape (n, 28, 28);
- ``train_labels``, ``test_labels``: uint8, shape (n,);
- ``train_index``, ``test_index``: int32, shape (n,), each image's row in
  the release's split, so that anyone can compare the subset with it.

Usage, from the repository root, with the release installed (Debian:
``apt-get install dataset-fashion-mnist``)::

    python tools/make_fashion_mnist_subset.py            # rebuild the file
    python tools/make_fashion_mnist_subset.py --check    # compare, write nothing

A zip archive records file times, so a rebuilt file differs in its bytes but
not in its arrays: ``--check`` compares the arrays. Also update
``skfastretrain/datasets/data/README.md`` when the selection changes.
"""

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from skfastretrain.datasets import load_fashion_mnist
from skfastretrain.datasets._fashion_mnist import (
    BUNDLED_FILENAME,
    BUNDLED_SEED,
    BUNDLED_SIZES,
    DEFAULT_PATH,
)

OUTPUT = (
    Path(__file__).resolve().parents[1]
    / "skfastretrain"
    / "datasets"
    / "data"
    / BUNDLED_FILENAME
)


def build(release):
    """The arrays of the subset, read from the release in ``release``.

    Parameters
    ----------
    release : pathlib.Path
        The folder holding the release's four IDX files.

    Returns
    -------
    arrays : dict of str to ndarray
        The npz's arrays, by name (see the module docstring).
    """
    arrays = {}
    for split, n in BUNDLED_SIZES.items():
        # source="release": the subset must come from the release, never
        # from a previously bundled file.
        bunch = load_fashion_mnist(
            release,
            split=split,
            source="release",
            subset=n,
            random_state=BUNDLED_SEED,
        )
        counts = np.bincount(bunch.target, minlength=len(bunch.target_names))
        if not (counts == n // len(counts)).all():
            raise RuntimeError(f"{split}: class counts {counts}, not balanced.")
        arrays[f"{split}_images"] = bunch.data
        arrays[f"{split}_labels"] = bunch.target.astype(np.uint8)
        arrays[f"{split}_index"] = bunch.index.astype(np.int32)
    return arrays


def sha256(filename):
    """The SHA-256 hex digest of a file, for the provenance notes."""
    return hashlib.sha256(Path(filename).read_bytes()).hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--release",
        type=Path,
        default=DEFAULT_PATH,
        help=f"folder of the release's IDX files (default: {DEFAULT_PATH})",
    )
    parser.add_argument(
        "--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare the arrays of --output with the release; write nothing",
    )
    args = parser.parse_args(argv)

    arrays = build(args.release)
    for path in sorted(args.release.iterdir()):
        print(f"sha256 {sha256(path)}  {path.name}")
    if args.check:
        with np.load(args.output) as npz:
            stored = {name: npz[name] for name in npz.files}
        same = stored.keys() == arrays.keys() and all(
            stored[k].dtype == v.dtype and np.array_equal(stored[k], v)
            for k, v in arrays.items()
        )
        print(f"{args.output}: {'matches' if same else 'DIFFERS FROM'} the release")
        return 0 if same else 1
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
