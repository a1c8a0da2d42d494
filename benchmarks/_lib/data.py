"""The settings of the transfer benchmark and the rows of a run.

A setting reads Fashion-MNIST (the transfer benchmark's own settings) or,
with a ``task`` key, one of the tasks of :mod:`benchmarks._lib.tasks` (the
four-task benchmark, ``benchmarks.tasks``).
"""

import numpy as np
from sklearn.model_selection import train_test_split

from skfastretrain.datasets import load_fashion_mnist

from . import tasks

SEED = 0
BATCH_SIZE = 32
IMAGE_SIZE = 64

#: The settings. Every method of one run uses the same one; ``image_size``
#: is 64 px unless a setting says otherwise, and ``source`` the full
#: Fashion-MNIST release (``load_fashion_mnist(source=...)``).
SETTINGS = {
    "quick": {"n_train": 1500, "n_test": 500, "epochs": 2},
    "full": {"n_train": 10000, "n_test": 2000, "epochs": 4},
    # The second setting: Lite0's native 224 px, on fewer images to keep
    # the time bounded (12x the pixels of 64 px).
    "native": {"n_train": 1000, "n_test": 1000, "epochs": 3, "image_size": 224},
    # Checks the code: the release if it is installed, else the bundled subset.
    "smoke": {"n_train": 100, "n_test": 50, "epochs": 2, "source": "auto"},
}


#: The held-out share of a task's train split that the tuning reads.
TASK_HOLDOUT = 0.2


def image_size(setting):
    """The side, in pixels, that a setting resizes its images to."""
    return setting.get("image_size", IMAGE_SIZE)


def n_classes_of(y):
    """The number of classes of encoded labels ``y`` (0 to k - 1)."""
    return int(np.max(y)) + 1


def _task_data(setting, holdout):
    task = tasks.LOADERS[setting["task"]](**setting.get("rows", {}))
    if not holdout:
        return task.arrays
    fit, hold = train_test_split(
        np.arange(len(task.y_train)),
        test_size=TASK_HOLDOUT,
        stratify=task.y_train,
        random_state=SEED,
    )
    X, y = task.X_train, task.y_train
    return X[fit], y[fit], X[hold], y[hold]


def _load(setting, split, **kwargs):
    return load_fashion_mnist(
        split=split, source=setting.get("source", "release"), return_X_y=True, **kwargs
    )


def load_data(setting, *, holdout=False):
    """Train and test images (uint8, (n, 28, 28)) and labels.

    With ``holdout=True`` (the pilots) the evaluation rows come from the
    train split too, drawn with another seed, so choosing hyperparameters
    never looks at the test split. A task's holdout is
    :data:`TASK_HOLDOUT` of its train split (stratified, seeded).
    """
    if "task" in setting:
        return _task_data(setting, holdout)
    n_train, n_test = setting["n_train"], setting["n_test"]
    if holdout:
        X, y = _load(setting, "train", subset=n_train + n_test, random_state=1)
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=n_test, stratify=y, random_state=SEED
        )
        return X_tr, y_tr, X_te, y_te
    X_tr, y_tr = _load(setting, "train", subset=n_train, random_state=SEED)
    X_te, y_te = _load(setting, "test", subset=n_test, random_state=SEED)
    return X_tr, y_tr, X_te, y_te


def validation_rows(X_train, n, setting, *, seed=SEED):
    """``n`` images of the train split (and labels) not among ``X_train``.

    For a method that needs a validation set (``prune_filters``): rows the
    model was trained on would make its accuracy look better than it is, and
    the test split stays unseen.
    """
    X, y = _load(setting, "train")
    used = {img.tobytes() for img in X_train}
    free = np.flatnonzero([img.tobytes() not in used for img in X])
    rows = np.random.default_rng(seed).choice(free, size=n, replace=False)
    return X[rows], y[rows]
