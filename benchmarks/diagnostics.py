"""Side measurements behind the benchmark's findings and the docs.

1. Thread contention: the median Lite0 SGD step (batch 32, 64 px) and one
   float64 ``torch.linalg.eigh`` at d=1280 (what ``select_lambda`` runs five
   times per head solve), alone and next to a competing 2-thread GEMM loop,
   with libgomp's default busy-waiting and with ``OMP_WAIT_POLICY=PASSIVE``.
2. Memory of the head solve: the peak RSS added by the five fold
   accumulators of ``ridge_lambda="auto"``, then by ``select_lambda`` or by
   the final ``ridge_solve`` (each in its own process), at d=1280 and
   n=1,500 and 10,000.
3. The size of a pickled fitted estimator (the defaults: Lite0, 300 bundled
   Fashion-MNIST images, 1 epoch) against its model's weights, as pickled by
   default and with ``net_.keep_training_state = True``.

Each measurement runs in a fresh process (a function of this module, called
by ``python -m benchmarks._lib.worker``). Usage, from the repository root::

    python -m benchmarks.diagnostics                 # results/diagnostics.json, .md
    python -m benchmarks.diagnostics --parts memory  # rerun one part, keep the others
    python -m benchmarks.diagnostics --report        # re-print a saved run
    python -m benchmarks.diagnostics --smoke         # every part, tiny: checks the code

``--smoke`` measures every part small (eigh at d=256, one SGD step, n=300, a
fit on 100 images) and writes to a temporary folder (or ``--results-dir``).
"""

import os
import resource
import time

import torch
from torch import nn

from ._lib import results as results_lib
from ._lib.gram import accumulate, sum_folds, synthetic_features
from ._lib.measure import machine_info, median_time
from ._lib.models import Preprocess, pretrained_lite0
from ._lib.tables import markdown_table
from ._lib.worker import omp_env, run_in_process, start_in_process

PARTS = ("contention", "memory", "pickle")
#: The measurements' keyword arguments in a full run and in ``--smoke``.
FULL = {"contention": {}, "memory_n": (1500, 10_000), "pickle": {}}
SMOKE = {
    "contention": {"d": 256, "n_steps": 1, "warmup": 0},
    "memory_n": (300,),
    "pickle": {"n_images": 100},
}


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def eigh_and_step(d=1280, n_steps=10, warmup=2):
    """One float64 ``torch.linalg.eigh`` at ``d`` (median of 3) and the Lite0
    SGD step (batch 32, 64 px; median of ``n_steps`` after ``warmup``)."""
    g = torch.randn(d, d, dtype=torch.float64)
    g = g @ g.T
    eigh_s = median_time(lambda: torch.linalg.eigh(g), 3, warmup=0)
    torch.manual_seed(0)
    m = nn.Sequential(Preprocess(), pretrained_lite0(10))
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randint(0, 255, (32, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (32,))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    return {"eigh_s": eigh_s, "step_s": median_time(step, n_steps, warmup=warmup)}


def competing_gemm_loop():
    """A 2-thread GEMM loop that runs until it is stopped (the competitor)."""
    a = torch.randn(1024, 1024)
    while True:
        a = torch.mm(a, a).div_(a.norm())


def head_solve_memory(n, step):
    """Peak RSS added by the five fold accumulators of ``ridge_lambda="auto"``
    (d=1280, ``n`` rows), then by ``step``: ``select_lambda`` or the final
    ``ridge_solve`` on the folds' sums."""
    from skfastretrain import ridge_solve, select_lambda

    H, T = synthetic_features(1280, n=n)
    base = _peak_mb()
    folds = accumulate(H, T, 32, n_folds=5)
    after_folds = _peak_mb()
    if step == "select_lambda":
        select_lambda(folds)
    else:
        ridge_solve(sum_folds(folds), 1.0)
    return {"folds_mb": after_folds - base, "step_mb": _peak_mb() - after_folds}


def pickle_size(n_images=300):
    """Sizes of a pickled fitted estimator (the defaults, 1 epoch on the
    bundled Fashion-MNIST) against its model's weights."""
    import pickle

    from skfastretrain import FastRetrainClassifier
    from skfastretrain.datasets import load_fashion_mnist

    data = load_fashion_mnist(source="bundled")
    clf = FastRetrainClassifier(max_epochs=1, random_state=0, verbose=0)
    clf.fit(data.data[:n_images], data.target[:n_images])
    state = clf.module_.state_dict().values()
    weights = sum(t.numel() * t.element_size() for t in state)
    slim = len(pickle.dumps(clf))
    clf.net_.keep_training_state = True
    full = len(pickle.dumps(clf))
    return {
        "weights_mb": weights / 1e6,
        "pickle_mb": slim / 1e6,
        "pickle_kept_mb": full / 1e6,
    }


def contention(scale=FULL):
    rows = []
    for competitor in (False, True):
        for policy in ("default", "PASSIVE"):
            other = None
            if competitor:
                # libgomp's default wait policy, as another job would have it.
                other = start_in_process(competing_gemm_loop, env=omp_env(None))
                time.sleep(2)
            try:
                env = omp_env(None if policy == "default" else policy)
                rec = run_in_process(
                    eigh_and_step, scale["contention"], env=env, check=False
                )
            finally:
                if other is not None:
                    other.terminate()
                    other.wait()
            rows.append({"competitor": competitor, "omp_wait_policy": policy, **rec})
            print(rows[-1], flush=True)
    return rows


def memory(scale=FULL):
    # One process per step, so that each step's peak is its own.
    rows = []
    for n in scale["memory_n"]:
        row = {"d": 1280, "n": n}
        for step in ("select_lambda", "ridge_solve"):
            rec = run_in_process(head_solve_memory, {"n": n, "step": step}, check=False)
            row["folds_mb"] = rec["folds_mb"]
            row[f"{step}_mb"] = rec["step_mb"]
        rows.append(row)
        print(rows[-1], flush=True)
    return rows


def pickle_part(scale=FULL):
    rec = run_in_process(pickle_size, scale["pickle"], check=False)
    print(rec, flush=True)
    return rec


def render(result):
    load = result["machine"]["loadavg"][0]
    note = (
        f"Other jobs were running too (1-min load average {load:.1f} at the "
        "start); the competitor adds a known one. eigh: median of 3; SGD step: "
        "median of 10, Lite0 at 64 px, batch 32."
    )
    a = markdown_table(
        ["added 2-thread GEMM loop", "OMP_WAIT_POLICY", "eigh d=1280 s", "SGD step s"],
        [
            [
                "yes" if r["competitor"] else "no",
                r["omp_wait_policy"],
                f"{r['eigh_s']:.2f}",
                f"{r['step_s']:.2f}",
            ]
            for r in result["contention"]
        ],
    )
    measured = result.get("measured", {})
    if "memory" in measured:
        note += f" Memory measured at {measured['memory']}."
    b = markdown_table(
        [
            "d",
            "n",
            "5 fold accumulators +MiB",
            "select_lambda +MiB",
            "ridge_solve +MiB",
        ],
        [
            [
                str(r["d"]),
                str(r["n"]),
                f"{r['folds_mb']:.0f}",
                f"{r['select_lambda_mb']:.0f}",
                f"{r['ridge_solve_mb']:.0f}",
            ]
            for r in result["memory"]
        ],
    )
    text = note + "\n\n" + a + "\n\n" + b
    if "pickle" in result:
        rec = result["pickle"]
        text += "\n\n" + markdown_table(
            ["fitted Lite0 estimator", "MB"],
            [
                ["model weights (state_dict)", f"{rec['weights_mb']:.1f}"],
                ["pickle (default)", f"{rec['pickle_mb']:.1f}"],
                ["pickle, keep_training_state=True", f"{rec['pickle_kept_mb']:.1f}"],
            ],
        )
    return text


def main(argv=None):
    parser = results_lib.parts_parser(
        __doc__.splitlines()[0], PARTS, "every part, small: checks the code"
    )
    args = parser.parse_args(argv)
    results = results_lib.Results.from_args(args)
    if args.report:
        result = results.read_json("diagnostics.json")
    else:
        scale = SMOKE if args.smoke else FULL
        run = {"contention": contention, "memory": memory, "pickle": pickle_part}
        result = results.read_json("diagnostics.json", default={})
        result.setdefault("measured", {})
        for part in args.parts:
            # The contention note quotes the load under "machine".
            key = "machine" if part == "contention" else f"machine_{part}"
            result[key] = machine_info()
            result[part] = run[part](scale)
            result["measured"][part] = time.strftime("%Y-%m-%d %H:%M:%S")
            result[key]["loadavg_end"] = list(os.getloadavg())
        results.write_json("diagnostics.json", result)
    text = render(result)
    results.publish("diagnostics", text)


if __name__ == "__main__":
    main()
