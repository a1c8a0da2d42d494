"""Closed-form ridge solve of the classifier head from Gram statistics."""

import warnings

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import LinAlgWarning

from ._gram import GramAccumulator, sum_statistics

__all__ = [
    "LAMBDA_GRID",
    "STAGE_WEIGHT_GRID",
    "ridge_solve",
    "select_lambda",
    "select_stage_weight",
    "stage_scale",
]

#: Candidate ridge strengths of ``ridge_lambda="auto"``, relative to the mean
#: eigenvalue ``trace(G_c) / d`` of the centered Gram matrix, so the grid
#: follows the scale of the features and the number of rows.
LAMBDA_GRID = np.logspace(-6, 1, 15)

#: Candidate weights of the earlier stages' features, rescaled to the last
#: layer's scale (:func:`stage_scale`), searched by
#: :func:`select_stage_weight`: 0 leaves them out, 1 weighs them like a
#: typical last-layer feature. Each candidate but 0 costs one
#: eigendecomposition of the full width per fold (about 16 s at Lite0's
#: 3,088 features with 5 folds on 2 CPU cores).
STAGE_WEIGHT_GRID = (0.0, 1.0)

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
    stats: GramAccumulator,
    alpha: float,
    *,
    fit_intercept: bool = True,
    scale: torch.Tensor | None = None,
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
    scale : torch.Tensor of shape (d,) or None, default=None
        Solve on the features scaled column by column (a column with scale
        0 is left out) and return the weights of the unscaled features:
        ``coef = scale * coef_scaled``, 0 for the columns left out. The
        penalty is ``alpha`` on the scaled weights (see :func:`stage_scale`).

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
    if scale is not None:
        scale = torch.as_tensor(scale, dtype=torch.float64)
        coef, intercept = ridge_solve(
            stats.scaled(scale), alpha, fit_intercept=fit_intercept
        )
        keep = (scale != 0).to(coef.device)
        full = coef.new_zeros(stats.n_features, coef.shape[1])
        full[keep] = coef * scale.to(coef)[keep][:, None]
        return full, intercept
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


def stage_scale(stats: GramAccumulator, widths, weight: float) -> torch.Tensor:
    """The column scaling of a head that reads several stages.

    The last layer's features keep their scale, so that with ``weight=0``
    the solve is the plain head solve on the last layer. Each feature of an
    earlier stage is brought to the last layer's average scale, its
    standard deviation over the rows of ``stats`` to the root mean variance
    of the last layer's features (a constant one gets 0 and drops out), and
    multiplied by ``weight``: a ridge penalty ``1 / weight**2`` times
    stronger on the earlier stages than on a typical last-layer feature.

    Parameters
    ----------
    stats : GramAccumulator
    widths : sequence of int
        The widths of the stages, in feature order, adding up to
        ``stats.n_features``; the last is the last layer's.
    weight : float
        Weight of the earlier stages, ``>= 0``.

    Returns
    -------
    scale : torch.Tensor of shape (d,), float64
    """
    if sum(widths) != stats.n_features:
        raise ValueError(
            f"The stage widths {list(widths)} add up to {sum(widths)}, not to "
            f"the {stats.n_features} features."
        )
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0, got {weight!r}.")
    n, last = stats.n_samples, stats.n_features - widths[-1]
    gram, _, h_sum, _, _ = (t.to(torch.float64) for t in stats.tensors())
    var = (gram.diagonal() - h_sum * h_sum / n).clamp_min(0) / n
    target = float(var[last:].mean()) if widths[-1] else 1.0
    tiny = torch.finfo(torch.float64).eps * max(float(var.max()), 1e-300)
    scale = torch.ones_like(var)
    early = var[:last]
    scale[:last] = torch.where(
        early > tiny,
        weight * (target / early.clamp_min(tiny)).sqrt(),
        torch.zeros_like(early),
    )
    return scale


def _mean_eigenvalue(gram, h_sum, n):
    # trace(G_c) / d without forming G_c.
    return float(torch.trace(gram) - h_sum @ h_sum / n) / gram.shape[0]


def lambda_unit(stats: GramAccumulator) -> float:
    """``trace(G_c) / d`` of ``stats``: the unit of :data:`LAMBDA_GRID`.

    A strength divided by it carries over to statistics of other rows or
    features on another scale.
    """
    gram, _, h_sum, _, _ = (t.to(torch.float64) for t in stats.tensors())
    return max(_mean_eigenvalue(gram, h_sum, stats.n_samples), np.finfo(float).tiny)


def select_stage_weight(
    folds: list[GramAccumulator],
    widths,
    weights=STAGE_WEIGHT_GRID,
    grid=LAMBDA_GRID,
) -> tuple[float, float, np.ndarray]:
    """Choose the earlier stages' weight and the ridge strength together.

    Each candidate weight scales the statistics of every fold by
    :func:`stage_scale` (computed on all rows) and runs
    :func:`select_lambda` on them; the pair with the lowest total
    validation error wins. The errors of all candidates are squared errors
    on the same targets, so they compare across weights. A weight of 0
    solves on the last stage's columns alone, at their cost.

    Parameters
    ----------
    folds : list of GramAccumulator
        Statistics of disjoint folds of the rows (at least 2).
    widths : sequence of int
        Stage widths, the last layer's last (see :func:`stage_scale`).
    weights : sequence of float, default=STAGE_WEIGHT_GRID
    grid : array-like of float, default=LAMBDA_GRID

    Returns
    -------
    weight : float
    alpha : float
        In the units of the scaled statistics (pass both to
        :func:`stage_scale` and :func:`ridge_solve`).
    errors : ndarray of shape (len(weights), len(grid))

    Examples
    --------
    >>> import torch
    >>> from skfastretrain import GramAccumulator, select_stage_weight
    >>> g = torch.Generator().manual_seed(0)
    >>> H = torch.randn(200, 6, generator=g, dtype=torch.float64)
    >>> T = H[:, :2].sum(1, keepdim=True)  # only the first stage matters
    >>> folds = [GramAccumulator(6, 1) for _ in range(4)]
    >>> for i, fold in enumerate(folds):
    ...     fold.update(H[i::4], T[i::4])
    >>> weight, alpha, errors = select_stage_weight(folds, widths=[2, 4])
    >>> weight > 0
    True
    """
    total = sum_statistics(folds)
    table, alphas = [], []
    for weight in weights:
        scale = stage_scale(total, widths, weight)
        alpha, errors = select_lambda([fold.scaled(scale) for fold in folds], grid)
        table.append(errors)
        alphas.append(alpha)
    table = np.asarray(table)
    best = int(np.argmin(table.min(1)))
    return float(weights[best]), alphas[best], table


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
    scale = _mean_eigenvalue(gram, h_sum, n_total)
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
