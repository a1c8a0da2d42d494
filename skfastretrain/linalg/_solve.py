"""Closed-form ridge solve of the classifier head from Gram statistics."""

import warnings

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import LinAlgWarning

from ._gram import GramAccumulator, sum_statistics

__all__ = ["LAMBDA_GRID", "ridge_solve", "select_lambda"]

#: Candidate ridge strengths of ``ridge_lambda="auto"``, relative to the mean
#: eigenvalue ``trace(G_c) / d`` of the centered Gram matrix, so the grid
#: follows the scale of the features and the number of rows.
LAMBDA_GRID = np.logspace(-6, 1, 15)

_MIN_RCOND = 1e-8


def _eigh_solve(gram_c, cross_c, alpha):
    # Pseudo-inverse of the regularized Gram through its spectrum: stable when
    # the Gram is singular and alpha is near zero (duplicate or constant
    # features, d > n), where Cholesky breaks down.
    evals, evecs = _eigh(gram_c)
    shifted = evals.clamp_min(0) + alpha
    eps = torch.finfo(gram_c.dtype).eps
    cutoff = shifted.max() * gram_c.shape[0] * eps
    inv = torch.where(shifted > cutoff, 1.0 / shifted, torch.zeros_like(shifted))
    return evecs @ (inv[:, None] * (evecs.T @ cross_c))


def ridge_solve(
    stats: GramAccumulator, alpha: float, *, fit_intercept: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``(G + alpha I) W = B`` from accumulated statistics.

    With ``fit_intercept=True`` the features and targets are centered with
    their sums first, so the intercept is not penalized: the result equals
    :class:`sklearn.linear_model.Ridge` with the same ``alpha``.

    Cholesky is tried first. When the regularized Gram is not numerically
    positive definite, a :class:`scipy.linalg.LinAlgWarning` is emitted and a
    spectral pseudo-inverse is used instead.

    Parameters
    ----------
    stats : GramAccumulator
        Statistics accumulated over the training set.
    alpha : float
        Ridge strength, ``>= 0``.
    fit_intercept : bool, default=True
        Whether to center and return an unpenalized intercept.

    Returns
    -------
    coef : torch.Tensor of shape (d, k)
        Weights ``W``; predictions are ``H @ coef + intercept``.
    intercept : torch.Tensor of shape (k,)
        Zero when ``fit_intercept=False``.

    Examples
    --------
    >>> import torch
    >>> from skfastretrain import GramAccumulator, ridge_solve
    >>> H = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    >>> T = 2 * H + 1
    >>> acc = GramAccumulator(1, 1)
    >>> acc.update(H, T)
    >>> coef, intercept = ridge_solve(acc, alpha=1e-12)
    >>> round(coef.item(), 6), round(intercept.item(), 6)
    (2.0, 1.0)
    """
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}.")
    gram, cross, mu_h, mu_t = _solve_inputs(stats, fit_intercept)
    d = gram.shape[0]
    # In place on the fresh float64 copy: at d = 1280 every extra d x d
    # matrix is 13 MB of peak memory.
    gram.diagonal().add_(alpha)
    # Jacobi scaling: features on scales decades apart give a Gram matrix
    # whose condition number is mostly the spread of its diagonal; solving
    # for S^-1 W with S = diag^-1/2 removes it and leaves the solution as is.
    diagonal = gram.diagonal()
    scale = torch.where(diagonal > 0, diagonal.rsqrt(), torch.ones_like(diagonal))
    gram.mul_(scale[:, None]).mul_(scale)
    factor, info = torch.linalg.cholesky_ex(gram)
    del gram
    coef = None
    if int(info) == 0:
        diag = factor.diagonal()
        # The squared ratio of the factor's diagonal bounds the condition
        # number from below. Past 1e8 the triangular solves keep fewer than
        # 8 digits and the spectral route is the safer one.
        rcond = (diag.min() / diag.max()) ** 2
        if rcond > _MIN_RCOND:
            coef = scale[:, None] * torch.cholesky_solve(scale[:, None] * cross, factor)
    del factor
    if coef is None:
        warnings.warn(
            f"Ridge head solve: the regularized Gram matrix (d={d}, "
            f"alpha={alpha:g}) is not numerically positive definite; "
            "falling back to an eigendecomposition pseudo-inverse.",
            LinAlgWarning,
            stacklevel=2,
        )
        coef = _eigh_solve(_solve_inputs(stats, fit_intercept)[0], cross, alpha)
    if fit_intercept:
        intercept = mu_t.to(torch.float64) - mu_h.to(torch.float64) @ coef
    else:
        intercept = torch.zeros(cross.shape[1], dtype=coef.dtype, device=coef.device)
    return coef, intercept


def _solve_inputs(stats, fit_intercept):
    # Solve in float64 whatever the accumulation dtype: the final step is
    # O(d^3) once per solve and float32 Cholesky loses digits at large d.
    # The Gram matrix returned is a fresh copy, free to be overwritten.
    if fit_intercept:
        return stats.centered()
    gram = stats.gram.to(torch.float64, copy=True)
    return gram, stats.cross.to(torch.float64), None, None


def _eigh(matrix):
    # LAPACK's divide-and-conquer (torch's driver) can fail to converge on
    # badly scaled matrices; the relatively robust representation driver of
    # scipy is slower but does not.
    try:
        return torch.linalg.eigh(matrix)
    except torch.linalg.LinAlgError:
        evals, evecs = scipy.linalg.eigh(matrix.cpu().numpy(), driver="evr")
        return (
            torch.from_numpy(evals).to(matrix),
            torch.from_numpy(evecs).to(matrix),
        )


def _validation_error(stats, coef, intercept):
    # Squared error sum ||H W + 1 b^T - T||^2 of rows summarized by ``stats``,
    # expanded so that only their Gram statistics are needed.
    gram, cross, h_sum, t_sum, t_sq = (t.to(coef) for t in stats.tensors())
    fit = (coef * (gram @ coef)).sum() + 2 * intercept @ (coef.T @ h_sum)
    fit = fit + stats.n_samples * intercept @ intercept
    return fit - 2 * (coef * cross).sum() - 2 * intercept @ t_sum + t_sq


def select_lambda(
    folds: list[GramAccumulator], grid=LAMBDA_GRID
) -> tuple[float, np.ndarray]:
    """Choose the ridge strength by k-fold cross-validation on statistics.

    Each fold's model is solved from the total statistics minus the fold's;
    its squared error on the fold follows from the fold's own statistics:
    ``tr(W^T G_f W) - 2 tr(W^T B_f) + ||T_f||^2`` plus the intercept's terms.
    No pass over the data is repeated. One eigendecomposition per fold serves
    every candidate.

    Parameters
    ----------
    folds : list of GramAccumulator
        Statistics of disjoint folds of the rows (at least 2).
    grid : array-like of float, default=LAMBDA_GRID
        Candidates relative to ``trace(G_c) / d`` of all rows.

    Returns
    -------
    alpha : float
        The candidate with the lowest total validation error, in absolute
        units (pass it to :func:`ridge_solve`).
    errors : ndarray of shape (len(grid),)
        Total validation squared error of each candidate.

    Examples
    --------
    >>> import torch
    >>> from skfastretrain import GramAccumulator, select_lambda
    >>> g = torch.Generator().manual_seed(0)
    >>> H = torch.randn(100, 5, generator=g, dtype=torch.float64)
    >>> T = H @ torch.ones(5, 1, dtype=torch.float64)
    >>> folds = [GramAccumulator(5, 1) for _ in range(4)]
    >>> for i, fold in enumerate(folds):
    ...     fold.update(H[i::4], T[i::4])
    >>> alpha, errors = select_lambda(folds)
    >>> float(errors.min()) < 1e-6
    True
    """
    if len(folds) < 2:
        raise ValueError("select_lambda needs at least 2 folds.")
    total = sum_statistics(folds)
    n_total = total.n_samples
    gram, cross, h_sum, t_sum, _ = (t.to(torch.float64) for t in total.tensors())
    # trace(G_c) without forming G_c.
    scale = float(torch.trace(gram) - h_sum @ h_sum / n_total) / gram.shape[0]
    alphas = np.asarray(grid, dtype=float) * max(scale, np.finfo(float).tiny)
    errors = np.zeros(len(alphas))
    # One d x d buffer serves every fold's centered training Gram; the
    # eigendecompositions run one at a time (peak memory, P5).
    work = torch.empty_like(gram)
    for fold in folds:
        f_gram, f_cross, f_h_sum, f_t_sum, _ = (
            t.to(torch.float64) for t in fold.tensors()
        )
        n = n_total - fold.n_samples
        mu_h = (h_sum - f_h_sum) / n
        mu_t = (t_sum - f_t_sum) / n
        torch.sub(gram, f_gram, out=work)
        work.addr_(mu_h, mu_h, alpha=-n)
        c = cross - f_cross - n * torch.outer(mu_h, mu_t)
        evals, evecs = _eigh(work)
        proj = evecs.T @ c
        for i, alpha in enumerate(alphas):
            coef = evecs @ (proj / (evals.clamp_min(0) + alpha)[:, None])
            intercept = mu_t - mu_h @ coef
            errors[i] += float(_validation_error(fold, coef, intercept))
        del evals, evecs
    return float(alphas[int(np.argmin(errors))]), errors
