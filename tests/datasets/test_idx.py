"""Tests for reading Fashion-MNIST's IDX files (skfastretrain.datasets._idx),
through load_fashion_mnist(path=...) on small files the tests write."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import N_FAKE, STEMS, fake_split, idx_bytes, write, write_split

from skfastretrain.datasets import load_fashion_mnist


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
    # and where to get images without the release
    assert "path=None" in message and "bundled with skfastretrain" in message


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
