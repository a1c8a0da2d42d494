"""Tests for skfastretrain.datasets.load_fashion_mnist.

The real-data tests read Debian's ``dataset-fashion-mnist`` files from
/usr/share/datasets/fashion-mnist; the format tests write small IDX files of
their own into ``tmp_path``.
"""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from sklearn.utils import Bunch

from skfastretrain.datasets import load_fashion_mnist
from skfastretrain.datasets._fashion_mnist import DEFAULT_PATH, TARGET_NAMES

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


@pytest.fixture(scope="module")
def fmnist_train():
    return load_fashion_mnist()


# Real data, as Debian's dataset-fashion-mnist installs it.


def test_real_train_split(fmnist_train):
    assert isinstance(fmnist_train, Bunch)
    X, y = fmnist_train.data, fmnist_train.target
    assert X.shape == (60000, 28, 28)
    assert X.dtype == np.uint8
    assert y.shape == (60000,)
    assert y.dtype == np.int64
    assert y.min() == 0 and y.max() == 9
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 6000))
    assert X.max() == 255 and X.min() == 0
    assert list(fmnist_train.target_names) == list(TARGET_NAMES)
    assert fmnist_train.target_names[9] == "Ankle boot"
    assert "Fashion-MNIST" in fmnist_train.DESCR


def test_real_test_split():
    X, y = load_fashion_mnist(split="test", return_X_y=True)
    assert X.shape == (10000, 28, 28)
    assert y.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 1000))


@pytest.mark.parametrize("random_state", [0, 7])
@pytest.mark.parametrize("subset", [10, 500, 1230])
def test_real_stratified_subset(fmnist_train, subset, random_state):
    X, y = load_fashion_mnist(subset=subset, random_state=random_state, return_X_y=True)
    assert X.shape == (subset, 28, 28) and X.dtype == np.uint8
    assert y.shape == (subset,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=10)
    # Stratified on balanced classes: counts differ by at most one.
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == subset
    # Every image of the subset is the full split's image with the same label.
    full_X, full_y = fmnist_train.data, fmnist_train.target
    flat = full_X.reshape(len(full_X), -1)
    first = np.flatnonzero((flat == X[0].ravel()).all(axis=1))
    assert first.size >= 1 and y[0] in full_y[first]


def test_real_subset_is_reproducible():
    a = load_fashion_mnist(split="test", subset=100, random_state=3)
    b = load_fashion_mnist(split="test", subset=100, random_state=3)
    c = load_fashion_mnist(split="test", subset=100, random_state=4)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.target, b.target)
    assert not np.array_equal(a.data, c.data)


def test_default_path_is_debian_folder():
    assert Path("/usr/share/datasets/fashion-mnist") == DEFAULT_PATH
    bunch = load_fashion_mnist(DEFAULT_PATH, split="test", subset=20)
    assert bunch.data.shape == (20, 28, 28)


# IDX files written by the tests.


@pytest.mark.parametrize("path_type", [str, Path])
@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_roundtrip(tmp_path, split, gzipped, path_type):
    images, labels = fake_split(seed=1 if split == "test" else 0)
    write_split(tmp_path, split, images, labels, gzipped)
    bunch = load_fashion_mnist(path_type(tmp_path), split=split)
    np.testing.assert_array_equal(bunch.data, images)
    np.testing.assert_array_equal(bunch.target, labels)
    assert bunch.data.dtype == np.uint8 and bunch.target.dtype == np.int64
    assert bunch.data.flags.writeable


def test_gzip_detected_from_content_not_name(tmp_path):
    images, labels = fake_split()
    image_stem, label_stem = STEMS["train"]
    # gzip content under the plain name, plain content under the .gz name.
    (tmp_path / image_stem).write_bytes(gzip.compress(idx_bytes(images, 0x803)))
    (tmp_path / (label_stem + ".gz")).write_bytes(idx_bytes(labels, 0x801))
    X, y = load_fashion_mnist(os.fspath(tmp_path), return_X_y=True)
    np.testing.assert_array_equal(X, images)
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize("subset", [10, 25, N_FAKE])
def test_subset_on_written_files(tmp_path, subset, gzipped):
    images, labels = fake_split()
    write_split(tmp_path, "train", images, labels, gzipped)
    X, y = load_fashion_mnist(tmp_path, subset=subset, return_X_y=True)
    assert X.shape == (subset, 28, 28)
    counts = np.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1
    # The subset keeps the file order.
    rows = [int(np.flatnonzero((images == x).all(axis=(1, 2)))[0]) for x in X]
    assert rows == sorted(rows)
    np.testing.assert_array_equal(labels[rows], y)


def test_only_the_requested_split_is_needed(tmp_path):
    images, labels = fake_split()
    write_split(tmp_path, "test", images, labels, gzipped=True)
    assert load_fashion_mnist(tmp_path, split="test").data.shape == (N_FAKE, 28, 28)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path, split="train")


# Corrupt files.


@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize(
    "which, magic, match",
    [
        ("images", 0x801, "magic number 0x00000801, expected 0x00000803"),
        ("images", 0x0D03, "magic number"),
        ("labels", 0x803, "magic number 0x00000803, expected 0x00000801"),
        ("labels", 0xDEADBEEF, "magic number"),
    ],
)
def test_bad_magic_raises(tmp_path, which, magic, match, gzipped):
    images, labels = fake_split()
    write_split(tmp_path, "train", images, labels, gzipped)
    if which == "images":
        # Keep a 3-D header so only the magic number is wrong.
        payload = idx_bytes(images, magic)
        stem = STEMS["train"][0]
    else:
        payload = idx_bytes(labels, magic)
        stem = STEMS["train"][1]
    write(tmp_path, stem, payload, gzipped)
    with pytest.raises(ValueError, match=match):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize(
    "which, cut, match",
    [
        ("images", 1, "truncated"),
        ("images", 28 * 28 + 5, "truncated"),
        ("images", 10**9, "too short"),  # not even a whole header left
        ("labels", 3, "truncated"),
        ("labels", 10**9, "too short"),
    ],
)
def test_truncated_file_raises(tmp_path, which, cut, match, gzipped):
    images, labels = fake_split()
    write_split(tmp_path, "train", images, labels, gzipped)
    if which == "images":
        index, payload = 0, idx_bytes(images, 0x803)
    else:
        index, payload = 1, idx_bytes(labels, 0x801)
    # Drop the last ``cut`` bytes, keeping at least 5 (less than any header).
    payload = payload[: max(len(payload) - cut, 5)]
    write(tmp_path, STEMS["train"][index], payload, gzipped)
    with pytest.raises(ValueError, match=match):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize(
    "corruption, match",
    [
        ("trailing", "trailing bytes"),
        ("gzip_cut", "not a valid gzip file"),
        ("count_mismatch", "40 images but .* 39 labels"),
        ("label_range", "label 10"),
    ],
)
def test_inconsistent_files_raise(tmp_path, corruption, match):
    images, labels = fake_split()
    write_split(tmp_path, "train", images, labels, gzipped=True)
    image_file = tmp_path / (STEMS["train"][0] + ".gz")
    label_file = tmp_path / (STEMS["train"][1] + ".gz")
    if corruption == "trailing":
        image_file.write_bytes(gzip.compress(idx_bytes(images, 0x803) + b"\0"))
    elif corruption == "gzip_cut":
        data = image_file.read_bytes()
        image_file.write_bytes(data[: len(data) // 2])
    elif corruption == "count_mismatch":
        label_file.write_bytes(gzip.compress(idx_bytes(labels[:-1], 0x801)))
    else:
        bad = labels.copy()
        bad[3] = 10
        label_file.write_bytes(gzip.compress(idx_bytes(bad, 0x801)))
    with pytest.raises(ValueError, match=match):
        load_fashion_mnist(tmp_path)


# Missing files and bad arguments.


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("make_folder", [True, False])
def test_missing_files_raise_with_install_hint(tmp_path, make_folder, split):
    folder = tmp_path / "fashion"
    if make_folder:
        folder.mkdir()
    with pytest.raises(FileNotFoundError) as excinfo:
        load_fashion_mnist(folder, split=split)
    message = str(excinfo.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "path=" in message
    assert str(folder) in message
    assert ("does not exist" in message) != make_folder


@pytest.mark.parametrize("return_X_y", [True, False])
@pytest.mark.parametrize("split", ["valid", "Train", "", None, 0])
def test_bad_split_raises(tmp_path, split, return_X_y):
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_fashion_mnist(tmp_path, split=split, return_X_y=return_X_y)


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize(
    "subset, match",
    [
        (0, "out of range"),
        (-5, "out of range"),
        (9, "out of range"),  # fewer than the 10 classes
        (N_FAKE - 5, "out of range"),  # leaves fewer than 10 out
        (N_FAKE + 1, "out of range"),
        (2.5, "positive int"),
        (10.0, "positive int"),
        ("10", "positive int"),
        (True, "positive int"),
    ],
)
def test_bad_subset_raises(tmp_path, subset, match, split):
    images, labels = fake_split()
    write_split(tmp_path, split, images, labels, gzipped=False)
    with pytest.raises(ValueError, match=match):
        load_fashion_mnist(tmp_path, split=split, subset=subset)


def test_numpy_integer_subset(tmp_path):
    images, labels = fake_split()
    write_split(tmp_path, "train", images, labels, gzipped=False)
    X, _ = load_fashion_mnist(tmp_path, subset=np.int64(20), return_X_y=True)
    assert X.shape == (20, 28, 28)
