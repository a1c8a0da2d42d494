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

Each measurement runs in a fresh process. Usage::

    python benchmarks/diagnostics.py                 # results/diagnostics.json, .md
    python benchmarks/diagnostics.py --parts memory  # rerun one part, keep the others
    python benchmarks/diagnostics.py --report        # re-print a saved run
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from _bench_utils import SNIPPET_PRELUDE, run_snippet  # noqa: E402

CONTENTION_CODE = """
g = torch.randn(1280, 1280, dtype=torch.float64)
g = g @ g.T
eigh = []
for _ in range(3):
    t = time.perf_counter(); torch.linalg.eigh(g); eigh.append(time.perf_counter() - t)
torch.manual_seed(0)
m = nn.Sequential(LitePreprocess(), _pretrained_lite0(10))
opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
x = torch.randint(0, 255, (32, 1, 28, 28), dtype=torch.uint8)
y = torch.randint(0, 10, (32,))
steps = []
for _ in range(12):
    t = time.perf_counter()
    opt.zero_grad(); nn.functional.cross_entropy(m(x), y).backward(); opt.step()
    steps.append(time.perf_counter() - t)
steps = sorted(steps[2:])
print(json.dumps({{"eigh_s": sorted(eigh)[1], "step_s": steps[len(steps) // 2]}}))
"""

COMPETITOR_CODE = """
import torch
a = torch.randn(1024, 1024)
while True:
    a = torch.mm(a, a).div_(a.norm())
"""

MEMORY_CODE = """
import json, resource, sys, torch
sys.path.insert(0, {here!r})
from _bench_gemm import _accumulate, _synthetic
from skfastretrain import ridge_solve, select_lambda
from skfastretrain.linalg._gram import sum_statistics
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
H, T = _synthetic(1280, n={n})
base = peak()
folds = _accumulate(H, T, 32, n_folds=5)
after_folds = peak()
if {step!r} == "select_lambda":
    select_lambda(folds)
else:
    ridge_solve(sum_statistics(folds), 1.0)
print(json.dumps({{"folds_mb": after_folds - base, "step_mb": peak() - after_folds}}))
"""


PICKLE_CODE = """
import json, pickle
from skfastretrain import FastRetrainClassifier
from skfastretrain.datasets import load_fashion_mnist
data = load_fashion_mnist(source="bundled")
clf = FastRetrainClassifier(max_epochs=1, random_state=0, verbose=0)
clf.fit(data.data[:300], data.target[:300])
weights = sum(t.numel() * t.element_size() for t in clf.module_.state_dict().values())
slim = len(pickle.dumps(clf))
clf.net_.keep_training_state = True
full = len(pickle.dumps(clf))
print(json.dumps({"weights_mb": weights / 1e6, "pickle_mb": slim / 1e6,
                  "pickle_kept_mb": full / 1e6}))
"""


def pickle_size():
    rec = run_snippet(PICKLE_CODE, {"OMP_WAIT_POLICY": "PASSIVE"})
    print(rec, flush=True)
    return rec


def contention():
    rows = []
    code = SNIPPET_PRELUDE.format(here=str(HERE)) + CONTENTION_CODE.format()
    for competitor in (False, True):
        for policy in ("default", "PASSIVE"):
            extra = {} if policy == "default" else {"OMP_WAIT_POLICY": "PASSIVE"}
            other = None
            if competitor:
                other = subprocess.Popen([sys.executable, "-c", COMPETITOR_CODE])
                time.sleep(2)
            try:
                rec = run_snippet(code, extra)
            finally:
                if other is not None:
                    other.terminate()
                    other.wait()
            rows.append({"competitor": competitor, "omp_wait_policy": policy, **rec})
            print(rows[-1], flush=True)
    return rows


def memory():
    # One process per step, so that each step's peak is its own.
    rows = []
    for n in (1500, 10_000):
        row = {"d": 1280, "n": n}
        for step in ("select_lambda", "ridge_solve"):
            code = MEMORY_CODE.format(here=str(HERE), n=n, step=step)
            rec = run_snippet(code, {"OMP_WAIT_POLICY": "PASSIVE"})
            row["folds_mb"] = rec["folds_mb"]
            row[f"{step}_mb"] = rec["step_mb"]
        rows.append(row)
        print(rows[-1], flush=True)
    return rows


def render(result):
    from _bench_report import markdown_table

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


def main():
    sys.path.insert(0, str(HERE))
    from _bench_report import update_readme
    from _bench_utils import machine_info

    path = RESULTS / "diagnostics.json"
    if "--report" in sys.argv:
        result = json.loads(path.read_text())
    else:
        parts = ["contention", "memory", "pickle"]
        if "--parts" in sys.argv:
            parts = sys.argv[sys.argv.index("--parts") + 1].split(",")
        result = json.loads(path.read_text()) if path.exists() else {}
        result.setdefault("measured", {})
        for part in parts:
            # The contention note quotes the load under "machine".
            key = "machine" if part == "contention" else f"machine_{part}"
            result[key] = machine_info()
            run = {"contention": contention, "memory": memory, "pickle": pickle_size}
            result[part] = run[part]()
            result["measured"][part] = time.strftime("%Y-%m-%d %H:%M:%S")
            result[key]["loadavg_end"] = list(os.getloadavg())
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    text = render(result)
    (RESULTS / "diagnostics.md").write_text(text + "\n")
    update_readme(HERE / "README.md", "diagnostics", text)
    print(text)


if __name__ == "__main__":
    main()
