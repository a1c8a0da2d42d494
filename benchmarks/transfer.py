"""Transfer benchmark: ImageNet EfficientNet-Lite0 -> Fashion-MNIST at 64 px.

Compares plain SGD with momentum (skorch), a linear probe and the four-way
ablation of FastRetrainClassifier (random freezing and ridge head solves),
each method in a fresh process so its peak resident memory is its own.

Usage::

    python benchmarks/transfer.py --quick            # a few minutes on 2 cores
    python benchmarks/transfer.py --full             # 10,000 / 2,000 images
    python benchmarks/transfer.py --quick --methods sgdm,ours --out try
    python benchmarks/transfer.py --report quick     # re-print a saved run

An interrupted run keeps the methods it finished in ``<name>.partial.json``;
``--report <name>.partial`` renders them.

Writes ``benchmarks/results/<name>.json``, ``<name>.png`` (test accuracy
against fit wall time) and ``<name>.md`` (the tables, in markdown).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from _bench_report import (  # noqa: E402
    TARGETS,
    compute_targets,
    markdown_table,
    paired_vs_sgdm,
    plot,
    render,
    update_readme,
)
from _bench_utils import (  # noqa: E402
    BATCH_SIZE,
    EXTRA_METHODS,
    METHODS,
    SEED,
    SETTINGS,
    image_size,
    machine_info,
)


@contextmanager
def package_snapshot():
    """Copy skfastretrain once, so every worker of a run imports the same code.

    Yields the folder to put first on the workers' PYTHONPATH and a record of
    what was copied (git HEAD, whether the package had local edits, and a
    hash of its sources).
    """
    source = HERE.parent / "skfastretrain"
    root = Path(tempfile.mkdtemp(prefix="skfr_bench_pkg_"))
    try:
        shutil.copytree(
            source, root / "skfastretrain", ignore=shutil.ignore_patterns("__pycache__")
        )
        digest = hashlib.sha1()
        for f in sorted((root / "skfastretrain").rglob("*")):
            if f.is_file():
                digest.update(str(f.relative_to(root)).encode() + f.read_bytes())

        def git(*args):
            out = subprocess.run(
                ["git", "-C", str(HERE.parent), *args], capture_output=True, text=True
            )
            return out.stdout.strip()

        info = {
            "git_head": git("rev-parse", "--short", "HEAD"),
            "package_dirty": bool(git("status", "--porcelain", "--", "skfastretrain")),
            "package_sha1": digest.hexdigest()[:12],
        }
        yield root, info
    finally:
        shutil.rmtree(root, ignore_errors=True)


def spawn_worker(method, params, setting, *, holdout=False, tag="run", package=None):
    """Run one method (or "gemm") in a fresh interpreter; return its record.

    ``package`` is a folder from :func:`package_snapshot` to import from.
    """
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{tag}_{method}_{os.getpid()}.tmp"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        "--params",
        json.dumps(params),
        "--setting",
        json.dumps(setting),
        "--result",
        str(out),
    ]
    if holdout:
        cmd.append("--holdout")
    # libgomp's default busy-waiting makes MKL and oneDNN crawl (up to 50x for
    # eigh) when another process shares the cores; passive waiting does not.
    env = {**os.environ}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if package is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(package), env.get("PYTHONPATH")) if p
        )
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    record = json.loads(out.read_text())
    out.unlink()
    record["process_wall"] = time.perf_counter() - start
    record["omp_wait_policy"] = env["OMP_WAIT_POLICY"]
    return record


def worker_main(args):

    if args.worker == "gemm":
        from _bench_gemm import run_gemm

        record = run_gemm()
    else:
        from _bench_methods import run_worker

        record = run_worker(
            args.worker,
            json.loads(args.params),
            json.loads(args.setting),
            holdout=args.holdout,
        )
    Path(args.result).write_text(json.dumps(record))


def summarize(result, sgdm_from=None):
    """Print the tables and write the JSON, the plot and the markdown.

    ``sgdm_from`` names a saved run whose sgdm record is the reference of the
    McNemar column when this run has none (extra variants run on their own).
    """
    name = result["name"]
    result["targets"] = compute_targets(result["methods"], result.get("gemm"))
    sgdm = result["methods"].get("sgdm")
    if sgdm is None and sgdm_from:
        other = json.loads((RESULTS / f"{sgdm_from}.json").read_text())
        sgdm, result["sgdm_from"] = other["methods"]["sgdm"], sgdm_from
    result["paired_vs_sgdm"] = paired_vs_sgdm(result["methods"], sgdm)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    plot(result, RESULTS / f"{name}.png")
    tables = render(result, markdown_table)
    (RESULTS / f"{name}.md").write_text(tables + "\n")
    print(render(result))
    print(f"\nwrote {RESULTS / name}.json, .png and .md")
    if update_readme(HERE / "README.md", name, tables):
        print(f"updated the {name!r} tables of {HERE / 'README.md'}")


def replace_in(name, methods):
    """Run ``methods`` again with the saved run's setting; swap their records."""
    path = RESULTS / f"{name}.json"
    result = json.loads(path.read_text())
    setting = {
        k: result["setting"][k]
        for k in ("n_train", "n_test", "epochs", "image_size")
        if k in result["setting"]
    }
    known = {**METHODS, **EXTRA_METHODS}
    with package_snapshot() as (package, info):
        for method in (m.strip() for m in methods if m.strip()):
            print(f"[{time.strftime('%H:%M:%S')}] {method} (rerun) ...", flush=True)
            if method == "gemm":
                result["gemm"] = spawn_worker("gemm", {}, setting, package=package)
                result["gemm"]["rerun_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
                result["gemm"]["rerun_package"] = info
                continue
            record = spawn_worker(method, known[method], setting, package=package)
            record["rerun_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            record["rerun_package"] = info
            result["methods"][method] = record
    summarize(result, result.get("sgdm_from"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small setting (default)")
    mode.add_argument("--full", action="store_true", help="10,000 / 2,000 images")
    mode.add_argument(
        "--native", action="store_true", help="224 px, 1,000 / 1,000 images"
    )
    mode.add_argument("--smoke", action="store_true", help="tiny, checks the code")
    mode.add_argument("--report", metavar="NAME", help="re-print a saved run")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)} (default: all), "
        f"or extras: {','.join(EXTRA_METHODS)}",
    )
    parser.add_argument("--out", help="result name (default: quick or full)")
    parser.add_argument("--no-gemm", action="store_true", help="skip P4")
    parser.add_argument(
        "--sgdm-from",
        metavar="NAME",
        help="saved run whose sgdm is the McNemar reference when this run has none",
    )
    parser.add_argument(
        "--replace-in",
        metavar="NAME",
        help="run --methods (or gemm, P4's measurement) again in the saved run NAME "
        "(same setting), replacing their records (marked with rerun_at), then "
        "re-render NAME",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--holdout", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        return worker_main(args)
    if args.report:
        result = json.loads((RESULTS / f"{args.report}.json").read_text())
        result["name"] = args.report
        return summarize(result, args.sgdm_from or result.get("sgdm_from"))

    if args.replace_in:
        return replace_in(args.replace_in, args.methods.split(","))
    setting_name = next(
        (n for n in ("full", "native", "smoke") if getattr(args, n)), "quick"
    )
    setting = SETTINGS[setting_name]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    known = {**METHODS, **EXTRA_METHODS}
    unknown = sorted(set(methods) - set(known))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(known)}")
    result = {
        "name": args.out or setting_name,
        "setting": {
            **setting,
            "name": setting_name,
            "batch_size": BATCH_SIZE,
            "image_size": image_size(setting),
            "seed": SEED,
        },
        "machine": machine_info(),
        "targets_defined": {k: list(v) for k, v in TARGETS.items()},
        "methods": {},
    }
    with package_snapshot() as (package, info):
        result["package"] = info
        # First, so that an interrupted run (a .partial.json) has it too.
        if not args.no_gemm:
            print(f"[{time.strftime('%H:%M:%S')}] gemm (P4) ...", flush=True)
            result["gemm"] = spawn_worker("gemm", {}, setting, package=package)
        for method in methods:
            print(f"[{time.strftime('%H:%M:%S')}] {method} ...", flush=True)
            record = spawn_worker(method, known[method], setting, package=package)
            result["methods"][method] = record
            # Kept as each method ends, so an interrupted run loses only one.
            partial = RESULTS / f"{result['name']}.partial.json"
            partial.write_text(json.dumps(result))
            last = record["points"][-1]
            print(
                f"    acc {last['test_acc']:.3f}, fit {record['fit_wall']:.1f} s, "
                f"peak RSS {record['peak_rss_mb']:.0f} MiB",
                flush=True,
            )
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    summarize(result, args.sgdm_from)
    (RESULTS / f"{result['name']}.partial.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
