"""Inputs the micro-benchmarks share."""

import pytest

from benchmarks._lib.gram import synthetic_features

#: Lite0's feature width, and rows enough for eight 256-row Gram updates.
WIDTH, ROWS = 1280, 2048


@pytest.fixture(scope="module")
def features():
    """Synthetic post-ReLU6 features (ROWS, WIDTH) and +-1 one-hot targets."""
    return synthetic_features(WIDTH, n=ROWS)
