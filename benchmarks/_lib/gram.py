"""P4: the head solve's arithmetic against this machine's float64 GEMM rate.

Synthetic features fed to :class:`~skfastretrain.GramAccumulator` as the head
solver feeds them (one accumulator, or five folds for ``ridge_lambda="auto"``),
then :func:`~skfastretrain.ridge_solve` and :func:`~skfastretrain.select_lambda`.
"""

import torch

from skfastretrain import GramAccumulator, ridge_solve, select_lambda

from .measure import best_time

N_ROWS = 10_000
N_CLASSES = 10
WIDTHS = (1280, 2048)
BATCHES = (32, 256)


def gemm_rate(d, repeats=5):
    """Best-of-``repeats`` FLOP/s of a float64 (d, d) x (d, d) torch.mm."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(d, d, dtype=torch.float64, generator=g)
    b = torch.randn(d, d, dtype=torch.float64, generator=g)
    torch.mm(a, b)  # warm-up
    return 2 * d**3 / best_time(lambda: torch.mm(a, b), repeats)


def synthetic_features(d, n=N_ROWS, k=N_CLASSES):
    """Post-ReLU6-like float32 features (n, d) and {-1, +1} one-hot targets
    (n, k), as the feature pass hands them to the accumulator."""
    g = torch.Generator().manual_seed(1)
    H = torch.rand(n, d, generator=g) * 6
    y = torch.randint(0, k, (n,), generator=g)
    T = torch.full((n, k), -1.0)
    T[torch.arange(n), y] = 1.0
    return H, T


def update_folds(folds, start, features, targets):
    """Add a batch to per-fold accumulators, rows assigned round-robin.

    Row ``i`` of the batch is row ``start + i`` of the pass and goes to fold
    ``(start + i) % len(folds)``, as the head solver assigns them for
    ``ridge_lambda="auto"``.
    """
    if len(folds) == 1:
        folds[0].update(features, targets)
        return
    fold = torch.arange(start, start + len(features)) % len(folds)
    for f, acc in enumerate(folds):
        acc.update(features[fold == f], targets[fold == f])


def sum_folds(folds):
    """One accumulator with the sums of ``folds``, added in place (as the
    head solver does before its final solve: one more set of sums)."""
    first = folds[0]
    total = GramAccumulator(first.n_features, first.n_targets, dtype=first.dtype)
    for acc in folds:
        for mine, theirs in zip(total.tensors(), acc.tensors(), strict=True):
            mine += theirs
        total.n_samples += acc.n_samples
    return total


def accumulate(H, T, batch, n_folds=1):
    """``n_folds`` accumulators fed ``H`` and ``T`` in batches of ``batch``."""
    d, k = H.shape[1], T.shape[1]
    folds = [GramAccumulator(d, k) for _ in range(n_folds)]
    for i in range(0, len(H), batch):
        update_folds(folds, i, H[i : i + batch], T[i : i + batch])
    return folds


def measure_width(d, n=N_ROWS, repeats=5):
    """Gram, solve and auto-lambda timings at width ``d``; rates vs GEMM."""
    k = N_CLASSES
    rates = [gemm_rate(d, repeats)]
    H, T = synthetic_features(d, n)
    gram_flops = 2 * n * d**2 + 2 * n * d * k
    solve_flops = d**3 / 3 + 2 * d**2 * k
    out = {"d": d, "n": n, "k": k}
    for batch in BATCHES:
        out[f"gram_s_batch{batch}"] = best_time(
            lambda b=batch: accumulate(H, T, b), repeats
        )
    stats = accumulate(H, T, 256)[0]
    t_solve = best_time(lambda: ridge_solve(stats, 1.0), repeats)
    # On a shared machine the GEMM rate is measured again after the timings
    # and the best rate kept, so that contention cannot inflate the shares.
    rates.append(gemm_rate(d, repeats))
    rate = max(rates)
    out["gemm_flops_per_s"] = rate
    out["gemm_flops_per_s_all"] = rates
    for batch in BATCHES:
        out[f"gram_share_batch{batch}"] = (
            gram_flops / out[f"gram_s_batch{batch}"] / rate
        )
    out["solve_s"] = t_solve
    out["solve_share"] = solve_flops / t_solve / rate
    for batch in BATCHES:
        total = out[f"gram_s_batch{batch}"] + t_solve
        out[f"gram_solve_share_batch{batch}"] = (
            (gram_flops + solve_flops) / total / rate
        )
    # What ridge_lambda="auto" adds: five fold accumulators fed from each
    # batch of 32, and the fold-wise eigendecompositions of select_lambda.
    t_folds = best_time(lambda: accumulate(H, T, 32, n_folds=5), min(2, repeats))
    folds = accumulate(H, T, 256, n_folds=5)
    out["gram_s_batch32_5folds"] = t_folds
    out["gram_share_batch32_5folds"] = gram_flops / t_folds / rate
    out["select_lambda_s"] = best_time(lambda: select_lambda(folds), min(2, repeats))
    return out


def run_gemm(widths=WIDTHS, n=N_ROWS, repeats=5):
    """P4 record for every width (smaller ``widths``, ``n`` and ``repeats``
    check the code)."""
    return {
        "threads": torch.get_num_threads(),
        "widths": [measure_width(d, n, repeats) for d in widths],
    }
