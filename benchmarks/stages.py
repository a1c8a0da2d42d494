"""How far does a ridge head on every stage's pooled features get, against
the last layer alone, with no training?

For each task, one eval-mode forward pass of ImageNet EfficientNet-Lite0
(the package's preprocessing: uint8 / 255, gray to 3 channels, antialiased
bilinear resize to the task's side, Lite normalization) with forward hooks
on the stem (after its BatchNorm and ReLU6), each of the 16 blocks and the
head convolution (after its BatchNorm and ReLU6), each output average-pooled
over space: 32 + 1,808 + 1,280 = 3,120 features. Two heads are fitted, each
feature standardized on the fitting rows, with
``RidgeClassifierCV(alphas=np.logspace(-3, 4, 15))`` (alpha by efficient
leave-one-out on the fitting rows):

- ``last``: the 1,280 pooled head-conv features (the linear probe the
  estimator starts from);
- ``all``: the 3,120 features of every stage.

The fitting rows are 80% of the train split; both heads are scored on the
other 20% (stratified, seeded: the accuracy anything may be chosen on) and,
for information only, on the test split. Usage, from the repository root::

    python -m benchmarks.stages                       # every task, ~10 min on 2 cores
    python -m benchmarks.stages --tasks elpv224       # rerun some, keep the others
    python -m benchmarks.stages --report              # re-print the saved run
    python -m benchmarks.stages --smoke               # 200 rows of a few tasks

The tasks are in :mod:`benchmarks._lib.tasks` (ELPV needs
``pip install elpv-dataset``; ``--smoke`` skips it when it is missing).
"""

import os
import time

import numpy as np
import torch
from sklearn.linear_model import RidgeClassifierCV
from sklearn.metrics import confusion_matrix, recall_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from ._lib import results as results_lib
from ._lib import tasks as tasks_lib
from ._lib.data import BATCH_SIZE
from ._lib.measure import machine_info
from ._lib.models import Preprocess, pretrained_lite0
from ._lib.tables import markdown_table

SEED = 0
HOLDOUT = 0.2
ALPHAS = np.logspace(-3, 4, 15)
LAST_DIM = 1280
#: The rows of each task (keyword arguments of its loader).
FULL = {
    "fashion64": {"n_train": 4000, "n_test": 1000},
    "digits64": {},
    "fashion224": {"n_train": 1000, "n_test": 1000},
    "elpv224": {},
    "elpv128": {},
}
SMOKE = {
    "fashion64": {"n_train": 200, "n_test": 100},
    "digits64": {"n": 200},
    "fashion224": {"n_train": 200, "n_test": 100},
    "elpv224": {"n": 200},
    "elpv128": {"n": 200},
}
SMOKE_TASKS = ("fashion64", "digits64", "elpv224")


def stage_features(model, X, size):
    """Every stage's output of ``model`` (Lite0) for uint8 images ``X``,
    average-pooled: ``(features (n, 3120), [(stage, width), ...])``."""
    stages = [
        ("stem", model._stem_act),
        *((f"block{i}", b) for i, b in enumerate(model._blocks)),
        ("head", model._head_act),
    ]
    pooled = []

    def hook(module, args, output):
        pooled.append(output.mean((2, 3)))

    handles = [m.register_forward_hook(hook) for _, m in stages]
    prep = Preprocess(size)
    out = []
    try:
        with torch.inference_mode():
            for i in range(0, len(X), BATCH_SIZE):
                pooled.clear()
                model(prep(torch.from_numpy(X[i : i + BATCH_SIZE, None])))
                out.append(torch.cat(pooled, 1))
    finally:
        for handle in handles:
            handle.remove()
    names = [name for name, _ in stages]
    widths = [(n, int(t.shape[1])) for n, t in zip(names, pooled, strict=True)]
    return torch.cat(out).numpy(), widths


def fit_head(features, y, fit, hold, test, y_test, class_names):
    """Standardize on the fitting rows, fit ``RidgeClassifierCV`` there and
    score it on the held-out rows and on the test split."""
    start = time.perf_counter()
    scaler = StandardScaler().fit(features[fit])
    clf = RidgeClassifierCV(alphas=ALPHAS).fit(scaler.transform(features[fit]), y[fit])
    fit_s = time.perf_counter() - start
    pred_hold = clf.predict(scaler.transform(features[hold]))
    pred_test = clf.predict(scaler.transform(test))
    labels = np.arange(len(class_names))
    return {
        "alpha": float(clf.alpha_),
        "alpha_at_grid_edge": bool(clf.alpha_ in (ALPHAS[0], ALPHAS[-1])),
        "fit_s": fit_s,
        "holdout_acc": float(np.mean(pred_hold == y[hold])),
        "test_acc": float(np.mean(pred_test == y_test)),
        "test_recall": recall_score(
            y_test, pred_test, labels=labels, average=None, zero_division=0
        ).tolist(),
        "test_confusion": confusion_matrix(y_test, pred_test, labels=labels).tolist(),
    }


def run_task(name, rows, model):
    start = time.perf_counter()
    task = tasks_lib.LOADERS[name](**rows)
    X_train, y_train, X_test, y_test = task.arrays
    images = np.concatenate([X_train, X_test])
    load_start = os.getloadavg()[0]
    stage_features(model, images[:BATCH_SIZE], task.size)  # warm-up, untimed
    t0 = time.perf_counter()
    features, widths = stage_features(model, images, task.size)
    pass_s = time.perf_counter() - t0
    train, test = features[: len(y_train)], features[len(y_train) :]
    fit, hold = train_test_split(
        np.arange(len(y_train)), test_size=HOLDOUT, stratify=y_train, random_state=SEED
    )
    record = {
        "size": task.size,
        "n_classes": task.n_classes,
        "class_names": list(task.class_names),
        "n_fit": len(fit),
        "n_holdout": len(hold),
        "n_test": len(y_test),
        "image_shape": list(X_train.shape[1:]),
        "stage_widths": widths,
        "dims": {"last": LAST_DIM, "all": int(features.shape[1])},
        "pass_s": pass_s,
        "pass_images": len(features),
        "heads": {
            "last": fit_head(
                train[:, -LAST_DIM:],
                y_train,
                fit,
                hold,
                test[:, -LAST_DIM:],
                y_test,
                task.class_names,
            ),
            "all": fit_head(train, y_train, fit, hold, test, y_test, task.class_names),
        },
    }
    record["task_s"] = time.perf_counter() - start
    record["loadavg_1min"] = [load_start, os.getloadavg()[0]]
    return record


def _pct(value):
    return f"{value:.3f}"


def render(result):
    records = result["tasks"]
    machine = result["machine"]
    note = (
        "ImageNet EfficientNet-Lite0, eval mode, one forward pass; no training. "
        "last: the 1,280 pooled head-conv features (the linear probe the estimator "
        "starts from); all: the pooled output of the stem, the 16 blocks and the "
        "head conv (3,120 features). Each feature standardized on the fitting rows "
        "(80% of the train split); RidgeClassifierCV, alpha from "
        "np.logspace(-3, 4, 15) by leave-one-out on those rows. held-out: the other "
        "20% of the train split (stratified, seed 0), the accuracy to choose on; "
        "test: the test split, for information only. pass s: the feature pass over "
        "the train and test rows (batch 32, after an untimed batch). "
        f"torch {machine['torch']}, {machine['threads']} threads, 1-min load "
        f"{machine['loadavg'][0]:.1f} at the start"
    )
    loads = [x for r in records.values() for x in r.get("loadavg_1min", [])]
    note += f", at most {max(loads):.1f} around the tasks." if loads else "."
    rows = []
    for name, r in records.items():
        last, full = r["heads"]["last"], r["heads"]["all"]
        rows.append(
            [
                name,
                str(r["size"]),
                f"{r['n_fit']} / {r['n_holdout']} / {r['n_test']}",
                f"{r['dims']['last']} / {r['dims']['all']}",
                f"{r['pass_s']:.1f}",
                f"{last['alpha']:.3g} / {full['alpha']:.3g}",
                f"{_pct(last['holdout_acc'])} / {_pct(full['holdout_acc'])}",
                f"{full['holdout_acc'] - last['holdout_acc']:+.3f}",
                f"{_pct(last['test_acc'])} / {_pct(full['test_acc'])}",
            ]
        )
    text = (
        note
        + "\n\n"
        + markdown_table(
            [
                "task",
                "px",
                "fit / held-out / test rows",
                "dims last / all",
                "pass s",
                "alpha last / all",
                "held-out acc last / all",
                "all - last",
                "test acc last / all",
            ],
            rows,
        )
    )
    for name, r in records.items():
        if not name.startswith("elpv"):
            continue
        classes = r["class_names"]
        last, full = r["heads"]["last"], r["heads"]["all"]
        text += (
            f"\n\n{name}, test split (information only): recall per class "
            "(defect probability) and the confusion matrix of the all-stages head "
            "(rows: true class, columns: predicted)."
        )
        text += "\n\n" + markdown_table(
            ["head", *(f"recall {c}" for c in classes)],
            [
                [head, *(_pct(v) for v in rec["test_recall"])]
                for head, rec in (("last", last), ("all", full))
            ],
        )
        text += "\n\n" + markdown_table(
            ["true \\ predicted", *classes],
            [
                [c, *(str(v) for v in row)]
                for c, row in zip(classes, full["test_confusion"], strict=True)
            ],
        )
    return text


def measure(names, rows, saved):
    """Run the tasks ``names`` (their loaders' keyword arguments in ``rows``)
    into the saved run ``saved`` (a dict, updated and returned)."""
    saved["machine"] = machine_info()
    saved.setdefault("measured", {})
    records = saved.get("tasks", {})
    model = pretrained_lite0().eval()
    for name in names:
        records[name] = run_task(name, rows[name], model)
        saved["measured"][name] = time.strftime("%Y-%m-%d %H:%M:%S")
        print(name, {k: records[name][k] for k in ("pass_s", "task_s")}, flush=True)
    saved["tasks"] = {n: records[n] for n in FULL if n in records}
    return saved


def main(argv=None):
    parser = results_lib.tasks_parser(
        __doc__.splitlines()[0],
        FULL,
        "200 rows of fashion64, digits64 and elpv224 (if installed)",
    )
    args = parser.parse_args(argv)
    results = results_lib.Results.from_args(args)
    if args.report:
        result = results.read_json("stages.json")
    else:
        default = SMOKE_TASKS if args.smoke else FULL
        names = results_lib.chosen_tasks(args, parser, FULL, default)
        saved = results.read_json("stages.json", default={})
        result = measure(names, SMOKE if args.smoke else FULL, saved)
        results.write_json("stages.json", result)
    text = render(result)
    results.publish("stages", text)


if __name__ == "__main__":
    main()
