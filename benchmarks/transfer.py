"""Transfer benchmark: ImageNet EfficientNet-Lite0 -> Fashion-MNIST at 64 px.

Is the estimator's default configuration faster and better than plain
fine-tuning? It is compared with plain SGD with momentum (skorch), a
fastai-style fine-tune, a linear probe and the ablation of
FastRetrainClassifier (random freezing and ridge head solves), each method in
a fresh process so its peak resident memory is its own, and judged on the
targets P1-P6 (``benchmarks/README.md``).

Usage, from the repository root::

    python -m benchmarks.transfer --quick            # a few minutes on 2 cores
    python -m benchmarks.transfer --full             # 10,000 / 2,000 images
    python -m benchmarks.transfer --quick --methods sgdm,ours --out try
    python -m benchmarks.transfer --report quick     # re-print a saved run
    python -m benchmarks.transfer --smoke            # checks the code, ~1 min

An interrupted run keeps the methods it finished in ``<name>.partial.json``;
``--report <name>.partial`` renders them.

Writes ``benchmarks/results/<name>.json``, ``<name>.png`` (test accuracy
against fit wall time) and ``<name>.md`` (the tables, in markdown), and the
tables between the ``<!-- name:begin -->`` markers of the README. ``--smoke``
writes to a temporary folder instead (or ``--results-dir``).
"""

import argparse
import os
import time

from ._lib import results as results_lib
from ._lib.data import BATCH_SIZE, SEED, SETTINGS, image_size
from ._lib.measure import machine_info
from ._lib.methods import EXTRA_METHODS, METHODS
from ._lib.snapshot import package_snapshot, spawn_gemm, spawn_method
from ._lib.tables import markdown_table
from ._lib.targets import TARGETS, compute_targets, paired_vs_sgdm
from ._lib.transfer_report import plot, render

#: What ``--smoke`` runs unless ``--methods`` says otherwise: one method of
#: each runner (the targets' four and the pruning).
SMOKE_METHODS = ("default", "sgdm", "fastai", "linear_probe", "pruned")
#: P4's measurement in a smoke run: small widths, few rows, one repeat.
SMOKE_GEMM = {"widths": [128, 256], "n": 1000, "repeats": 1}


def summarize(result, results, sgdm_from=None):
    """Print the tables and write the JSON, the plot and the markdown.

    ``sgdm_from`` names a saved run whose sgdm record is the reference of the
    McNemar column when this run has none (extra variants run on their own).
    """
    name = result["name"]
    result["targets"] = compute_targets(result["methods"], result.get("gemm"))
    sgdm = result["methods"].get("sgdm")
    if sgdm is None and sgdm_from:
        other = results.read_json(f"{sgdm_from}.json")
        sgdm, result["sgdm_from"] = other["methods"]["sgdm"], sgdm_from
    result["paired_vs_sgdm"] = paired_vs_sgdm(result["methods"], sgdm)
    results.write_json(f"{name}.json", result)
    plot(result, results.path(f"{name}.png"))
    tables = render(result, markdown_table)
    results.write_text(f"{name}.md", tables)
    print(render(result))
    print(f"\nwrote {results.folder / name}.json, .png and .md")
    if results.update_readme(name, tables):
        print(f"updated the {name!r} tables of {results_lib.README}")


def replace_in(name, methods, results):
    """Run ``methods`` again with the saved run's setting; swap their records."""
    result = results.read_json(f"{name}.json")
    setting = {
        k: result["setting"][k]
        for k in ("n_train", "n_test", "epochs", "image_size", "source")
        if k in result["setting"]
    }
    known = {**METHODS, **EXTRA_METHODS}
    with package_snapshot() as (package, info):
        for method in methods:
            print(f"[{time.strftime('%H:%M:%S')}] {method} (rerun) ...", flush=True)
            if method == "gemm":
                record = spawn_gemm(package)
                result["gemm"] = record
            else:
                record = spawn_method(method, known[method], setting, package=package)
                result["methods"][method] = record
            record["rerun_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            record["rerun_package"] = info
    summarize(result, results, result.get("sgdm_from"))


def run(setting_name, methods, name, results, *, gemm=True, sgdm_from=None):
    """Measure P4 and every method of ``methods`` in ``setting_name``; report."""
    setting = SETTINGS[setting_name]
    known = {**METHODS, **EXTRA_METHODS}
    result = {
        "name": name,
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
    partial = f"{name}.partial.json"
    with package_snapshot() as (package, info):
        result["package"] = info
        # First, so that an interrupted run (a .partial.json) has it too.
        if gemm:
            print(f"[{time.strftime('%H:%M:%S')}] gemm (P4) ...", flush=True)
            small = SMOKE_GEMM if setting_name == "smoke" else {}
            result["gemm"] = spawn_gemm(package, **small)
        for method in methods:
            print(f"[{time.strftime('%H:%M:%S')}] {method} ...", flush=True)
            record = spawn_method(method, known[method], setting, package=package)
            result["methods"][method] = record
            # Kept as each method ends, so an interrupted run loses only one.
            results.write_json(partial, result, indent=None)
            last = record["points"][-1]
            print(
                f"    acc {last['test_acc']:.3f}, fit {record['fit_wall']:.1f} s, "
                f"peak RSS {record['peak_rss_mb']:.0f} MiB",
                flush=True,
            )
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    summarize(result, results, sgdm_from)
    results.path(partial).unlink(missing_ok=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small setting (default)")
    mode.add_argument("--full", action="store_true", help="10,000 / 2,000 images")
    mode.add_argument(
        "--native", action="store_true", help="224 px, 1,000 / 1,000 images"
    )
    mode.add_argument("--report", metavar="NAME", help="re-print a saved run")
    results_lib.add_arguments(
        parser,
        f"100 / 50 images, 2 epochs, methods {','.join(SMOKE_METHODS)} unless "
        "--methods, small P4: checks the code",
    )
    parser.add_argument(
        "--methods",
        type=results_lib.comma_list,
        help=f"comma-separated subset of {','.join(METHODS)} (default: all), "
        f"or extras: {','.join(EXTRA_METHODS)}",
    )
    parser.add_argument("--out", help="result name (default: the setting's)")
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
    args = parser.parse_args(argv)
    results = results_lib.Results.from_args(args)
    if args.report:
        result = results.read_json(f"{args.report}.json")
        result["name"] = args.report
        return summarize(result, results, args.sgdm_from or result.get("sgdm_from"))
    default_methods = SMOKE_METHODS if args.smoke else METHODS
    methods = args.methods or list(default_methods)
    if args.replace_in:
        return replace_in(args.replace_in, methods, results)
    known = {**METHODS, **EXTRA_METHODS}
    unknown = sorted(set(methods) - set(known))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(known)}")
    setting_name = next(
        (n for n in ("smoke", "full", "native") if getattr(args, n)), "quick"
    )
    run(
        setting_name,
        methods,
        args.out or setting_name,
        results,
        gemm=not args.no_gemm,
        sgdm_from=args.sgdm_from,
    )


if __name__ == "__main__":
    main()
