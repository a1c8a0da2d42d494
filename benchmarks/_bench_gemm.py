"""P4: the head solve's arithmetic against this machine's float64 GEMM rate."""

import time

import torch

from skfastretrain import GramAccumulator, ridge_solve, select_lambda
from skfastretrain.linalg._gram import update_folds

N_ROWS = 10_000
N_CLASSES = 10
WIDTHS = (1280, 2048)
BATCHES = (32, 256)


def _best(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def gemm_rate(d, repeats=5):
    """Best-of-``repeats`` FLOP/s of a float64 (d, d) x (d, d) torch.mm."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(d, d, dtype=torch.float64, generator=g)
    b = torch.randn(d, d, dtype=torch.float64, generator=g)
    torch.mm(a, b)  # warm-up
    return 2 * d**3 / _best(lambda: torch.mm(a, b), repeats)


def _synthetic(d, n=N_ROWS, k=N_CLASSES):
    # Post-ReLU6-like float32 features and {-1, +1} one-hot targets, as the
    # feature pass hands them to the accumulator.
    g = torch.Generator().manual_seed(1)
    H = torch.rand(n, d, generator=g) * 6
    y = torch.randint(0, k, (n,), generator=g)
    T = torch.full((n, k), -1.0)
    T[torch.arange(n), y] = 1.0
    return H, T


def _accumulate(H, T, batch, n_folds=1):
    d, k = H.shape[1], T.shape[1]
    folds = [GramAccumulator(d, k) for _ in range(n_folds)]
    for i in range(0, len(H), batch):
        # Round-robin rows, as RidgeHeadSolver does for ridge_lambda="auto".
        update_folds(folds, i, H[i : i + batch], T[i : i + batch])
    return folds


def measure_width(d, repeats=5):
    """Gram, solve and auto-lambda timings at width ``d``; rates vs GEMM."""
    n, k = N_ROWS, N_CLASSES
    rates = [gemm_rate(d)]
    H, T = _synthetic(d)
    gram_flops = 2 * n * d**2 + 2 * n * d * k
    solve_flops = d**3 / 3 + 2 * d**2 * k
    out = {"d": d, "n": n, "k": k}
    for batch in BATCHES:
        out[f"gram_s_batch{batch}"] = _best(
            lambda b=batch: _accumulate(H, T, b), repeats
        )
    stats = _accumulate(H, T, 256)[0]
    t_solve = _best(lambda: ridge_solve(stats, 1.0), repeats)
    # On a shared machine the GEMM rate is measured again after the timings
    # and the best rate kept, so that contention cannot inflate the shares.
    rates.append(gemm_rate(d))
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
    t_folds = _best(lambda: _accumulate(H, T, 32, n_folds=5), 2)
    folds = _accumulate(H, T, 256, n_folds=5)
    out["gram_s_batch32_5folds"] = t_folds
    out["gram_share_batch32_5folds"] = gram_flops / t_folds / rate
    out["select_lambda_s"] = _best(lambda: select_lambda(folds), 2)
    return out


def run_gemm():
    """P4 record for every width."""
    return {
        "threads": torch.get_num_threads(),
        "widths": [measure_width(d) for d in WIDTHS],
    }
