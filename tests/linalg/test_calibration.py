import numpy as np
import pytest
from scipy.special import log_softmax

from skfastretrain.linalg._calibration import calibrated_scale


def _nll(scale, logits, y):
    return -log_softmax(scale * logits, axis=1)[np.arange(len(y)), y].mean()


@pytest.mark.parametrize("noise", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("max_scale", [4.0, 100.0])
def test_scale_is_the_cross_entropy_minimizer_on_a_grid(noise, max_scale):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=400)
    # Ridge-like outputs: +1 for the true class, -1 elsewhere, plus noise.
    logits = 2.0 * np.eye(5)[y] - 1.0 + noise * rng.normal(size=(400, 5))
    grid = np.exp(np.linspace(np.log(1e-2), np.log(max_scale), 4001))
    best = grid[np.argmin([_nll(s, logits, y) for s in grid])]
    scale = calibrated_scale(logits, y, max_scale)
    assert scale == pytest.approx(best, rel=5e-3)
    assert 1e-2 <= scale <= max_scale


def test_scale_is_capped_on_separable_rows():
    y = np.arange(200) % 4
    logits = 2.0 * np.eye(4)[y] - 1.0  # every row right: the optimum is inf
    assert calibrated_scale(logits, y, 4.0) == pytest.approx(4.0, rel=1e-3)
