import warnings

import numpy as np
import pytest
import torch
from scipy.linalg import LinAlgWarning
from sklearn.linear_model import Ridge

from skfastretrain import GramAccumulator, ridge_solve


def _stats(H, T, n_batches=3):
    acc = GramAccumulator(H.shape[1], T.shape[1])
    for h, t in zip(
        np.array_split(H, n_batches), np.array_split(T, n_batches), strict=True
    ):
        acc.update(torch.from_numpy(h), torch.from_numpy(t))
    return acc


def _rel_err(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


@pytest.mark.parametrize("alpha", [1e-3, 0.25, 1.0, 100.0])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("shape", [(200, 10, 3), (60, 30, 5)])
def test_matches_sklearn_ridge(alpha, fit_intercept, shape):
    n, d, k = shape
    rng = np.random.default_rng(0)
    H = rng.normal(1.5, 2.0, size=(n, d))
    T = np.where(rng.integers(0, k, n)[:, None] == np.arange(k), 1.0, -1.0)
    coef, intercept = ridge_solve(_stats(H, T), alpha, fit_intercept=fit_intercept)
    ref = Ridge(alpha=alpha, fit_intercept=fit_intercept, solver="cholesky").fit(H, T)
    assert _rel_err(coef.numpy(), ref.coef_.T) < 1e-6
    assert _rel_err(intercept.numpy() + 1e-300, np.atleast_1d(ref.intercept_)) < 1e-6


def _lstsq_reference(H, T, alpha):
    # Ridge as an augmented least-squares problem, solved without forming the
    # Gram matrix: [Hc; sqrt(alpha) I] W = [Tc; 0], minimum-norm when singular.
    Hc, Tc = H - H.mean(0), T - T.mean(0)
    d, k = H.shape[1], T.shape[1]
    A = np.vstack([Hc, np.sqrt(alpha) * np.eye(d)])
    coef = np.linalg.lstsq(A, np.vstack([Tc, np.zeros((d, k))]), rcond=None)[0]
    return coef, T.mean(0) - H.mean(0) @ coef


def _hard_case(name, rng):
    H = rng.normal(size=(40, 8))
    if name == "duplicate_features":
        H = np.hstack([H, H[:, :3]])
    elif name == "constant_features":
        H[:, 2] = 5.0
        H[:, 5] = -1.0
    elif name == "d_greater_than_n":
        H = rng.normal(size=(10, 30))
    elif name == "huge_scale":
        H = H * 1e6
    elif name == "tiny_scale":
        H = H * 1e-6
    elif name == "mixed_scales":
        H = H * 10.0 ** np.linspace(-6, 6, H.shape[1])
    return H


@pytest.mark.parametrize(
    "case",
    [
        "duplicate_features",
        "constant_features",
        "d_greater_than_n",
        "huge_scale",
        "tiny_scale",
        "mixed_scales",
    ],
)
@pytest.mark.parametrize("alpha", [1e-12, 1e-3, 1.0])
def test_hard_cases_are_finite_and_match_lstsq(case, alpha):
    rng = np.random.default_rng(2)
    H = _hard_case(case, rng)
    T = rng.normal(size=(H.shape[0], 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)
        coef, intercept = ridge_solve(_stats(H, T), alpha)
    assert torch.isfinite(coef).all() and torch.isfinite(intercept).all()
    ref_coef, ref_intercept = _lstsq_reference(H, T, alpha)
    # Predictions are what matters when the solution is not unique.
    pred = H @ coef.numpy() + intercept.numpy()
    ref_pred = H @ ref_coef + ref_intercept
    assert _rel_err(pred, ref_pred) < 1e-5


def test_singular_gram_warns_and_falls_back():
    rng = np.random.default_rng(3)
    H = rng.normal(size=(5, 20))
    with pytest.warns(LinAlgWarning, match="falling back"):
        coef, _ = ridge_solve(_stats(H, rng.normal(size=(5, 2))), 0.0)
    assert torch.isfinite(coef).all()


def test_negative_alpha_rejected():
    rng = np.random.default_rng(4)
    stats = _stats(rng.normal(size=(5, 2)), rng.normal(size=(5, 1)))
    with pytest.raises(ValueError, match="alpha"):
        ridge_solve(stats, -1.0)


@pytest.mark.parametrize("n_folds", [3, 5])
@pytest.mark.parametrize("noise", [0.1, 3.0])
def test_select_lambda_matches_grid_search_on_the_same_folds(n_folds, noise):
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    from skfastretrain import LAMBDA_GRID, select_lambda

    rng = np.random.default_rng(5)
    H = rng.normal(2.0, 1.5, size=(240, 30))
    T = H[:, :4] @ rng.normal(size=(4, 3)) + noise * rng.normal(size=(240, 3))
    fold_of_row = np.arange(240) % n_folds
    folds = [GramAccumulator(30, 3) for _ in range(n_folds)]
    for f, acc in enumerate(folds):
        acc.update(
            torch.from_numpy(H[fold_of_row == f]), torch.from_numpy(T[fold_of_row == f])
        )
    alpha, errors = select_lambda(folds)
    Hc = H - H.mean(0)
    alphas = LAMBDA_GRID * np.trace(Hc.T @ Hc) / 30
    search = GridSearchCV(
        Ridge(),
        {"alpha": alphas},
        cv=PredefinedSplit(fold_of_row),
        scoring="neg_mean_squared_error",
    ).fit(H, T)
    assert alpha == pytest.approx(search.best_params_["alpha"], rel=1e-12)
    # Same ranking, and the same total errors (sklearn averages per fold).
    sk_errors = -search.cv_results_["mean_test_score"] * 240 * 3
    np.testing.assert_allclose(errors, sk_errors, rtol=1e-6)


def test_select_lambda_survives_eigh_failure(monkeypatch):
    from skfastretrain import select_lambda

    rng = np.random.default_rng(7)
    H, T = rng.normal(size=(60, 5)), rng.normal(size=(60, 2))
    folds = [GramAccumulator(5, 2) for _ in range(3)]
    for f, acc in enumerate(folds):
        acc.update(torch.from_numpy(H[f::3]), torch.from_numpy(T[f::3]))
    expected = select_lambda(folds)

    def failing(matrix):
        raise torch.linalg.LinAlgError("did not converge")

    monkeypatch.setattr(torch.linalg, "eigh", failing)
    got = select_lambda(folds)
    assert got[0] == pytest.approx(expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-8)


def _folds(H, T, n_folds):
    fold_of_row = np.arange(len(H)) % n_folds
    folds = [GramAccumulator(H.shape[1], T.shape[1]) for _ in range(n_folds)]
    for f, acc in enumerate(folds):
        rows = fold_of_row == f
        acc.update(torch.from_numpy(H[rows]), torch.from_numpy(T[rows]))
    return folds, fold_of_row


def _two_stage_data(seed=3, n=240):
    # An earlier stage of 12 features on scales decades apart, one constant,
    # and a last layer of 8; the targets read both stages.
    rng = np.random.default_rng(seed)
    early = rng.normal(size=(n, 12)) * np.logspace(-3, 1, 12)
    early[:, 5] = 2.0
    last = rng.normal(1.0, 0.5, size=(n, 8))
    signal = early[:, :2] / early[:, :2].std(0)
    T = signal + last[:, :2] + 0.3 * rng.normal(size=(n, 2))
    return np.hstack([early, last]), T


def test_stage_scale_brings_earlier_stages_to_the_last_layers_scale():
    from skfastretrain import stage_scale

    H, T = _two_stage_data()
    var = H.var(0)
    target = var[12:].mean()
    expected = np.ones(20)
    expected[:12] = 0.5 * np.sqrt(target / np.where(var[:12] > 0, var[:12], 1))
    expected[5] = 0.0  # the constant feature drops out
    scale = stage_scale(_stats(H, T), [12, 8], 0.5).numpy()
    np.testing.assert_allclose(scale, expected, rtol=1e-8)
    with pytest.raises(ValueError, match="add up to 19"):
        stage_scale(_stats(H, T), [11, 8], 1.0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        stage_scale(_stats(H, T), [12, 8], -1.0)


def test_stage_weight_zero_is_the_plain_solve_on_the_last_layer():
    from skfastretrain import stage_scale

    H, T = _two_stage_data()
    stats = _stats(H, T)
    coef, _ = ridge_solve(stats, 3.0, scale=stage_scale(stats, [12, 8], 0.0))
    ref = Ridge(alpha=3.0, solver="cholesky").fit(H[:, 12:], T)
    assert _rel_err(coef.numpy()[12:], ref.coef_.T) < 1e-8
    assert not coef.numpy()[:12].any()


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("alpha", [0.1, 10.0])
def test_scaled_solve_matches_sklearn_on_scaled_features(weight, alpha):
    from skfastretrain import stage_scale

    H, T = _two_stage_data()
    stats = _stats(H, T)
    scale = stage_scale(stats, [12, 8], weight)
    coef, intercept = ridge_solve(stats, alpha, scale=scale)
    kept = scale.numpy() != 0
    Hs = H[:, kept] * scale.numpy()[kept]
    ref = Ridge(alpha=alpha, solver="cholesky").fit(Hs, T)
    # The weights apply to the unscaled features, 0 where a column is out.
    assert _rel_err(H @ coef.numpy() + intercept.numpy(), ref.predict(Hs)) < 1e-8
    assert not coef.numpy()[~kept].any()
    # The scaled statistics are those of the scaled columns.
    np.testing.assert_allclose(
        stats.scaled(scale).gram.numpy(), Hs.T @ Hs, rtol=1e-10, atol=1e-10
    )


def test_select_stage_weight_matches_grid_search_on_scaled_features():
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    from skfastretrain import LAMBDA_GRID, select_stage_weight, stage_scale

    H, T = _two_stage_data()
    folds, fold_of_row = _folds(H, T, 4)
    weights = (0.0, 0.5, 1.0)
    weight, alpha, errors = select_stage_weight(folds, [12, 8], weights)
    assert errors.shape == (3, len(LAMBDA_GRID))
    best = []
    for w in weights:
        scale = stage_scale(_stats(H, T), [12, 8], w).numpy()
        Hs = H[:, scale != 0] * scale[scale != 0]
        Hc = Hs - Hs.mean(0)
        search = GridSearchCV(
            Ridge(),
            {"alpha": LAMBDA_GRID * np.trace(Hc.T @ Hc) / Hs.shape[1]},
            cv=PredefinedSplit(fold_of_row),
            scoring="neg_mean_squared_error",
        ).fit(Hs, T)
        best.append((-search.best_score_, w, search.best_params_["alpha"]))
    _, ref_weight, ref_alpha = min(best)
    # The earlier stage carries signal: it enters.
    assert weight == ref_weight > 0
    assert alpha == pytest.approx(ref_alpha, rel=1e-10)


def test_select_stage_weight_leaves_noise_stages_out():
    from skfastretrain import select_stage_weight

    rng = np.random.default_rng(4)
    noise = rng.normal(size=(120, 60))
    last = rng.normal(size=(120, 4))
    T = last[:, :2] + 0.1 * rng.normal(size=(120, 2))
    folds, _ = _folds(np.hstack([noise, last]), T, 5)
    weight, _, _ = select_stage_weight(folds, [60, 4])
    assert weight == 0.0
