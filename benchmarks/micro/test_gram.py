"""The head solve's Gram accumulation (``GramAccumulator.update``)."""

import pytest

from benchmarks._lib.gram import accumulate

pytest.importorskip("pytest_benchmark")


def _accumulate(H, T, batch, n_folds):
    folds = accumulate(H, T, batch, n_folds)
    for acc in folds:
        acc.tensors()  # adds the rows still gathered
    return folds


@pytest.mark.parametrize("batch", [32, 256])
def test_gram_accumulation(benchmark, features, batch):
    H, T = features
    (acc,) = benchmark(_accumulate, H, T, batch, 1)
    assert acc.n_samples == len(H)
    assert acc.gram.shape == (H.shape[1], H.shape[1])


def test_gram_five_folds(benchmark, features):
    # ridge_lambda="auto": five fold accumulators fed from each batch of 32.
    H, T = features
    folds = benchmark(_accumulate, H, T, 32, 5)
    assert sum(acc.n_samples for acc in folds) == len(H)
