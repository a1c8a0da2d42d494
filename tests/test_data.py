import numpy as np
import pytest
import torch
from conftest import make_mlp, tiny_cnn_classifier

from skfastretrain import FastRetrainClassifier
from skfastretrain._data import (
    AugmentCollate,
    ImageDataset,
    Preprocess,
    as_pixels,
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


def _symmetries(image, square):
    """The flips and quarter turns of a (C, H, W) array, by numpy."""
    turns = range(4) if square else (0, 2)
    rotated = [np.rot90(image, k, axes=(-2, -1)) for k in turns]
    return [*rotated, *(np.flip(r, axis=-1) for r in rotated)]


@pytest.mark.parametrize(("shape", "n_symmetries"), [((2, 5, 5), 8), ((2, 4, 6), 4)])
def test_dihedral_draws_every_symmetry_of_the_shape(shape, n_symmetries):
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    expected = {r.tobytes() for r in _symmetries(image, shape[1] == shape[2])}
    assert len(expected) == n_symmetries
    augment = make_augment("dihedral", shape[1:])
    torch.manual_seed(0)
    seen = {augment(torch.from_numpy(image)).numpy().tobytes() for _ in range(200)}
    # Every output is a symmetry that keeps the shape, and each one is drawn.
    assert seen == expected


@pytest.fixture
def uint8_fit(digit_images, one_thread):
    """A tiny CNN fitted on uint8 digits, with its test predictions.

    Per test and on one thread: a fit then takes ~0.1 s, where on two
    threads of shared cores OpenMP synchronization made one take up to 10 s.
    """
    X, y, X_test, _ = digit_images
    clf = tiny_cnn_classifier(device="cpu").fit(X[:200], y[:200])
    return clf, clf.predict_proba(X_test[:200]), clf.predict(X_test[:200])


def _as_dtype(images, dtype):
    """The uint8 ``images`` as pixel values (integers) or in [0, 1] (floats)."""
    if np.issubdtype(dtype, np.integer):
        return images.astype(dtype)
    return (images / 255).astype(dtype)


@pytest.mark.parametrize("at", ["fit", "predict"])
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int16, np.int64, np.uint16, np.float32, np.float64]
)
def test_dtype_match(uint8_fit, digit_images, dtype, at):
    # The same images in any integer dtype, or as floats in [0, 1], are the
    # same input: at fit (one fit per dtype, same seed) and at predict.
    X, y, X_test, _ = digit_images
    X_test = X_test[:200]
    clf, proba, labels = uint8_fit
    if at == "fit":
        clf = tiny_cnn_classifier(device="cpu").fit(_as_dtype(X[:200], dtype), y[:200])
    got = clf.predict_proba(_as_dtype(X_test, dtype))
    if np.issubdtype(dtype, np.integer):
        # Converted to uint8 before anything else: the very same arithmetic.
        np.testing.assert_array_equal(got, proba)
    else:
        # v / 255 rounds to the float32 that uint8 scaling computes, so these
        # agree exactly too today; the tolerance allows only float32 rounding.
        np.testing.assert_allclose(got, proba, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(clf.predict(_as_dtype(X_test, dtype)), labels)


@pytest.mark.parametrize(
    "dtype, low, high", [(np.uint16, 0, 4095), (np.int16, -3, 255), (np.int64, 0, 256)]
)
def test_integer_images_outside_0_255_raise(uint8_fit, digit_images, dtype, low, high):
    X, y, _, _ = digit_images
    X = X[:40].astype(dtype)
    X[0, 0, :2] = low, high
    match = (
        rf"dtype {np.dtype(dtype).name} with values in \[{low}, {high}\]"
        r".*float in \[0, 1\].*X / 65535"
    )
    with pytest.raises(ValueError, match=match):
        tiny_cnn_classifier(device="cpu").fit(X, y[:40])
    with pytest.raises(ValueError, match=match):
        uint8_fit[0].predict(X)


def test_as_pixels_leaves_vectors_floats_and_uint8():
    features = np.arange(600, dtype=np.int64).reshape(2, 300)
    assert as_pixels(features) is features  # numbers, not pixels
    for X in (np.zeros((2, 4, 4)), np.zeros((2, 4, 4), np.uint8)):
        assert as_pixels(X) is X
    out = as_pixels(torch.full((1, 2, 2), 255, dtype=torch.int32))
    assert out.dtype == torch.uint8 and int(out.max()) == 255


def test_integer_feature_vectors_are_numbers(digits, one_thread):
    # Only images are pixels: 2-D int64 features are taken unscaled, as
    # floats of the same values are. 2-D uint8 keeps its behaviour from before
    # integer images were read as pixels: it is scaled by 1/255.
    X, y = digits
    X, y = (X[:300] * 16).round(), y[:300]
    layout = to_model_layout(X.astype(np.int64), expects_images=False)
    assert layout.dtype == np.float32
    np.testing.assert_array_equal(layout, X)

    def logits(X):
        clf = FastRetrainClassifier(
            make_mlp, max_epochs=1, random_state=0, device="cpu"
        )
        return clf.fit(X, y).decision_function(X)

    np.testing.assert_array_equal(
        logits(X.astype(np.int64)), logits(X.astype(np.float32))
    )
    np.testing.assert_array_equal(
        logits(X.astype(np.uint8)), logits((X / 255).astype(np.float32))
    )


def test_integer_images_in_datasets_are_pixels():
    pairs = [(np.full((3, 3), 7 * i, np.int64), i) for i in range(3)]
    x, _ = ImageDataset(pairs, np.arange(3))[2]
    assert x.dtype == torch.uint8 and int(x.max()) == 14
    bad = [(np.full((3, 3), 1000, np.uint16), 0)]
    with pytest.raises(ValueError, match="uint16 with values in"):
        ImageDataset(bad, np.zeros(1))


def test_boolean_images_are_rejected(small_images):
    X, y = small_images
    with pytest.raises(TypeError, match="astype"):
        tiny_cnn_classifier(device="cpu").fit(X > 100, y)


def _broken_files(tmp_path, image_files):
    paths, _ = image_files
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    # A valid header over damaged pixel data: only verify's checksums see it.
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    damaged = tmp_path / "damaged.png"
    Image.fromarray(noise).save(damaged)
    data = bytearray(damaged.read_bytes())
    data[data.index(b"IDAT") + 20] ^= 0xFF
    damaged.write_bytes(bytes(data))
    return paths, {
        "corrupt": corrupt,
        "text": text,
        "folder": folder,
        "damaged": damaged,
    }


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("corrupt", r"corrupt\.png' is not a readable image"),
        ("text", r"notes\.jpg' is not a readable image"),
        ("folder", r"a_folder' is a folder, not an image file"),
        ("damaged", r"damaged\.png' is not a readable image: broken PNG"),
    ],
)
def test_unreadable_files_are_named_before_any_pass(tmp_path, image_files, kind, match):
    paths, broken = _broken_files(tmp_path, image_files)
    with pytest.raises(ValueError, match=match):
        check_paths([*paths[:5], str(broken[kind]), *paths[5:]])
    # Through the estimator: refused before the first (slow) pass.
    _, y = image_files
    clf = tiny_cnn_classifier(max_epochs=1)
    with pytest.raises(ValueError, match=match):
        clf.fit([*paths[:-1], str(broken[kind])], y)


def test_a_truncated_file_is_named_when_decoded(tmp_path):
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    path = tmp_path / "cut.jpg"
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    # Cut inside the scan data: the header still verifies.
    path.write_bytes(data[:-100])
    check_paths([str(path)])
    with pytest.raises(ValueError, match=r"Cannot read image '.*cut\.jpg'"):
        ImageDataset([str(path)], size=(8, 8))[0]
    # Cut inside the header: refused by the early check.
    path.write_bytes(data[:200])
    with pytest.raises(ValueError, match=r"cut\.jpg' is not a readable image"):
        check_paths([str(path)])


# -- float images above 1 warn: they are read as intensities in [0, 1] ---------

FLOAT_WARNING = r"read as intensities in \[0, 1\], but X has values up to 255\."


def _float_warnings(record):
    return [w for w in record if "intensities in [0, 1]" in str(w.message)]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_images_above_one_warn_once_per_call(uint8_fit, small_images, dtype):
    X, y = small_images
    X = X.astype(dtype)
    X[0, 0, 0] = 255
    with pytest.warns(UserWarning, match=FLOAT_WARNING + ".*divide them by 255") as rec:
        clf = tiny_cnn_classifier(device="cpu").fit(X, y)
    assert len(_float_warnings(rec)) == 1
    # The warning names the caller's line, not the package's.
    assert _float_warnings(rec)[0].filename == __file__
    for method in ("predict", "predict_proba", "decision_function", "score"):
        args = (X, y) if method == "score" else (X,)
        with pytest.warns(UserWarning, match=FLOAT_WARNING) as rec:
            getattr(clf, method)(*args)
        assert len(_float_warnings(rec)) == 1, method
    with pytest.warns(UserWarning, match=FLOAT_WARNING):
        uint8_fit[0].predict(X)


def test_floats_in_0_1_and_feature_vectors_do_not_warn(small_images, digits):
    import warnings

    X, y = small_images
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        clf = tiny_cnn_classifier(device="cpu").fit(X / 255, y)
        clf.predict(X / 255)
        clf.predict(X)  # uint8 is read as pixels
        features, labels = digits
        mlp = FastRetrainClassifier(make_mlp, max_epochs=1, random_state=0)
        mlp.fit(features[:100] * 16, labels[:100]).predict(features[:10] * 16)
