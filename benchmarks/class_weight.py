"""Does ``class_weight="balanced"`` help on an imbalanced task?

ELPV's four defect classes hold 58/11/4/27% of its cells. For each task,
``FastRetrainClassifier`` with its defaults but ``input_size`` (the task's
side) is fitted on the train split twice, with ``class_weight=None`` and
``class_weight="balanced"``, and scored on the test split: accuracy,
balanced accuracy (the mean per-class recall) and each class's recall, with
the fit's seconds. Nothing is chosen from these numbers (the default stays
scikit-learn's None), so the test split is where they are measured. Usage,
from the repository root (needs the ``bench`` extra)::

    python -m benchmarks.class_weight                  # ELPV at 128 px, ~3 min
    python -m benchmarks.class_weight --tasks elpv224  # at its default side
    python -m benchmarks.class_weight --report         # re-print the saved run
    python -m benchmarks.class_weight --smoke          # 150 digits, 1 epoch
"""

import time

import numpy as np
from sklearn.metrics import balanced_accuracy_score, recall_score

from skfastretrain import FastRetrainClassifier

from ._lib import results as results_lib
from ._lib import tasks as tasks_lib
from ._lib.measure import machine_info
from ._lib.tables import markdown_table

SEED = 0
WEIGHTS = {"none": None, "balanced": "balanced"}
FULL = {"elpv128": {}, "elpv224": {}}
DEFAULT_TASKS = ("elpv128",)
SMOKE = {"digits64": {"n": 150}}


def run_task(name, rows, smoke):
    task = tasks_lib.LOADERS[name](**rows)
    X, y, X_test, y_test = task.arrays
    record = {"size": task.size, "n_train": len(y), "n_test": len(y_test)}
    record["class_share"] = (np.bincount(y) / len(y)).round(3).tolist()
    for label, class_weight in WEIGHTS.items():
        start = time.perf_counter()
        clf = FastRetrainClassifier(
            input_size=task.size,
            class_weight=class_weight,
            random_state=SEED,
            verbose=0,
            **({"max_epochs": 1} if smoke else {}),
        ).fit(X, y)
        fit_s = time.perf_counter() - start
        pred = clf.predict(X_test)
        diverged = next(
            (row["diverged"] for row in clf.history_ if "diverged" in row), None
        )
        record[label] = {
            "fit_s": fit_s,
            "epochs": int(clf.n_iter_),
            "lr": float(clf.lr_),
            "diverged": diverged,
            "accuracy": float(np.mean(pred == y_test)),
            "balanced_accuracy": float(balanced_accuracy_score(y_test, pred)),
            "recall": recall_score(y_test, pred, average=None).tolist(),
        }
        print(name, label, record[label], flush=True)
    return record


def render(result):
    machine = result["machine"]
    rows = []
    for name, r in result["tasks"].items():
        for label in WEIGHTS:
            m = r[label]
            rows.append(
                [
                    name,
                    f"{r['n_train']} / {r['n_test']}",
                    label,
                    f"{m['accuracy']:.3f}",
                    f"{m['balanced_accuracy']:.3f}",
                    " / ".join(f"{v:.2f}" for v in m["recall"]),
                    f"{m['lr']:g}",
                    f"{m['epochs']}" + (" (diverged)" if m["diverged"] else ""),
                    f"{m['fit_s']:.0f}",
                ]
            )
    shares = "; ".join(
        f"{n}: " + "/".join(f"{100 * s:.0f}" for s in r["class_share"]) + "%"
        for n, r in result["tasks"].items()
    )
    note = (
        "FastRetrainClassifier with its defaults but input_size, with "
        "class_weight=None and 'balanced', fitted on the train split and scored "
        f"on the test split (class shares of the train split: {shares}). "
        f"torch {machine['torch']}, {machine['threads']} threads."
    )
    return (
        note
        + "\n\n"
        + markdown_table(
            [
                "task",
                "train / test rows",
                "class_weight",
                "accuracy",
                "balanced accuracy",
                "recall per class",
                "lr",
                "epochs",
                "fit s",
            ],
            rows,
        )
    )


def main(argv=None):
    parser = results_lib.tasks_parser(
        __doc__.splitlines()[0], FULL, "150 rows of digits64, 1 epoch"
    )
    args = parser.parse_args(argv)
    results = results_lib.Results.from_args(args)
    if args.report:
        result = results.read_json("class_weight.json")
    else:
        rows = SMOKE if args.smoke else FULL
        names = results_lib.chosen_tasks(
            args, parser, rows, default=None if args.smoke else DEFAULT_TASKS
        )
        result = results.read_json("class_weight.json", default={})
        result["machine"] = machine_info()
        tasks = result.get("tasks", {})
        for name in names:
            tasks[name] = run_task(name, rows[name], args.smoke)
        result["tasks"] = tasks
    results.write_json("class_weight.json", result)
    text = render(result)
    results.publish("class_weight", text)


if __name__ == "__main__":
    main()
