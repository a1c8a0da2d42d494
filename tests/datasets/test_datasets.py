"""Tests for skfastretrain.datasets.load_fashion_mnist.

Most tests run anywhere: they read the subset bundled with the package, or
small IDX files they write into ``tmp_path`` (also put in place of Debian's
folder by monkeypatching ``DEFAULT_PATH``). The tests that compare with the
full release read Debian's ``dataset-fashion-mnist`` files from
/usr/share/datasets/fashion-mnist and are skipped where it is not installed.
"""

from pathlib import Path

import numpy as np
import pytest
from conftest import N_FAKE, STEMS, fake_split, idx_bytes, write, write_split
from sklearn.utils import Bunch

from skfastretrain.datasets import _fashion_mnist, load_fashion_mnist
from skfastretrain.datasets._fashion_mnist import (
    BUNDLED_SIZES,
    DEFAULT_PATH,
    TARGET_NAMES,
)
from skfastretrain.datasets._idx import release_files

RELEASE_SIZES = {"train": 60000, "test": 10000}
BUNDLED_NPZ = (
    Path(_fashion_mnist.__file__).parent / "data" / _fashion_mnist.BUNDLED_FILENAME
)
# Debian's folder, as it is when the module is imported, before any test
# monkeypatches DEFAULT_PATH.
RELEASE_PATH = DEFAULT_PATH


def release_installed():
    return all(None not in release_files(RELEASE_PATH, split) for split in STEMS)


@pytest.fixture
def no_release(tmp_path, monkeypatch):
    """Point the default folder to one that does not exist."""
    missing = tmp_path / "missing"
    monkeypatch.setattr(_fashion_mnist, "DEFAULT_PATH", missing)
    return missing


@pytest.fixture
def fake_release(tmp_path, monkeypatch):
    """Small IDX files of both splits, in place of Debian's folder."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    splits = {"train": fake_split(seed=0), "test": fake_split(seed=1)}
    for split, (images, labels) in splits.items():
        write_split(folder, split, images, labels, gzipped=True)
    monkeypatch.setattr(_fashion_mnist, "DEFAULT_PATH", folder)
    return folder, splits


@pytest.fixture(scope="module")
def release():
    """The full release, both splits, from Debian's folder."""
    if not release_installed():
        pytest.skip(
            f"the Fashion-MNIST release is not installed in {RELEASE_PATH} "
            "(apt-get install dataset-fashion-mnist)"
        )
    return {
        split: load_fashion_mnist(RELEASE_PATH, split=split, source="release")
        for split in STEMS
    }


def assert_stratified(y, n):
    counts = np.bincount(y, minlength=10)
    # Stratified on balanced classes: counts differ by at most one.
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == n


# The subset bundled with the package: runs everywhere.


@pytest.mark.parametrize("split", ["train", "test"])
def test_bundled_split(split):
    bunch = load_fashion_mnist(split=split, source="bundled")
    n = BUNDLED_SIZES[split]
    assert n == {"train": 6000, "test": 1000}[split]
    assert isinstance(bunch, Bunch)
    X, y = bunch.data, bunch.target
    assert X.shape == (n, 28, 28) and X.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), np.full(10, n // 10))
    assert X.max() == 255 and X.min() == 0
    assert X.flags.writeable
    index = bunch.index
    assert index.dtype == np.int64 and index.shape == (n,)
    assert (np.diff(index) > 0).all()
    assert index[0] >= 0 and index[-1] < RELEASE_SIZES[split]
    assert bunch.source == "bundled"
    assert Path(bunch.path) == BUNDLED_NPZ
    assert list(bunch.target_names) == list(TARGET_NAMES)
    assert "bundled with skfastretrain" in bunch.DESCR
    assert f"{split} split, {n} images" in bunch.DESCR
    assert "release in" not in bunch.DESCR


def test_bundled_file():
    """The npz holds exactly the documented arrays, and stays small."""
    assert BUNDLED_NPZ.stat().st_size < 5 * 2**20
    with np.load(BUNDLED_NPZ) as npz:
        assert sorted(npz.files) == sorted(
            f"{split}_{what}"
            for split in STEMS
            for what in ("images", "labels", "index")
        )
        for split, n in BUNDLED_SIZES.items():
            assert npz[f"{split}_images"].shape == (n, 28, 28)
            assert npz[f"{split}_images"].dtype == np.uint8
            assert npz[f"{split}_labels"].dtype == np.uint8
            assert npz[f"{split}_index"].dtype == np.int32
            X, y = load_fashion_mnist(split=split, source="bundled", return_X_y=True)
            np.testing.assert_array_equal(X, npz[f"{split}_images"])
            np.testing.assert_array_equal(y, npz[f"{split}_labels"])


@pytest.mark.parametrize("split", ["train", "test"])
def test_default_falls_back_to_bundled(no_release, split):
    bunch = load_fashion_mnist(split=split)
    assert bunch.source == "bundled"
    bundled = load_fashion_mnist(split=split, source="bundled")
    np.testing.assert_array_equal(bunch.data, bundled.data)
    np.testing.assert_array_equal(bunch.target, bundled.target)
    assert bunch.DESCR == bundled.DESCR
    X, y = load_fashion_mnist(split=split, return_X_y=True)
    np.testing.assert_array_equal(X, bundled.data)
    np.testing.assert_array_equal(y, bundled.target)


def test_fallback_is_per_split(tmp_path, monkeypatch):
    """A folder with the test files only: the test split is read from it,
    the train split falls back to the bundled subset."""
    images, labels = fake_split()
    write_split(tmp_path, "test", images, labels, gzipped=False)
    monkeypatch.setattr(_fashion_mnist, "DEFAULT_PATH", tmp_path)
    test = load_fashion_mnist(split="test")
    assert test.source == "release" and test.path == str(tmp_path)
    np.testing.assert_array_equal(test.data, images)
    train = load_fashion_mnist(split="train")
    assert train.source == "bundled"
    assert train.data.shape == (BUNDLED_SIZES["train"], 28, 28)
    # Half a split (the images without their labels) is not a release either.
    write(tmp_path, STEMS["train"][0], idx_bytes(images, 0x803), gzipped=False)
    assert load_fashion_mnist(split="train").source == "bundled"


@pytest.mark.parametrize("random_state", [0, 7])
@pytest.mark.parametrize(
    "split, subset", [("train", 10), ("train", 1230), ("test", 500)]
)
def test_bundled_subset(split, subset, random_state):
    full = load_fashion_mnist(split=split, source="bundled")
    bunch = load_fashion_mnist(
        split=split, source="bundled", subset=subset, random_state=random_state
    )
    X, y = bunch.data, bunch.target
    assert X.shape == (subset, 28, 28) and X.dtype == np.uint8
    assert y.shape == (subset,) and y.dtype == np.int64
    assert_stratified(y, subset)
    # The rows of the bundled split, in their order, with their labels.
    rows = np.searchsorted(full.index, bunch.index)
    np.testing.assert_array_equal(full.index[rows], bunch.index)
    assert (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(full.data[rows], X)
    np.testing.assert_array_equal(full.target[rows], y)
    assert f"stratified random subset of {subset} is returned" in bunch.DESCR


def test_bundled_subset_of_whole_split_is_the_split():
    n = BUNDLED_SIZES["test"]
    a = load_fashion_mnist(split="test", source="bundled", subset=n)
    b = load_fashion_mnist(split="test", source="bundled")
    np.testing.assert_array_equal(a.data, b.data)
    assert "subset of" not in a.DESCR


@pytest.mark.parametrize(
    "split, subset",
    [
        ("train", BUNDLED_SIZES["train"] + 1),
        ("train", 10000),  # fine on the release, too many for the subset
        ("train", BUNDLED_SIZES["train"] - 5),
        ("test", BUNDLED_SIZES["test"] + 1),
        ("test", 9),
    ],
)
def test_bundled_subset_out_of_range(split, subset):
    with pytest.raises(ValueError, match="out of range") as excinfo:
        load_fashion_mnist(split=split, source="bundled", subset=subset)
    message = str(excinfo.value)
    assert f"stratified subset of {BUNDLED_SIZES[split]} images" in message
    assert "bundled with skfastretrain" in message
    assert "source='release'" in message


def test_subset_is_reproducible():
    a = load_fashion_mnist(split="test", source="bundled", subset=100, random_state=3)
    b = load_fashion_mnist(split="test", source="bundled", subset=100, random_state=3)
    c = load_fashion_mnist(split="test", source="bundled", subset=100, random_state=4)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.target, b.target)
    assert not np.array_equal(a.data, c.data)


# The sources, with small IDX files in place of Debian's folder.


def test_default_path_is_debian_folder():
    assert Path("/usr/share/datasets/fashion-mnist") == DEFAULT_PATH


@pytest.mark.parametrize("source", ["auto", "release"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_default_reads_release_in_default_folder(fake_release, split, source):
    folder, splits = fake_release
    images, labels = splits[split]
    bunch = load_fashion_mnist(split=split, source=source)
    assert bunch.source == "release" and bunch.path == str(folder)
    np.testing.assert_array_equal(bunch.data, images)
    np.testing.assert_array_equal(bunch.target, labels)
    np.testing.assert_array_equal(bunch.index, np.arange(N_FAKE))
    assert f"full Fashion-MNIST release in {folder}" in bunch.DESCR
    assert "bundled" not in bunch.DESCR
    sub = load_fashion_mnist(split=split, source=source, subset=20, random_state=1)
    assert sub.source == "release"
    assert_stratified(sub.target, 20)
    np.testing.assert_array_equal(sub.data, images[sub.index])
    np.testing.assert_array_equal(sub.target, labels[sub.index])


def test_source_bundled_ignores_installed_release(fake_release):
    bunch = load_fashion_mnist(source="bundled")
    assert bunch.source == "bundled"
    assert bunch.data.shape == (BUNDLED_SIZES["train"], 28, 28)


def test_source_release_does_not_fall_back(no_release):
    with pytest.raises(FileNotFoundError) as excinfo:
        load_fashion_mnist(source="release")
    message = str(excinfo.value)
    assert str(no_release) in message and "does not exist" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "bundled with skfastretrain" in message


def test_corrupt_default_release_does_not_fall_back(fake_release):
    """Only missing files fall back: a corrupt release is an error."""
    folder, splits = fake_release
    images, _ = splits["train"]
    write(folder, STEMS["train"][0], idx_bytes(images, 0x801), gzipped=True)
    with pytest.raises(ValueError, match="magic number"):
        load_fashion_mnist()


def test_given_path_does_not_fall_back(no_release):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_fashion_mnist(no_release)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_fashion_mnist(no_release, source="auto")


def test_given_path_is_read_even_with_default_release(fake_release, tmp_path):
    images, labels = fake_split(n=20, seed=5)
    other = tmp_path / "other"
    other.mkdir()
    write_split(other, "train", images, labels, gzipped=False)
    for source in ("auto", "release"):
        bunch = load_fashion_mnist(other, source=source)
        assert bunch.source == "release" and bunch.path == str(other)
        np.testing.assert_array_equal(bunch.data, images)


@pytest.mark.parametrize("path_type", [str, Path])
def test_path_with_source_bundled_raises(tmp_path, path_type):
    with pytest.raises(ValueError, match="cannot be combined with source='bundled'"):
        load_fashion_mnist(path_type(tmp_path), source="bundled")


@pytest.mark.parametrize("return_X_y", [True, False])
@pytest.mark.parametrize("source", ["Auto", "full", "", None, 1, ("bundled",)])
def test_bad_source_raises(source, return_X_y):
    with pytest.raises(
        ValueError, match="source must be 'auto', 'release' or 'bundled'"
    ):
        load_fashion_mnist(source=source, return_X_y=return_X_y)


def test_missing_bundled_file_raises(monkeypatch, tmp_path):
    monkeypatch.setattr(_fashion_mnist, "_bundled_file", lambda: tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError, match="installation is incomplete"):
        load_fashion_mnist(source="bundled")


# The full release, as Debian's dataset-fashion-mnist installs it.


@pytest.mark.parametrize("split", ["train", "test"])
def test_release_split(release, split):
    bunch = release[split]
    n = RELEASE_SIZES[split]
    X, y = bunch.data, bunch.target
    assert X.shape == (n, 28, 28) and X.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), np.full(10, n // 10))
    assert X.max() == 255 and X.min() == 0
    assert bunch.target_names[9] == "Ankle boot"
    assert bunch.source == "release" and bunch.path == str(RELEASE_PATH)
    assert f"full Fashion-MNIST release in {RELEASE_PATH}" in bunch.DESCR


@pytest.mark.parametrize("split", ["train", "test"])
def test_default_reads_installed_release(release, split):
    X, y = load_fashion_mnist(split=split, return_X_y=True)
    np.testing.assert_array_equal(X, release[split].data)
    np.testing.assert_array_equal(y, release[split].target)


@pytest.mark.parametrize("split", ["train", "test"])
def test_bundled_rows_are_the_release_rows(release, split):
    """The bundled images and labels are the release's at the stored rows."""
    with np.load(BUNDLED_NPZ) as npz:
        index = npz[f"{split}_index"]
        images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    full = release[split]
    np.testing.assert_array_equal(images, full.data[index])
    np.testing.assert_array_equal(labels, full.target[index])


@pytest.mark.parametrize("random_state", [0, 7])
@pytest.mark.parametrize("subset", [10, 500, 1230])
def test_release_stratified_subset(release, subset, random_state):
    bunch = load_fashion_mnist(
        RELEASE_PATH, source="release", subset=subset, random_state=random_state
    )
    assert bunch.data.shape == (subset, 28, 28)
    assert_stratified(bunch.target, subset)
    assert (np.diff(bunch.index) > 0).all()
    full = release["train"]
    np.testing.assert_array_equal(bunch.data, full.data[bunch.index])
    np.testing.assert_array_equal(bunch.target, full.target[bunch.index])
