"""Seeded, small fixtures shared by the test modules."""

import copy
import gzip
import re
import struct

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from skorch.callbacks import Callback
from torch import nn


def make_mlp(hidden=16):
    """A feature extractor for tabular data of any width."""
    return nn.Sequential(nn.LazyLinear(hidden), nn.ReLU())


def make_tiny_cnn():
    """A small conv feature extractor with BatchNorm, fast on 8x8 images."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
    )


# Fashion-MNIST release files, written small by the dataset tests.
STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
N_FAKE = 40  # 4 images of each of the 10 classes


def idx_bytes(array, magic):
    """The IDX encoding of a uint8 array, with the given magic number."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write(folder, stem, payload, gzipped):
    """Write ``payload`` as ``stem`` (plain) or ``stem.gz`` in ``folder``."""
    if gzipped:
        (folder / (stem + ".gz")).write_bytes(gzip.compress(payload))
    else:
        (folder / stem).write_bytes(payload)


def fake_split(n=N_FAKE, seed=0):
    """Random 28x28 uint8 images and balanced labels 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    return images, labels


def write_split(folder, split, images, labels, gzipped):
    image_stem, label_stem = STEMS[split]
    write(folder, image_stem, idx_bytes(images, 0x803), gzipped)
    write(folder, label_stem, idx_bytes(labels, 0x801), gzipped)


def options(*valid, got=".*", prefix=""):
    """A regex of scikit-learn's InvalidParameterError message naming every
    option in ``valid`` (sets print in any order) and the value ``got`` (a
    regex), after ``prefix``."""
    ahead = "".join(f"(?=.*{re.escape(v)})" for v in valid)
    return f"{ahead}{prefix}must be .* Got {got} instead"


def invalid_param(param, caller, *valid, got=".*"):
    """:func:`options` for ``param`` of ``caller``."""
    return options(*valid, got=got, prefix=f"The '{param}' parameter of {caller} ")


def tiny_cnn_classifier(**kwargs):
    """A FastRetrainClassifier over make_tiny_cnn, quick to fit on digits."""
    from skfastretrain import FastRetrainClassifier

    params = {
        "backbone": make_tiny_cnn,
        "max_epochs": 1,
        "random_state": 0,
        "batch_size": 32,
        "lr": 0.05,
    }
    return FastRetrainClassifier(**{**params, **kwargs})


def tiny_cnn_regressor(**kwargs):
    """A FastRetrainRegressor over make_tiny_cnn (at a rate its squared-error
    steps stand, unlike the classifier's 0.05), quick to fit on digits."""
    from skfastretrain import FastRetrainRegressor

    params = {
        "backbone": make_tiny_cnn,
        "max_epochs": 1,
        "random_state": 0,
        "lr": 0.003,
        "device": "cpu",
    }
    return FastRetrainRegressor(**{**params, **kwargs})


class Recorder(Callback):
    """Keeps the module as training starts, every training batch, and the
    head as it stands after the last SGD step (before the epoch's solve)."""

    def initialize(self):
        self.start, self.batches, self.head = None, [], None
        return self

    def on_train_begin(self, net, **kwargs):
        self.start = copy.deepcopy(net.module_)

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            X = batch[0]
            # Weighted rows arrive as a dict of images and weights.
            X = {k: v.clone() for k, v in X.items()} if isinstance(X, dict) else X
            self.batches.append(
                (X if isinstance(X, dict) else X.clone(), batch[1].clone())
            )

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            state = net.module_.head.state_dict()
            self.head = {k: v.detach().clone() for k, v in state.items()}


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test: reductions are then blocked
    the same way in every run, and with the cores shared by other jobs,
    OpenMP synchronization can make small forwards ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits():
    """sklearn digits as (X in [0, 1], y), 1797 x 64."""
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


@pytest.fixture(scope="session")
def digit_images():
    """A seeded train/test split of the digits as uint8 8x8 images."""
    X, y = load_digits(return_X_y=True)
    images = (X.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:1200], order[1200:]
    return images[train], y[train], images[test], y[test]


@pytest.fixture
def small_images(digit_images):
    """200 training images, for tests that only need a quick fit."""
    X, y, _, _ = digit_images
    return X[:200], y[:200]


@pytest.fixture
def exact_store(monkeypatch):
    from skfastretrain.callbacks import _prefix_cache

    # The store fills from the prefix itself, not from its folded inference
    # copy: the stored fit then computes exactly what the unstored one does,
    # which a random network (constant features, an ill-conditioned head
    # solve) needs to be compared at all. test_fold.py checks the copy.
    monkeypatch.setattr(_prefix_cache, "inference_copy", lambda module, x: module)
