import numpy as np
import pytest
import torch

from skfastretrain._data import Preprocess, to_model_layout


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
