from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_cnn
from torch import nn

from skfastretrain import FastRetrainClassifier, SGDEpoch

# cpu explicitly: the default device="auto" would pick a GPU where there is
# one, and the exact comparison below was set for the CPU.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ),
]
# On the CPU a batch gives the same bits whichever thread runs it. On CUDA,
# NVIDIA promises bitwise-reproducible cuBLAS results only while one stream is
# active; exactness there is untested (no GPU was at hand), so scores are
# checked to float32 rounding, and labels exactly on every device.
TOLERANCE = {"cpu": {"rtol": 0, "atol": 0}, "cuda": {"rtol": 1e-5, "atol": 1e-6}}


@pytest.fixture(scope="module", params=DEVICES)
def fitted(request, digit_images):
    X, y, _, _ = digit_images
    clf = FastRetrainClassifier(
        make_tiny_cnn,
        max_epochs=1,
        batch_size=16,
        random_state=0,
        sgd=SGDEpoch(bn_mode="train"),
        device=request.param,
    )
    return clf.fit(X[:200], y[:200])


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function"])
@pytest.mark.parametrize("n_threads", [2, 8])
def test_concurrent_predict_equals_sequential(fitted, digit_images, method, n_threads):
    _, _, X_test, _ = digit_images
    tolerance = TOLERANCE["cpu" if method == "predict" else fitted.device]
    # Chunks of different lengths, so threads are at different batches.
    chunks = [X_test[i : i + 37 + 11 * (i % 5)] for i in range(0, 400, 23)]
    sequential = [getattr(fitted, method)(chunk) for chunk in chunks]
    with ThreadPoolExecutor(n_threads) as pool:
        for _ in range(3):
            concurrent = list(pool.map(getattr(fitted, method), chunks))
            for got, expected in zip(concurrent, sequential, strict=True):
                torch.testing.assert_close(got, expected, **tolerance)
    assert not fitted.module_.training


# -- image arrays of another size at predict are resized as at fit -------------


def _reference_resize(X, size):
    """(n, C, H, W) images resized by torch's antialiased bilinear
    interpolation; uint8 rounded back to uint8, as torchvision does."""
    x = torch.from_numpy(X).float()
    out = F.interpolate(x, size=size, mode="bilinear", antialias=True)
    if X.dtype == np.uint8:
        return out.round().clamp(0, 255).to(torch.uint8).numpy()
    return out.numpy()


@pytest.fixture(scope="module")
def gray_and_rgb(digit_images):
    """Tiny CNNs fitted on 8x8 grayscale and 8x8 RGB digits."""
    X, y, _, _ = digit_images
    rgb = np.stack([X, 255 - X, X // 2], axis=-1)
    gray_clf = FastRetrainClassifier(make_tiny_cnn, max_epochs=1, random_state=0)
    rgb_clf = FastRetrainClassifier(
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2)),
        max_epochs=1,
        random_state=0,
    )
    return gray_clf.fit(X[:100], y[:100]), rgb_clf.fit(rgb[:100], y[:100])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("size", [(13, 11), (5, 8), (16, 16)])
@pytest.mark.parametrize("layout", ["gray", "channels_first", "channels_last"])
def test_other_sizes_are_resized_as_at_fit(
    gray_and_rgb, digit_images, one_thread, dtype, size, layout
):
    _, _, X_test, _ = digit_images
    clf = gray_and_rgb[0] if layout == "gray" else gray_and_rgb[1]
    images = X_test[:50, None]
    if layout != "gray":
        images = np.concatenate([images, 255 - images, images // 2], axis=1)
    images = _reference_resize(images, size)  # (n, C, *size) uint8
    if dtype == np.float32:
        images = images.astype(np.float32) / 255
    X = images[:, 0] if layout == "gray" else images
    if layout == "channels_last":
        X = X.transpose(0, 2, 3, 1)
    expected = clf.predict_proba(_reference_resize(images, (8, 8)))
    np.testing.assert_array_equal(clf.predict_proba(X), expected)


def test_a_channel_mismatch_is_explained(gray_and_rgb):
    gray, rgb = gray_and_rgb
    match = (
        r"fitted on 1-channel \(grayscale\) images, got 3-channel \(RGB\) "
        r"images; convert them to grayscale"
    )
    with pytest.raises(ValueError, match=match):
        gray.predict(np.zeros((2, 12, 12, 3), np.uint8))
    match = r"fitted on 3-channel \(RGB\) images, got 1-channel \(grayscale\)"
    with pytest.raises(ValueError, match=match):
        rgb.predict(np.zeros((2, 12, 12), np.uint8))
    # Tiny RGB images, channels-last: 4x4 with 3 channels, not 4x3 with 4.
    assert rgb.predict(np.zeros((2, 4, 4, 3), np.uint8)).shape == (2,)
