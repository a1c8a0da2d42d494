"""Lists of PIL images, arrays or tensors as X, and datasets with classes.

A list is read one image at a time, as a list of paths is: images of
different sizes are resized to the first one's size at fit.
"""

import numpy as np
import pytest
import torch
from conftest import tiny_cnn_classifier
from PIL import Image

from skfastretrain._data import dataset_labels, input_kind


@pytest.fixture
def digits_fit(small_images, one_thread):
    """A tiny CNN fitted on the uint8 array; the data and its predictions."""
    X, y = small_images
    clf = tiny_cnn_classifier(device="cpu").fit(X, y)
    return clf, X, y, clf.predict_proba(X)


def test_input_kinds():
    pil = Image.new("L", (4, 4))
    a, b = np.zeros((4, 4)), np.zeros((5, 4))
    assert input_kind([pil, pil]) == "images"
    assert input_kind((a, pil)) == "images"
    assert input_kind([a, b]) == "images"
    assert input_kind([torch.zeros(1, 4, 4), torch.zeros(1, 5, 5)]) == "images"
    # Equal sizes stack into one array; nested numbers are tabular.
    assert input_kind([a, a]) == "array"
    assert input_kind([torch.zeros(4, 4)] * 2) == "array"
    assert input_kind([[1.0, 2.0], [3.0, 4.0]]) == "array"
    assert input_kind([np.zeros(3), np.zeros(4)]) == "array"
    assert input_kind("photos/") == "folder"


def test_a_pil_list_is_the_array(digits_fit):
    clf, X, y, proba = digits_fit
    pils = [Image.fromarray(x) for x in X]
    fitted = tiny_cnn_classifier(device="cpu").fit(pils, y)
    np.testing.assert_array_equal(fitted.predict_proba(X), proba)
    np.testing.assert_array_equal(clf.predict_proba(pils), proba)
    # RGB images are converted to the backbone's grayscale, as files are.
    rgb = [p.convert("RGB") for p in pils]
    np.testing.assert_array_equal(clf.predict_proba(rgb), proba)
    np.testing.assert_array_equal(clf.predict_proba(tuple(pils)), proba)


def test_mixed_sizes_are_the_paths(tmp_path, small_images, one_thread):
    X, y = small_images
    X, y = X[:90], y[:90]
    sizes = [(8, 8), (11, 9), (6, 7)]
    pils = [Image.fromarray(x).resize(sizes[i % 3]) for i, x in enumerate(X)]
    paths = []
    for i, pil in enumerate(pils):
        pil.save(tmp_path / f"{i}.png")  # lossless
        paths.append(str(tmp_path / f"{i}.png"))
    by_paths = tiny_cnn_classifier(device="cpu").fit(paths, y)
    proba = by_paths.predict_proba(paths)
    by_pils = tiny_cnn_classifier(device="cpu").fit(pils, y)
    np.testing.assert_array_equal(by_pils.predict_proba(pils), proba)
    np.testing.assert_array_equal(by_paths.predict_proba(pils), proba)
    # Arrays, (H, W) or (H, W, 1), and (C, H, W) tensors: the same images.
    arrays = [np.asarray(p) for p in pils]
    arrays = [a[..., None] if i % 2 else a for i, a in enumerate(arrays)]
    tensors = [torch.from_numpy(np.array(p))[None] for p in pils]
    for images in (arrays, tensors):
        fitted = tiny_cnn_classifier(device="cpu").fit(images, y)
        np.testing.assert_array_equal(fitted.predict_proba(images), proba)
    # Floats in [0, 1] at the fitted size: the same input as uint8.
    floats = [a / 255 for a in arrays[::3]]
    np.testing.assert_allclose(
        by_paths.predict_proba(floats), proba[::3], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "items, error, match",
    [
        ([Image.new("L", (4, 4)), "cat.png"], TypeError, "Image 1 of the list is str"),
        ([Image.new("L", (4, 4)), None], TypeError, "Image 1 of the list is NoneType"),
        ([np.zeros((4, 4)), np.zeros((5, 5), bool)], TypeError, "is bool"),
        (
            [torch.zeros(4, 4), torch.zeros(5, 5, dtype=torch.cfloat)],
            TypeError,
            "complex",
        ),
        ([np.zeros((4, 4)), np.zeros((0, 5))], ValueError, r"Image 1 has shape"),
        ([np.zeros((4, 4)), np.zeros((2, 5, 5, 1))], ValueError, "one array"),
        ([np.zeros((4, 4)), np.full((5, 5), np.nan)], ValueError, "NaN or infinity"),
        (
            [np.zeros((4, 4), np.uint16), np.full((5, 5), 999, np.uint16)],
            ValueError,
            r"values in \[999, 999\]",
        ),
        ([np.zeros((4, 4)), np.zeros((9, 9, 9))], ValueError, "channel axis"),
        (
            [np.zeros((4, 4)), np.zeros((5, 5, 3))],
            ValueError,
            "The images have 1 and 3 channels",
        ),
        (
            [np.zeros((6, 6, 3)), np.zeros((7, 7, 3))],
            ValueError,
            r"Image 0 has 3 channels, but the backbone takes 1-channel",
        ),
    ],
)
def test_bad_lists_are_clear_errors(small_images, items, error, match):
    n = len(items)
    with pytest.raises(error, match=match):
        tiny_cnn_classifier().fit(items, np.arange(n) % 2)


def test_float_lists_above_one_warn(digits_fit):
    clf, X, _, _ = digits_fit
    images = [x.astype(np.float32) for x in X[:20]] + [np.zeros((9, 9))]
    with pytest.warns(UserWarning, match=r"intensities in \[0, 1\].* up to 2"):
        clf.predict(images)


class _Named(torch.utils.data.Dataset):
    """Images with ``classes`` and ``targets``, as torchvision datasets."""

    def __init__(self, images, targets, classes):
        self.images, self.targets, self.classes = images, targets, classes

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def test_dataset_classes_become_classes_(digits_fit):
    _, X, y, proba = digits_fit
    names = [f"digit {d}" for d in range(10)]
    dataset = _Named(X, list(y), names)
    np.testing.assert_array_equal(dataset_labels(dataset), np.array(names)[y])
    fitted = tiny_cnn_classifier(device="cpu").fit(dataset)
    np.testing.assert_array_equal(fitted.classes_, sorted(set(np.array(names)[y])))
    np.testing.assert_array_equal(fitted.predict_proba(X), proba)
    assert set(fitted.predict(X)) <= set(names)
    # Without classes, the targets are the labels.
    del dataset.classes
    np.testing.assert_array_equal(dataset_labels(dataset), y)
    with pytest.raises(ValueError, match=r"range over \[0, 9\], but it has 3"):
        tiny_cnn_classifier().fit(_Named(X, y, ["a", "b", "c"]))
