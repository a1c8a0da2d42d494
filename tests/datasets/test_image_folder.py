"""Folders of one subfolder per class: load_image_folder and fit(folder).

The folders are written by the tests, into ``tmp_path``, as small PNG and
JPEG files of the digits.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_cnn_classifier
from PIL import Image
from sklearn.utils import Bunch
from torchvision.datasets import ImageFolder

from skfastretrain.datasets import load_image_folder

CLASSES = ("bird", "cat", "dog")
EXTENSIONS = (".png", ".jpg", ".PNG", ".jpeg")


def write_folder(root, images, labels, *, sizes=None, rgb=False, hidden=True):
    """Save ``images`` as ``root/<CLASSES[label]>/<i><ext>``; return root.

    Every fifth file of a class goes into a nested subfolder, and each
    class gets a non-image file and (with ``hidden``) a hidden folder and
    file, to be skipped.
    """
    for name in CLASSES:
        (root / name / "nested").mkdir(parents=True, exist_ok=True)
        (root / name / "notes.txt").write_text("not an image")
        if hidden:
            (root / name / ".ipynb_checkpoints").mkdir(exist_ok=True)
            (root / name / ".ipynb_checkpoints" / "0.png").write_bytes(b"")
            (root / name / ".hidden.png").write_bytes(b"")
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        img = Image.fromarray(image)
        if sizes is not None:
            img = img.resize(sizes[i % len(sizes)])
        if rgb:
            img = img.convert("RGB")
        sub = "nested" if i % 5 == 4 else ""
        img.save(root / CLASSES[label] / sub / f"{i:03d}{EXTENSIONS[i % 4]}")
    return root


@pytest.fixture
def folder(tmp_path, digit_images):
    """90 digits of classes 0-2 as a folder of bird/cat/dog; the images."""
    X, y, _, _ = digit_images
    keep = np.flatnonzero(y < 3)[:90]
    root = write_folder(tmp_path / "photos", X[keep], y[keep])
    return root, X[keep], y[keep]


def independent_listing(root):
    """The image files of ``root`` by os.walk, in ImageFolder's order."""
    files, labels = [], []
    for label, name in enumerate(sorted(os.listdir(root))):
        walked = []
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            walked += [
                (dirpath, f)
                for f in filenames
                if not f.startswith(".")
                and os.path.splitext(f)[1].lower() in {".png", ".jpg", ".jpeg"}
            ]
        files += [os.path.join(d, f) for d, f in sorted(walked)]
        labels += [label] * len(walked)
    return files, labels


# -- load_image_folder ---------------------------------------------------------


def test_bunch_lists_the_folder(folder):
    root, _, y = folder
    bunch = load_image_folder(root)
    assert isinstance(bunch, Bunch) and "data" not in bunch
    files, labels = independent_listing(root)
    np.testing.assert_array_equal(bunch.filenames, files)
    np.testing.assert_array_equal(bunch.target, labels)
    assert bunch.filenames.dtype.kind == "U" and bunch.target.dtype == np.int64
    np.testing.assert_array_equal(bunch.target_names, CLASSES)
    np.testing.assert_array_equal(np.bincount(bunch.target), np.bincount(y))
    # Upper-case extensions and nested folders are listed.
    assert any(f.endswith(".PNG") for f in files)
    assert any(f"{os.sep}nested{os.sep}" in f for f in files)
    counts = ", ".join(f"{n} {c}" for n, c in zip(np.bincount(y), CLASSES, strict=True))
    assert f":Images per class: {counts}" in bunch.DESCR
    assert str(root) in bunch.DESCR


@pytest.fixture
def plain_folder(tmp_path, digit_images):
    """As ``folder``, without the hidden files that ImageFolder would list."""
    X, y, _, _ = digit_images
    keep = np.flatnonzero(y < 3)[:90]
    return write_folder(tmp_path / "plain", X[keep], y[keep], hidden=False)


def test_order_is_that_of_torchvision_image_folder(plain_folder):
    root = plain_folder
    bunch = load_image_folder(root)
    samples = ImageFolder(root).samples
    assert list(bunch.filenames) == [path for path, _ in samples]
    assert list(bunch.target) == [label for _, label in samples]


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_data_are_the_decoded_images(folder, mode):
    root, _, _ = folder
    bunch = load_image_folder(root, load_images=True, mode=mode)
    expected = np.stack(
        [np.asarray(Image.open(f).convert(mode)) for f in bunch.filenames]
    )
    expected = expected[..., None] if mode == "L" else expected
    assert bunch.data.dtype == np.uint8
    np.testing.assert_array_equal(bunch.data, expected)
    data, target = load_image_folder(root, load_images=True, mode=mode, return_X_y=True)
    np.testing.assert_array_equal(data, bunch.data)
    np.testing.assert_array_equal(target, bunch.target)
    files, target = load_image_folder(root, return_X_y=True)
    np.testing.assert_array_equal(files, bunch.filenames)


def test_sizes_must_agree_or_be_resized(tmp_path, digit_images):
    X, y, _, _ = digit_images
    root = write_folder(tmp_path, X[:12], y[:12] % 3, sizes=[(8, 8), (10, 6)])
    with pytest.raises(
        ValueError, match=r"differ in size: '.*000\.png' is 8x8 .* is 6x10\. Pass size="
    ):
        load_image_folder(root, load_images=True)
    bunch = load_image_folder(root, load_images=True, size=(5, 7), mode="L")
    assert bunch.data.shape == (12, 5, 7, 1)
    # Reference: torch's antialiased bilinear resize, rounded to uint8.
    for path, got in zip(bunch.filenames, bunch.data, strict=True):
        image = torch.from_numpy(np.array(Image.open(path).convert("L")))
        ref = F.interpolate(
            image[None, None].float(),
            size=(5, 7),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        ref = ref.round().clamp(0, 255).to(torch.uint8)[0, 0]
        np.testing.assert_array_equal(got[..., 0], ref.numpy())
    assert "resized" in bunch.DESCR


def _write(path, content=b""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "layout, match",
    [
        ([], r"has no class subfolders: .*ImageFolder\)\.$"),
        (["a.png", "b.jpg"], r"no class subfolders.* holds 2 image files directly"),
        ([".hidden/x.png"], "has no class subfolders"),
        (["cat/a.png", "dog/notes.txt"], r"class folder 'dog' in .* no image files"),
        (["cat/a.png", "dog/.x.png"], r"class folder 'dog'"),
    ],
)
def test_folder_errors(tmp_path, layout, match):
    for name in layout:
        _write(tmp_path / "root" / name)
    (tmp_path / "root").mkdir(exist_ok=True)
    with pytest.raises(ValueError, match=match):
        load_image_folder(tmp_path / "root")
    with pytest.raises(ValueError, match=match):
        tiny_cnn_classifier().fit(tmp_path / "root")


def test_a_file_or_a_missing_folder(tmp_path):
    file = _write(tmp_path / "x.png")
    for X in (file, str(file)):
        with pytest.raises(ValueError, match=r"x\.png' is a file, not a folder"):
            load_image_folder(X)
        with pytest.raises(ValueError, match="is a file, not a folder"):
            tiny_cnn_classifier().fit(X)
    with pytest.raises(FileNotFoundError, match="Image folder not found"):
        load_image_folder(tmp_path / "nope")


@pytest.mark.parametrize(
    "params, match",
    [
        ({"mode": "RGBA"}, "mode must be 'RGB' or 'L'"),
        ({"size": 8}, "size must be None or a pair"),
        ({"size": (8, 0)}, "size must be None or a pair"),
        ({"size": (8, True)}, "size must be None or a pair"),
    ],
)
def test_invalid_loader_parameters(folder, params, match):
    with pytest.raises(ValueError, match=match):
        load_image_folder(folder[0], load_images=True, **params)


def test_undecodable_file_is_named(folder):
    root, _, _ = folder
    _write(root / "cat" / "broken.png", b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"Cannot read image .*broken\.png"):
        load_image_folder(root, load_images=True)


# -- fit(folder) -----------------------------------------------------------------


@pytest.fixture
def folder_fit(folder, one_thread):
    root, _, _ = folder
    clf = tiny_cnn_classifier(device="cpu").fit(str(root))
    return clf, root


def test_fit_on_a_folder_is_fit_on_its_paths(folder_fit):
    clf, root = folder_fit
    np.testing.assert_array_equal(clf.classes_, CLASSES)
    bunch = load_image_folder(root)
    paths = list(bunch.filenames)
    by_paths = tiny_cnn_classifier(device="cpu").fit(
        paths, bunch.target_names[bunch.target]
    )
    np.testing.assert_array_equal(by_paths.classes_, CLASSES)
    proba = by_paths.predict_proba(paths)
    np.testing.assert_array_equal(clf.predict_proba(paths), proba)
    # predict(folder) reads the folder's images in the loader's order.
    np.testing.assert_array_equal(clf.predict_proba(root), proba)
    np.testing.assert_array_equal(clf.predict(str(root)), by_paths.predict(paths))
    assert set(clf.predict(root)) <= set(CLASSES)
    by_path = tiny_cnn_classifier(device="cpu").fit(Path(root))
    np.testing.assert_array_equal(by_path.predict_proba(paths), proba)


def test_y_comes_from_the_subfolders(folder):
    root, _, y = folder
    with pytest.raises(ValueError, match="y must be None when X is a folder"):
        tiny_cnn_classifier().fit(root, y)


def test_predict_folder_errors(folder_fit, tmp_path):
    clf, root = folder_fit
    flat = tmp_path / "flat"
    flat.mkdir()
    images = [p for p in (root / "cat").iterdir() if p.suffix in EXTENSIONS]
    for path in images[:3]:
        (flat / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=r"no class subfolders.*3 image files"):
        clf.predict(flat)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        clf.predict(next(flat.iterdir()))
    with pytest.raises(FileNotFoundError, match="Image folder not found"):
        clf.predict_proba(tmp_path / "nope")


def test_image_folder_dataset_gives_class_names(plain_folder, one_thread):
    root = plain_folder
    clf = tiny_cnn_classifier(device="cpu").fit(root)
    dataset = ImageFolder(root)
    fitted = tiny_cnn_classifier(device="cpu").fit(dataset)
    np.testing.assert_array_equal(fitted.classes_, dataset.classes)
    assert fitted.predict(dataset).dtype.kind == "U"
    # The same images, decoded as RGB by ImageFolder and converted back to
    # the backbone's grayscale: the same model as the folder's.
    np.testing.assert_array_equal(fitted.predict_proba(root), clf.predict_proba(root))
    subset = torch.utils.data.Subset(dataset, np.arange(0, len(dataset), 2))
    fitted = tiny_cnn_classifier(device="cpu").fit(subset)
    np.testing.assert_array_equal(fitted.classes_, dataset.classes)
