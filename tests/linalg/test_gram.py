import numpy as np
import pytest
import torch

from skfastretrain import GramAccumulator


@pytest.mark.parametrize("n_batches", [1, 3, 7])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_sums_equal_full_batch(n_batches, dtype):
    rng = np.random.default_rng(0)
    H = torch.from_numpy(rng.normal(size=(50, 6)))
    T = torch.from_numpy(rng.normal(size=(50, 3)))
    acc = GramAccumulator(6, 3, dtype=dtype)
    for h, t in zip(H.tensor_split(n_batches), T.tensor_split(n_batches), strict=True):
        acc.update(h, t)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert acc.n_samples == 50
    torch.testing.assert_close(acc.gram.double(), H.T @ H, rtol=tol, atol=tol)
    torch.testing.assert_close(acc.cross.double(), H.T @ T, rtol=tol, atol=tol)
    torch.testing.assert_close(acc.feature_sum.double(), H.sum(0), rtol=tol, atol=tol)
    torch.testing.assert_close(acc.target_sum.double(), T.sum(0), rtol=tol, atol=tol)
    torch.testing.assert_close(
        acc.target_sq_sum.double(), (T**2).sum(), rtol=tol, atol=tol
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_centered_matches_numpy_in_float64(dtype):
    rng = np.random.default_rng(1)
    H, T = rng.normal(3, 2, size=(40, 5)), rng.normal(size=(40, 2))
    acc = GramAccumulator(5, 2, dtype=dtype)
    acc.update(torch.from_numpy(H), torch.from_numpy(T))
    gram_c, cross_c, mu_h, mu_t = acc.centered()
    assert gram_c.dtype == cross_c.dtype == torch.float64
    Hc, Tc = H - H.mean(0), T - T.mean(0)
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    np.testing.assert_allclose(gram_c.numpy(), Hc.T @ Hc, atol=tol)
    np.testing.assert_allclose(cross_c.numpy(), Hc.T @ Tc, atol=tol)
    # A copy: centering again gives the same, and the sums are untouched.
    torch.testing.assert_close(acc.centered()[0], gram_c)
    np.testing.assert_allclose(acc.gram.double().numpy(), H.T @ H, rtol=1e-6)
    np.testing.assert_allclose(mu_h.numpy(), H.mean(0), rtol=tol)
    np.testing.assert_allclose(mu_t.numpy(), T.mean(0), rtol=tol)


@pytest.mark.parametrize(
    "features, targets",
    [
        (torch.zeros(4, 2), torch.zeros(4, 2)),
        (torch.zeros(4, 3), torch.zeros(5, 2)),
        (torch.zeros(4, 3), torch.zeros(4, 1)),
    ],
)
def test_update_rejects_bad_shapes(features, targets):
    with pytest.raises(ValueError, match="must have shape"):
        GramAccumulator(3, 2).update(features, targets)


def test_empty_accumulator_cannot_center():
    with pytest.raises(ValueError, match="empty"):
        GramAccumulator(3, 2).centered()


def test_accumulators_add_and_subtract():
    rng = np.random.default_rng(6)
    H, T = rng.normal(size=(30, 4)), rng.normal(size=(30, 2))
    a, b, full = GramAccumulator(4, 2), GramAccumulator(4, 2), GramAccumulator(4, 2)
    a.update(torch.from_numpy(H[:10]), torch.from_numpy(T[:10]))
    b.update(torch.from_numpy(H[10:]), torch.from_numpy(T[10:]))
    full.update(torch.from_numpy(H), torch.from_numpy(T))
    for got, want in zip((a + b).tensors(), full.tensors(), strict=True):
        torch.testing.assert_close(got, want)
    for got, want in zip((full - a).tensors(), b.tensors(), strict=True):
        torch.testing.assert_close(got, want)
    assert (full - a).n_samples == 20


def test_sum_statistics_equals_the_full_set():
    from skfastretrain.linalg._gram import sum_statistics

    rng = np.random.default_rng(7)
    H, T = rng.normal(size=(33, 4)), rng.normal(size=(33, 2))
    parts = [GramAccumulator(4, 2) for _ in range(3)]
    for part, rows in zip(parts, np.array_split(np.arange(33), 3), strict=True):
        part.update(torch.from_numpy(H[rows]), torch.from_numpy(T[rows]))
    full = GramAccumulator(4, 2)
    full.update(torch.from_numpy(H), torch.from_numpy(T))
    total = sum_statistics(parts)
    assert total.n_samples == 33
    for got, want in zip(total.tensors(), full.tensors(), strict=True):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="different shapes"):
        sum_statistics([parts[0], GramAccumulator(3, 2)])


@pytest.fixture
def weighted_rows():
    rng = np.random.default_rng(7)
    H = rng.normal(1.0, 2.0, size=(60, 5))
    T = rng.normal(size=(60, 2))
    w = rng.integers(0, 4, size=60).astype(float)
    return H, T, w


def _accumulate(H, T, w=None, n_batches=4):
    acc = GramAccumulator(H.shape[1], T.shape[1])
    chunks = np.array_split(np.arange(len(H)), n_batches)
    for rows in chunks:
        weights = None if w is None else torch.from_numpy(w[rows])
        acc.update(torch.from_numpy(H[rows]), torch.from_numpy(T[rows]), weights)
    return acc


def test_integer_weights_equal_repeated_rows(weighted_rows):
    H, T, w = weighted_rows
    weighted = _accumulate(H, T, w)
    rows = np.repeat(np.arange(len(H)), w.astype(int))
    repeated = _accumulate(H[rows], T[rows])
    assert weighted.n_samples == pytest.approx(repeated.n_samples)
    for mine, theirs in zip(weighted.tensors(), repeated.tensors(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-10)


def test_weighted_solve_matches_sklearn_ridge_with_sample_weight(weighted_rows):
    from sklearn.linear_model import Ridge

    from skfastretrain import ridge_solve

    H, T, w = weighted_rows
    coef, intercept = ridge_solve(_accumulate(H, T, w), 2.0)
    ref = Ridge(alpha=2.0, solver="cholesky").fit(H, T, sample_weight=w)
    np.testing.assert_allclose(coef.numpy(), ref.coef_.T, rtol=1e-10)
    np.testing.assert_allclose(intercept.numpy(), ref.intercept_, rtol=1e-10)


def test_unweighted_batches_count_one_beside_weighted_ones(weighted_rows):
    H, T, w = weighted_rows
    acc = GramAccumulator(5, 2)
    acc.update(torch.from_numpy(H[:30]), torch.from_numpy(T[:30]))
    acc.update(
        torch.from_numpy(H[30:]), torch.from_numpy(T[30:]), torch.from_numpy(w[30:])
    )
    ones = np.concatenate([np.ones(30), w[30:]])
    for mine, theirs in zip(
        acc.tensors(), _accumulate(H, T, ones).tensors(), strict=True
    ):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-10)


def test_weights_of_the_wrong_shape_are_refused():
    acc = GramAccumulator(3, 1)
    with pytest.raises(ValueError, match=r"weights must have shape \(4,\)"):
        acc.update(torch.ones(4, 3), torch.ones(4, 1), torch.ones(3))


def test_weighted_folds_choose_the_strength_of_repeated_rows(weighted_rows):
    from skfastretrain import select_lambda
    from skfastretrain.linalg._gram import HeadStatistics

    H, T, w = weighted_rows
    labels = np.argmax(T, axis=1)
    weighted = HeadStatistics(2, n_folds=3)
    weighted.add(torch.from_numpy(H), labels, weights=torch.from_numpy(w))
    # The same rows repeated inside their own fold: row i is in fold i % 3.
    repeated = [GramAccumulator(5, 2) for _ in range(3)]
    for f, acc in enumerate(repeated):
        rows = np.flatnonzero(np.arange(len(H)) % 3 == f)
        rows = np.repeat(rows, w[rows].astype(int))
        T_pm = -np.ones((len(rows), 2))
        T_pm[np.arange(len(rows)), labels[rows]] = 1.0
        acc.update(torch.from_numpy(H[rows]), torch.from_numpy(T_pm))
    alpha, errors = select_lambda(weighted.folds)
    alpha_rep, errors_rep = select_lambda(repeated)
    assert alpha == pytest.approx(alpha_rep, rel=1e-12)
    np.testing.assert_allclose(errors, errors_rep, rtol=1e-9)
