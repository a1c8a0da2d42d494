"""Image-classification tasks with a train and a test split.

Each loader returns a :class:`Task`: ``X_train, y_train, X_test, y_test``
(uint8 images, ``(n, h, w)``, and int labels) and its metadata: the name,
the side in pixels the images are resized to, the number of classes and
their names. Anything chosen from a task (an alpha, a head) is chosen on
rows held out of the *train* split; the test split is for information.

- :func:`fashion`: the bundled Fashion-MNIST subset (28 px), at 64 or 224 px.
- :func:`digits`: scikit-learn's digits (8 px), split 75/25, at 64 px.
- :func:`elpv`: the ELPV solar cells (300 px, 4 defect probabilities), split
  75/25 stratified by class and cell type as in Deitsch et al. (2019). Its
  data license is non-commercial: the ``elpv-dataset`` package is a
  benchmark extra only (``pip install elpv-dataset`` or ``-e ".[bench]"``).

All splits and subsets are seeded.
"""

from dataclasses import dataclass, field
from functools import partial

import numpy as np
from sklearn.model_selection import train_test_split

from skfastretrain.datasets import load_fashion_mnist

SEED = 0

#: The class names of the 10-class tasks (Fashion-MNIST's by label).
DIGITS = tuple("0123456789")
#: ELPV's classes: the defect probability a cell was labelled with.
ELPV_CLASSES = ("0", "1/3", "2/3", "1")


@dataclass(frozen=True)
class Task:
    """A task's splits and metadata; ``arrays`` unpacks the splits."""

    name: str
    size: int
    n_classes: int
    X_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    X_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    class_names: tuple = ()

    @property
    def arrays(self):
        """``(X_train, y_train, X_test, y_test)``."""
        return self.X_train, self.y_train, self.X_test, self.y_test


def _subset(X, y, n, strata, seed):
    """A stratified random ``n`` of the rows (all of them when ``n`` is None)."""
    if n is None or n >= len(y):
        return X, y, strata
    rows, _ = train_test_split(
        np.arange(len(y)), train_size=n, stratify=strata, random_state=seed
    )
    rows = np.sort(rows)
    return X[rows], y[rows], strata[rows]


def fashion(size=64, *, n_train=4000, n_test=1000, seed=SEED):
    """The bundled Fashion-MNIST subset: ``n_train`` of its 6,000 train and
    ``n_test`` of its 1,000 test images (stratified, seeded)."""

    def load(split, n):
        return load_fashion_mnist(
            split=split, source="bundled", subset=n, random_state=seed, return_X_y=True
        )

    X_train, y_train = load("train", n_train)
    X_test, y_test = load("test", None if n_test == 1000 else n_test)
    return Task(f"fashion{size}", size, 10, X_train, y_train, X_test, y_test, DIGITS)


def digits(size=64, *, n=None, seed=SEED):
    """scikit-learn's digits as uint8 images (``x * 16``, clipped), ``n`` of
    them (all 1,797 when None) split 75/25, stratified and seeded."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    images = (X.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
    images, y, _ = _subset(images, y, n, y, seed)
    X_train, X_test, y_train, y_test = train_test_split(
        images, y, test_size=0.25, stratify=y, random_state=seed
    )
    return Task(f"digits{size}", size, 10, X_train, y_train, X_test, y_test, DIGITS)


def elpv_available():
    """Whether ``elpv-dataset`` is installed."""
    import importlib.util

    return importlib.util.find_spec("elpv_dataset") is not None


def require_elpv():
    """Raise ImportError naming the install command unless ``elpv-dataset``
    is installed."""
    if not elpv_available():
        raise ImportError(
            "the ELPV task needs the elpv-dataset package (non-commercial data "
            "license, a benchmark extra only): pip install elpv-dataset, or pip "
            'install -e ".[bench]"'
        )


def load_elpv():
    """ELPV's 2,624 images (uint8, 300x300), classes 0-3 and cell types."""
    require_elpv()
    from elpv_dataset.utils import load_dataset

    images, probs, types = load_dataset()
    y = np.rint(np.asarray(probs, dtype=float) * 3).astype(np.int64)
    return np.asarray(images, dtype=np.uint8), y, np.asarray(types).astype(str)


def elpv(size=224, *, n=None, seed=SEED):
    """ELPV split 75/25 (1,968 / 656 rows), stratified by class and cell
    type and seeded; ``n`` rows of it (stratified the same way) when given."""
    images, y, types = load_elpv()
    strata = y * 2 + (types == "poly")
    images, y, strata = _subset(images, y, n, strata, seed)
    X_train, X_test, y_train, y_test = train_test_split(
        images, y, test_size=0.25, stratify=strata, random_state=seed
    )
    return Task(f"elpv{size}", size, 4, X_train, y_train, X_test, y_test, ELPV_CLASSES)


#: The tasks by name: ``LOADERS[name](**rows)`` gives the :class:`Task`.
LOADERS = {
    "fashion64": partial(fashion, 64),
    "digits64": partial(digits, 64),
    "fashion224": partial(fashion, 224),
    "elpv224": partial(elpv, 224),
    "elpv128": partial(elpv, 128),
}
