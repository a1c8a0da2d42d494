"""The pilot behind FastRetrainClassifier's defaults, on held-out training rows.

Every run changes one setting of a candidate configuration and records the
accuracy after every epoch on rows held out of the *train* split (never the
test split), with the fit time and the training loss. Two tasks:

- ``fashion``: the Fashion-MNIST subset bundled with the package
  (``load_fashion_mnist(source="bundled")``): 2,000 training rows and 1,000
  held-out rows, both from its train split.
- ``digits``: sklearn's 8x8 digits; its train split (75%, stratified, seed 0)
  gives 1,000 training rows and 347 held-out rows.

Usage, from the repository root::

    python -m benchmarks.defaults                    # both tasks, every run
    python -m benchmarks.defaults --task digits      # one task
    python -m benchmarks.defaults --runs base,lr=0.003 --task fashion
    python -m benchmarks.defaults --report           # re-print the saved runs
    python -m benchmarks.defaults --smoke            # tiny, checks the code

Results go to ``results/defaults.json`` (runs already there are kept unless
rerun) and ``results/defaults.md``, and the table between the
``<!-- defaults:begin -->`` markers of ``benchmarks/README.md``. ``--smoke``
fits a few runs (on digits unless ``--task``) for one epoch on 200 rows (100
held out) and writes to a temporary folder (or ``--results-dir``).
"""

import argparse
import json
import os
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from skfastretrain import FastRetrainClassifier
from skfastretrain.datasets import load_fashion_mnist

from ._lib import results as results_lib
from ._lib.measure import TestAccuracy
from ._lib.methods import estimator_kwargs
from ._lib.models import tiny_cnn
from ._lib.tables import markdown_table, text_table

#: The configuration every run starts from: FastRetrainClassifier's defaults
#: are these values (the tests check the estimator's defaults against them).
BASE = {
    "backbone": "efficientnet_lite0",
    "weights": "DEFAULT",
    "freeze_prob": 0.5,
    "freeze_mode": "prefix",
    "ridge_lambda": "auto",
    "lr": "auto",
    "input_size": "auto",
    "max_epochs": 3,
}
#: The settings of the SGD epoch in that configuration: SGDEpoch's defaults
#: (``sgd=None``). A run names them flat, e.g. ``{"cache_prefix": False}``;
#: estimator_kwargs turns them into ``sgd=SGDEpoch(cache_prefix=False)``.
BASE_SGD = {"cache_prefix": "auto", "lr_schedule": "constant"}

#: The settings of FastRetrainClassifier before this pilot, at 64 px and 3
#: epochs (the old defaults' 224 px and 10 epochs took 40x longer on a CPU).
OLD_DEFAULTS = {
    "input_size": 64,
    "lr": 0.01,
    "ridge_lambda": 1.0,
    "freeze_mode": "random",
    "cache_prefix": False,
}

#: Run label -> the settings it changes from BASE and BASE_SGD, in the flat
#: names of the records (see estimator_kwargs).
RUNS = {
    "base": {},
    "old defaults": OLD_DEFAULTS,
    "lr=0.001": {"lr": 0.001},
    "lr=0.0003": {"lr": 0.0003},
    "lr=0.003": {"lr": 0.003},
    "lr=0.01": {"lr": 0.01},
    "lr_schedule=cosine": {"lr_schedule": "cosine"},
    "freeze_mode=random": {"freeze_mode": "random"},
    "freeze_prob=0.25": {"freeze_prob": 0.25},
    "freeze_prob=0.75": {"freeze_prob": 0.75},
    "ridge_lambda=1": {"ridge_lambda": 1.0},
    "ridge_lambda=None": {"ridge_lambda": None, "init_head": "random"},
    "cache_prefix=False": {"cache_prefix": False},
    # The prefix's outputs stored in float16 (the default's float32 halved).
    "cache_dtype=float16": {"cache_dtype": "float16"},
    # A deeper frozen prefix in the first epoch, the default's after it.
    "freeze_prob=0.75/0.5/0.5": {"freeze_prob": [0.75, 0.5, 0.5]},
    "input_size=96": {"input_size": 96},
    "input_size=128": {"input_size": 128},
    "max_epochs=5": {"max_epochs": 5},
    "lr=1.0": {"lr": 1.0},
}


def small_cnn():
    """A small CNN whose second convolution has no BatchNorm: its features
    are small, so the ridge head solved on them is large."""
    return nn.Sequential(
        nn.Conv2d(1, 24, 3, padding=1),
        nn.BatchNorm2d(24),
        nn.ReLU(),
        nn.Conv2d(24, 16, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
    )


#: Runs that fit a randomly initialized backbone (the defaults must learn).
SCRATCH_RUNS = {
    "resnet18 scratch": {"backbone": "resnet18", "weights": None},
    **{
        f"resnet18 scratch lr={lr}": {"backbone": "resnet18", "weights": None, "lr": lr}
        for lr in (0.001, 0.01)
    },
    **{
        f"{name} scratch lr={lr}": {"backbone": make, "lr": lr}
        for name, make in (("tiny cnn", tiny_cnn), ("small cnn", small_cnn))
        for lr in ("auto", 0.0001, 0.001, 0.01)
    },
}

TASK_RUNS = {
    "fashion": [*RUNS],
    "digits": [*RUNS, *SCRATCH_RUNS],
}

#: ``--smoke``: these runs, fitted for one epoch on the first rows of each split.
SMOKE_RUNS = {"fashion": ["base"], "digits": ["base", "tiny cnn scratch lr=auto"]}
SMOKE_ROWS, SMOKE_HOLDOUT_ROWS = 200, 100

HEADER = [
    "task",
    "run",
    "holdout acc per epoch (0 = start)",
    "final",
    "best",
    "fit s",
    "lr_ / note",
]


def load_task(task):
    """(X_fit, y_fit, X_holdout, y_holdout): uint8 images, all train split."""
    if task == "fashion":
        X, y = load_fashion_mnist(split="train", source="bundled", return_X_y=True)
        X_fit, X_rest, y_fit, y_rest = train_test_split(
            X, y, train_size=2000, stratify=y, random_state=0
        )
        _, X_hold, _, y_hold = train_test_split(
            X_rest, y_rest, test_size=1000, stratify=y_rest, random_state=0
        )
        return X_fit, y_fit, X_hold, y_hold
    X, y = load_digits(return_X_y=True)
    images = (X.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
    # The 25% test split stays unseen; the pilot splits the 75% train split.
    X_train, _, y_train, _ = train_test_split(
        images, y, test_size=0.25, stratify=y, random_state=0
    )
    X_fit, X_hold, y_fit, y_hold = train_test_split(
        X_train, y_train, train_size=1000, stratify=y_train, random_state=0
    )
    return X_fit, y_fit, X_hold, y_hold


def run_one(task, label, *, smoke=False):
    X_fit, y_fit, X_hold, y_hold = load_task(task)
    params = {
        **BASE,
        **BASE_SGD,
        **RUNS.get(label, {}),
        **SCRATCH_RUNS.get(label, {}),
    }
    if smoke:
        X_fit, y_fit = X_fit[:SMOKE_ROWS], y_fit[:SMOKE_ROWS]
        X_hold, y_hold = X_hold[:SMOKE_HOLDOUT_ROWS], y_hold[:SMOKE_HOLDOUT_ROWS]
        params["max_epochs"] = 1
    # Its "test" rows are the held-out training-split rows here.
    callback = TestAccuracy(X_hold, np.searchsorted(np.unique(y_fit), y_hold))
    clf = FastRetrainClassifier(
        **estimator_kwargs(params), random_state=0, callbacks=[("holdout", callback)]
    )
    start = callback.t0 = time.perf_counter()
    note = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            clf.fit(X_fit, y_fit)
        except Exception as exc:  # a failed run is a result too
            return {"params": _jsonable(params), "error": repr(exc)[:300]}
    fit_s = time.perf_counter() - start
    done = dict(clf.net_.callbacks_)["holdout"]
    diverged = [str(w.message) for w in caught if "diverg" in str(w.message).lower()]
    if diverged:
        note = "divergence warning"
    return {
        "params": _jsonable(params),
        "holdout_acc": [p["test_acc"] for p in done.points_],
        "final_acc": float(clf.score(X_hold, y_hold)),
        "fit_s": fit_s - done.eval_time_,
        "train_loss": [
            float(r["train_loss"]) for r in clf.history_ if "train_loss" in r
        ],
        "lr_": getattr(clf, "lr_", params.get("lr")),
        "note": note,
        "warnings": diverged[:1],
    }


def _jsonable(params):
    return {
        k: (v if isinstance(v, (int, float, str, type(None))) else repr(v))
        for k, v in params.items()
    }


def table_rows(result):
    rows = []
    for task, runs in result["runs"].items():
        for label, rec in runs.items():
            if "error" in rec:
                rows.append([task, label, rec["error"][:60], "-", "-", "-", "-"])
                continue
            accs = rec["holdout_acc"]
            lr = rec.get("lr_")
            note = f"{lr:.3g}" if isinstance(lr, float) else str(lr)
            if rec.get("note"):
                note += f"; {rec['note']}"
            rows.append(
                [
                    task,
                    label,
                    " / ".join(f"{a:.3f}" for a in accs),
                    f"{rec['final_acc']:.3f}",
                    f"{max(accs):.3f}",
                    f"{rec['fit_s']:.1f}",
                    note,
                ]
            )
    return rows


def report(result, results):
    results.write_json("defaults.json", result)
    m = result["machine"]
    head = (
        f"Held-out rows of the train split only. fashion: bundled Fashion-MNIST "
        f"subset, 2000 fit / 1000 held-out rows; digits: sklearn digits' 75% train "
        f"split, 1000 fit / 347 held-out rows. 64 px, 3 epochs, seed 0 unless the "
        f"run says otherwise. torch {m['torch']}, {m['threads']} threads; "
        f"fit s excludes the held-out evaluation. One standard error of a "
        f"held-out accuracy near 0.85 on 1000 rows is 1.1 pt."
    )
    text = head + "\n\n" + markdown_table(HEADER, table_rows(result))
    results.write_text("defaults.md", text)
    results.update_readme("defaults", text)
    print(text_table(HEADER, table_rows(result)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task",
        choices=["fashion", "digits", "both"],
        help="default: both (digits with --smoke)",
    )
    parser.add_argument("--runs", help="comma-separated run labels (default: all)")
    parser.add_argument("--report", action="store_true")
    results_lib.add_arguments(
        parser,
        f"base and a tiny CNN on digits (base on fashion), 1 epoch on {SMOKE_ROWS} "
        "rows: checks the code",
    )
    args = parser.parse_args(argv)
    results = results_lib.Results.from_args(args)
    result = results.read_json("defaults.json", default={"runs": {}})
    if args.report:
        report(result, results)
        return
    result["machine"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()),
    }
    chosen = args.task or ("digits" if args.smoke else "both")
    tasks = ["fashion", "digits"] if chosen == "both" else [chosen]
    for task in tasks:
        every = SMOKE_RUNS[task] if args.smoke else TASK_RUNS[task]
        labels = args.runs.split(",") if args.runs else every
        for label in labels:
            rec = run_one(task, label, smoke=args.smoke)
            result["runs"].setdefault(task, {})[label] = rec
            print(task, label, json.dumps(rec)[:300], flush=True)
            report(result, results)


if __name__ == "__main__":
    main()
