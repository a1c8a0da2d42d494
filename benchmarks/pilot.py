"""Learning-rate pilot for the benchmark's SGD baselines, on the quick setting.

Plain SGDM (skorch, cosine schedule) is tried at lr 0.01, 0.003 and 0.001,
each with BatchNorm in train mode (batch statistics, running-statistics
momentum 0.1) and held in eval mode (pretrained statistics); the estimator's
``ours`` setting at lr 0.001 and 0.003; the fastai-style baseline at base
rates 0.001 to 0.01 with BatchNorm in train mode, and 0.0005 to 0.01 in
eval mode. Accuracy is measured on rows held out of the *train* split, so
the choice never sees the test split.

Usage, from the repository root::

    python -m benchmarks.pilot             # writes results/pilot.json and .md
    python -m benchmarks.pilot --report    # re-print a saved pilot
    python -m benchmarks.pilot --fresh     # rerun runs already in pilot.json
    python -m benchmarks.pilot --smoke     # one run a family, tiny: checks the code

Runs already in ``results/pilot.json`` are kept unless ``--fresh``.

``--variants`` runs the second pilot: variants of ``ours`` (frozen fraction,
schedule, learning rate, head blend, bf16, reused features) on a larger
holdout setting (4,000 / 1,000 images, 3 epochs), written to
``results/pilot_variants.json``. It chose the ``ours_p75`` extra of the
benchmark. ``--smoke`` (with or without ``--variants``) runs a few of the runs
on 100 / 50 images and writes to a temporary folder (or ``--results-dir``).
"""

import argparse
import math
import time

from ._lib import results as results_lib
from ._lib.data import SETTINGS
from ._lib.methods import METHODS
from ._lib.snapshot import package_snapshot, spawn_method
from ._lib.tables import markdown_table, text_table

#: BatchNorm mode -> learning rates tried. lr 0.03 only with batch statistics:
#: in eval mode 0.01 already wrecks the pretrained features.
SGDM_GRID = {"train": (0.03, 0.01, 0.003, 0.001), "eval": (0.01, 0.003, 0.001)}
#: The best settings again without stochastic depth (the estimator turns it
#: off for named Lite backbones).
SGDM_NO_SD = (("train", 0.01), ("eval", 0.003), ("eval", 0.001))
OURS_LRS = (0.001, 0.003)
#: fastai's fine_tune (AdamW, one cycle): base rates around fastai's 2e-3,
#: BatchNorm in train mode as fastai trains it, and held in eval mode.
FASTAI_GRID = {
    "train": (0.001, 0.002, 0.005, 0.01),
    "eval": (0.0005, 0.001, 0.002, 0.005, 0.01),
}

#: The variants pilot: its setting and what each variant changes in ours, in
#: the records' flat names (estimator_kwargs builds the RidgeHead and SGDEpoch).
VARIANTS_SETTING = {"n_train": 4000, "n_test": 1000, "epochs": 3}
VARIANTS = {
    "ours": {},
    "ours freeze_prob=0.75": {"freeze_prob": 0.75},
    "ours lr_schedule=cosine": {"lr_schedule": "cosine"},
    "ours lr=0.002": {"lr": 0.002},
    "ours head_blend=1": {"head_blend": 1.0},
    "ours precision=bfloat16": {"precision": "bfloat16"},
    "ours reuse_features": {"reuse_features": True},
}


def candidates():
    for bn, lrs in SGDM_GRID.items():
        for lr in lrs:
            params = {**METHODS["sgdm"], "lr": lr, "bn": bn, "stochastic_depth": True}
            yield f"sgdm lr={lr} bn={bn}", "sgdm", params
    for bn, lr in SGDM_NO_SD:
        params = {**METHODS["sgdm"], "lr": lr, "bn": bn, "stochastic_depth": False}
        yield f"sgdm lr={lr} bn={bn} no-sd", "sgdm", params
    for lr in OURS_LRS:
        yield f"ours lr={lr}", "ours", {**METHODS["ours"], "lr": lr}
    for bn, lrs in FASTAI_GRID.items():
        for lr in lrs:
            params = {**METHODS["fastai"], "lr": lr, "bn": bn}
            yield f"fastai lr={lr} bn={bn}", "fastai", params


def variant_candidates():
    for label, change in VARIANTS.items():
        yield label, "ours", {**METHODS["ours"], **change}


HEADER = ["run", "holdout acc per epoch", "final", "best", "fit s"]


def rows(result, cands=candidates):
    out = []
    order = [label for label, _, _ in cands()]
    runs = sorted(result["runs"].items(), key=lambda kv: order.index(kv[0]))
    for label, rec in runs:
        accs = [p["test_acc"] for p in rec["points"]]
        out.append(
            [
                label,
                " / ".join(f"{a:.3f}" for a in accs),
                f"{accs[-1]:.3f}",
                f"{max(accs):.3f}",
                f"{rec['fit_wall']:.1f}",
            ]
        )
    return out


def best_of(result, family, default=None):
    """The best final holdout accuracy; ``default`` unless beaten by > 1 SE."""
    runs = {k: v for k, v in result["runs"].items() if k.startswith(family + " ")}
    acc = {k: v["points"][-1]["test_acc"] for k, v in runs.items()}
    best = max(acc, key=acc.get)
    if default in acc:
        se = math.sqrt(acc[default] * (1 - acc[default]) / result["setting"]["n_test"])
        if acc[best] - acc[default] <= se:
            return default
    return best


def report(result, results):
    # The estimator keeps the lead's lr 0.001 unless another lr is better by
    # more than one standard error of the holdout accuracy.
    result["chosen"] = {
        "sgdm": best_of(result, "sgdm"),
        "fastai": best_of(result, "fastai"),
        "ours": best_of(result, "ours", default=f"ours lr={METHODS['ours']['lr']}"),
    }
    results.write_json("pilot.json", result)
    table = rows(result)
    chosen = "\n".join(f"chosen {f}: {k}" for f, k in result["chosen"].items())
    text = markdown_table(HEADER, table) + "\n\n" + chosen.replace("\n", "  \n")
    results.write_text("pilot.md", text)
    results.update_readme("pilot", text)
    print(text_table(HEADER, table))
    print(chosen)


def report_variants(result, results):
    results.write_json("pilot_variants.json", result)
    header = [*HEADER, "SGD epoch s", "solve s"]
    table = rows(result, variant_candidates)
    for row in table:
        history = result["runs"][row[0]]["history"]
        for key in ("dur", "solve_dur"):
            values = [h[key] for h in history if key in h]
            row.append(f"{sum(values) / len(values):.1f}" if values else "-")
    s = result["setting"]
    text = (
        f"{s['n_train']} train / {s['n_test']} holdout images, {s['epochs']} "
        "epochs; one standard error of a holdout accuracy near 0.87 is 1.1 pt.\n\n"
        + markdown_table(header, table)
    )
    results.write_text("pilot_variants.md", text)
    results.update_readme("pilot_variants", text)
    print(text_table(header, table))


def first_of_each_method(cands):
    """``cands`` cut to the first run of each method (the smoke run's)."""

    def first():
        seen = set()
        for label, method, params in cands():
            if method not in seen:
                seen.add(method)
                yield label, method, params

    return first


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--variants", action="store_true", help="the ours pilot")
    results_lib.add_arguments(
        parser, "the first run of each method on 100 / 50 images: checks the code"
    )
    args = parser.parse_args(argv)
    results = results_lib.Results.from_args(args)
    if args.variants:
        name, setting, cands, done = (
            "pilot_variants",
            VARIANTS_SETTING,
            variant_candidates,
            report_variants,
        )
    else:
        name, setting, cands, done = "pilot", SETTINGS["quick"], candidates, report
    if args.smoke:
        setting, cands = SETTINGS["smoke"], first_of_each_method(cands)
    if args.report:
        return done(results.read_json(f"{name}.json"), results)
    result = {"setting": {**setting, "holdout": True}, "runs": {}}
    if not args.fresh:
        result = results.read_json(f"{name}.json", default=result)
        if result["setting"] != {**setting, "holdout": True}:
            parser.error(f"{name}.json has another setting: rerun with --fresh")
    with package_snapshot() as (package, info):
        result.setdefault("package", []).append(info)
        for label, method, params in cands():
            if label in result["runs"]:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {label} ...", flush=True)
            rec = spawn_method(method, params, setting, holdout=True, package=package)
            rec["package"] = info
            result["runs"][label] = rec
            accs = [round(p["test_acc"], 3) for p in rec["points"]]
            print(f"    holdout acc {accs}, fit {rec['fit_wall']:.1f} s", flush=True)
            # Kept as each run ends, so an interrupted pilot loses only one.
            results.write_json(f"{name}.json", result)
    done(result, results)


if __name__ == "__main__":
    main()
