"""The ridge solve (``ridge_solve``) and the choice of lambda (``select_lambda``)."""

import numpy as np
import pytest

from benchmarks._lib.gram import accumulate, synthetic_features
from skfastretrain import ridge_solve, select_lambda

pytest.importorskip("pytest_benchmark")


def test_ridge_solve(benchmark, features):
    H, T = features
    (stats,) = accumulate(H, T, 256)
    W, b = benchmark(ridge_solve, stats, 1.0)
    assert W.shape == (H.shape[1], T.shape[1])
    assert b.shape == (T.shape[1],)


def test_select_lambda(benchmark):
    # Five eigendecompositions of d x d: d=512 keeps a round near a second.
    H, T = synthetic_features(512, n=2048)
    folds = accumulate(H, T, 256, n_folds=5)
    alpha, scores = benchmark(select_lambda, folds)
    assert alpha > 0
    assert np.all(np.isfinite(scores))
