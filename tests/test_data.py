import numpy as np
import pytest
import torch

from skfastretrain._data import (
    AugmentCollate,
    ImageDataset,
    Preprocess,
    check_paths,
    dataset_labels,
    input_kind,
    make_augment,
    to_model_layout,
)


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((5, 8, 9), (5, 1, 8, 9)),
        ((5, 8, 9, 3), (5, 3, 8, 9)),
        ((5, 3, 8, 9), (5, 3, 8, 9)),
        ((5, 1, 8, 9), (5, 1, 8, 9)),
        ((5, 7), (5, 7)),
    ],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_layouts(shape, expected, dtype):
    X = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    out = to_model_layout(X, expects_images=len(shape) > 2)
    assert out.shape == expected
    assert out.dtype == (np.uint8 if dtype == np.uint8 else np.float32)
    assert out.flags.c_contiguous
    if len(shape) == 4 and shape[-1] == 3:
        np.testing.assert_array_equal(out[:, 1], X[..., 1])


@pytest.mark.parametrize(
    "shape, match",
    [((4, 8), "convolution"), ((4, 8, 8, 8), "channel axis"), ((4,), "dimensions")],
)
def test_layout_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        to_model_layout(np.zeros(shape), expects_images=True)


def test_preprocess_scales_uint8_repeats_resizes_normalizes():
    x = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    pre = Preprocess(channels=3, size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    out = pre(x)
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out, torch.full_like(out, 2.0))


def test_preprocess_keeps_float_scale_and_vectors():
    pre = Preprocess()
    x = torch.rand(3, 5, dtype=torch.float64)
    torch.testing.assert_close(pre(x), x.float())


@pytest.fixture
def image_files(tmp_path, digit_images):
    from PIL import Image

    X, y, _, _ = digit_images
    paths = []
    for i, image in enumerate(X[:60]):
        ext = "png" if i % 2 else "jpg"
        path = tmp_path / f"digit_{i}.{ext}"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths, y[:60]


def test_input_kind(image_files, digit_images):
    from skorch.helper import SliceDataset

    paths, _ = image_files
    X, _, _, _ = digit_images
    assert input_kind(paths) == "paths"
    assert input_kind(np.array(paths)) == "paths"
    assert input_kind(X) == "array"
    dataset = torch.utils.data.TensorDataset(torch.zeros(3, 1, 4, 4))
    assert input_kind(dataset) == "dataset"
    assert input_kind(SliceDataset(dataset)) == "dataset"


@pytest.mark.parametrize("channels", [1, 3])
def test_image_dataset_reads_files_lazily_at_one_size(image_files, channels):
    paths, y = image_files
    dataset = ImageDataset(paths, y, size=(12, 10), channels=channels)
    x, label = dataset[1]
    assert x.dtype == torch.uint8 and x.shape == (channels, 12, 10)
    assert label == y[1]
    # PNG is lossless: at the native size the pixels come back exactly.
    native = ImageDataset(paths, y, channels=1)
    from PIL import Image

    np.testing.assert_array_equal(
        native[1][0][0].numpy(), np.asarray(Image.open(paths[1]))
    )


def test_image_dataset_from_pairs_and_missing_files(tmp_path):
    pairs = [(np.full((5, 5), i, np.uint8), i) for i in range(4)]
    dataset = ImageDataset(pairs, np.arange(4))
    assert dataset[2][0].shape == (1, 5, 5) and dataset[2][1] == 2
    assert_labels = dataset_labels(pairs)
    np.testing.assert_array_equal(assert_labels, np.arange(4))
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        check_paths([str(tmp_path / "nope.png")])


def test_augment_collate_transforms_each_sample():
    collate = AugmentCollate(make_augment("light", (8, 8)))
    batch = [(np.full((1, 8, 8), 7, np.uint8), 1), (np.zeros((1, 8, 8), np.uint8), 0)]
    xs, ys = collate(batch)
    assert xs.shape == (2, 1, 8, 8) and ys.tolist() == [1, 0]
    with pytest.raises(ValueError, match="augment"):
        make_augment("heavy", (8, 8))
