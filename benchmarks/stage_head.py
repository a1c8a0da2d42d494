"""Does the estimator's head that reads every stage beat the last layer,
at its ridge start and after fine-tuning?

For each task, ``FastRetrainClassifier`` with its defaults but for
``input_size`` (the task's side) and ``max_epochs``, fitted twice, once
with ``head=RidgeHead(stages=None)`` (the last layer alone) and once with
``head=RidgeHead(stages="auto")`` (every block of Lite0, standardized, the
stages' weight and the ridge strength chosen by the solve's
cross-validation). Each fit sees 80% of the task's train split; the other
20% (stratified, seed 0) are the held-out rows every accuracy here is
measured on: at the ridge start (epoch 0, the head solved before the
first epoch) and after every epoch, with the fit's seconds until then
(scoring excluded). The test split is not used. Usage, from the
repository root::

    python -m benchmarks.stage_head                    # every task, ~30 min
    python -m benchmarks.stage_head --tasks digits64   # rerun some
    python -m benchmarks.stage_head --report           # re-print the saved run
    python -m benchmarks.stage_head --smoke            # 200 rows, 1 epoch
"""

import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from skorch.callbacks import Callback

from skfastretrain import FastRetrainClassifier, RidgeHead

from ._lib import results as results_lib
from ._lib import tasks as tasks_lib
from ._lib.measure import machine_info
from ._lib.tables import markdown_table

SEED = 0
HOLDOUT = 0.2
EPOCHS = 3
#: The heads compared, RidgeHead's ``stages``, and further estimator
#: settings of a variant: ``last`` and ``stages`` decide RidgeHead's default
#: (leave one task out); the others are measured beside them (``--heads``).
HEADS = {
    "last": {"stages": None},
    "stages": {"stages": "auto"},
    "stages lr=0.001": {"stages": "auto", "lr": 0.001},
}
#: What a run measures unless ``--heads`` says otherwise.
DEFAULT_HEADS = ("last", "stages")
FULL = {
    "fashion64": {"n_train": 4000, "n_test": 10},
    "digits64": {},
    "fashion224": {"n_train": 1000, "n_test": 10},
    "elpv128": {},
    # ELPV at the estimator's default side for its 300 px cells.
    "elpv224": {},
}
#: The tasks RidgeHead's default is chosen on, one per dataset and side
#: (ELPV once: at 128 px, the cheaper of its two sides).
DEFAULT_TASKS = ("fashion64", "digits64", "fashion224", "elpv128")
SMOKE = {
    "fashion64": {"n_train": 200, "n_test": 10},
    "digits64": {"n": 200},
}


class HeldOutCurve(Callback):
    """Held-out accuracy at the ridge start and after every epoch, with the
    fit's seconds until then, scoring excluded."""

    def __init__(self, X, y):
        self.X = X
        self.y = y

    def initialize(self):
        self.points_ = []
        self._start = time.perf_counter()
        self._scoring = 0.0
        return self

    def _score(self, net):
        start = time.perf_counter()
        # Scoring must not move the fit's random stream.
        with torch.random.fork_rng(devices=[]):
            pred = net.predict(self.X)
        seconds = time.perf_counter() - self._start - self._scoring
        self.points_.append((seconds, float(np.mean(pred == self.y))))
        self._scoring += time.perf_counter() - start

    def on_train_begin(self, net, **kwargs):
        self._score(net)

    def on_epoch_end(self, net, **kwargs):
        self._score(net)


def run_task(name, rows, epochs, heads, record=None):
    """Fit ``heads`` on task ``name``; add them to its ``record``."""
    task = tasks_lib.LOADERS[name](**rows)
    X, y = task.X_train, task.y_train
    fit, hold = train_test_split(
        np.arange(len(y)), test_size=HOLDOUT, stratify=y, random_state=SEED
    )
    record = {
        **(record or {}),
        "size": task.size,
        "n_fit": len(fit),
        "n_holdout": len(hold),
    }
    for head in heads:
        settings = dict(HEADS[head])
        stages = settings.pop("stages")
        curve = HeldOutCurve(X[hold][:, None], y[hold])
        start = time.perf_counter()
        clf = FastRetrainClassifier(
            head=RidgeHead(stages=stages),
            input_size=task.size,
            max_epochs=epochs,
            random_state=SEED,
            verbose=0,
            callbacks=[curve],
            **settings,
        ).fit(X[fit], y[fit])
        history = clf.net_.history
        # The estimator trains a copy of the callbacks it is given.
        curve = next(
            cb for _, cb in clf.net_.callbacks_ if isinstance(cb, HeldOutCurve)
        )
        record[head] = {
            "fit_s": time.perf_counter() - start,
            "curve": curve.points_,
            "final_holdout_acc": float(np.mean(clf.predict(X[hold]) == y[hold])),
            "width": int(clf.net_.module_.head.in_features),
            "lr": float(clf.lr_),
            "stage_weight": history[0].get("stage_weight"),
            "ridge_lambda": history[:, "ridge_lambda"],
            "kept_epoch": history[-1].get("kept_epoch"),
        }
        print(name, head, record[head]["curve"], flush=True)
    return record


def measure(names, rows, saved, epochs, heads):
    saved["machine"] = machine_info()
    saved.setdefault("measured", {})
    records = saved.get("tasks", {})
    for name in names:
        records[name] = run_task(name, rows[name], epochs, heads, records.get(name))
        saved["measured"][name] = time.strftime("%Y-%m-%d %H:%M:%S")
    saved["tasks"] = {n: records[n] for n in FULL if n in records}
    return saved


def _se(acc, n):
    return (acc * (1 - acc) / n) ** 0.5


def leave_one_task_out(tasks):
    """For each task: the head the other tasks choose (the higher mean final
    held-out accuracy; "last", the incumbent, on a tie) and whether it wins,
    or ties within one standard error, on the task left out. The default is
    "stages" only if every task's row chooses it and holds."""
    tasks = {
        n: r
        for n, r in tasks.items()
        if n in DEFAULT_TASKS and "last" in r and "stages" in r
    }
    rows, default = [], "stages"
    for name, r in tasks.items():
        others = [o for o in tasks if o != name]
        mean = {
            head: np.mean([tasks[o][head]["final_holdout_acc"] for o in others])
            for head in ("last", "stages")
        }
        chosen = "stages" if mean["stages"] > mean["last"] else "last"
        other = "last" if chosen == "stages" else "stages"
        acc = {h: r[h]["final_holdout_acc"] for h in ("last", "stages")}
        se = _se(acc[other], r["n_holdout"])
        holds = acc[chosen] >= acc[other] - se
        rows.append(
            {
                "task": name,
                "chosen": chosen,
                "acc_chosen": acc[chosen],
                "acc_other": acc[other],
                "se": se,
                "holds": bool(holds),
            }
        )
        if chosen != "stages" or not holds:
            default = "last"
    return rows, default


def render(result):
    machine = result["machine"]
    note = (
        "FastRetrainClassifier with its defaults but input_size and max_epochs, "
        "RidgeHead(stages=None) (last) against RidgeHead(stages='auto') (stages); "
        "fitted on 80% of the train split, every accuracy on the other 20% "
        "(held-out, stratified, seed 0). start: the ridge head solved before the "
        "first epoch; then after each epoch, with the fit's seconds until then. "
        f"One SE of a held-out accuracy near 0.85 on n rows is sqrt(0.13 / n). "
        f"torch {machine['torch']}, {machine['threads']} threads."
    )
    rows = []
    for name, r in result["tasks"].items():
        for head in HEADS:
            if head not in r:
                continue
            h = r[head]
            curve = " / ".join(f"{acc:.3f} ({s:.0f} s)" for s, acc in h["curve"])
            rows.append(
                [
                    name,
                    str(r["size"]),
                    f"{r['n_fit']} / {r['n_holdout']}",
                    head,
                    str(h["width"]),
                    "-" if h["stage_weight"] is None else f"{h['stage_weight']:g}",
                    f"{h['lr']:g}",
                    curve,
                    f"{h['final_holdout_acc']:.3f}",
                    f"{_se(h['final_holdout_acc'], r['n_holdout']):.3f}",
                    f"{h['fit_s']:.0f}",
                ]
            )
    loto_rows, default = leave_one_task_out(result["tasks"])
    loto = [
        [
            row["task"],
            row["chosen"],
            f"{row['acc_chosen']:.3f}",
            f"{row['acc_other']:.3f}",
            f"{row['se']:.3f}",
            "wins or ties" if row["holds"] else "loses",
        ]
        for row in loto_rows
    ]
    loto_text = (
        "\n\nLeave one task out: the head the other tasks choose (higher mean final "
        "held-out accuracy), scored on the task left out, against the other head "
        "(ties within one SE hold). RidgeHead's default: "
        f"stages={HEADS[default]['stages']!r}.\n\n"
        + markdown_table(
            ["task left out", "chosen on the others", "its final", "other's", "SE", ""],
            loto,
        )
    )
    return (
        note
        + "\n\n"
        + markdown_table(
            [
                "task",
                "px",
                "fit / held-out rows",
                "head",
                "head width",
                "stage weight",
                "lr",
                "held-out acc: start / epochs (s)",
                "final",
                "SE",
                "fit s",
            ],
            rows,
        )
        + loto_text
    )


def _parser():
    parser = results_lib.tasks_parser(
        __doc__.splitlines()[0], FULL, "200 rows of fashion64 and digits64, 1 epoch"
    )
    parser.add_argument(
        "--heads",
        type=results_lib.comma_list,
        help=f"comma-separated subset of {','.join(HEADS)} (default: "
        f"{','.join(DEFAULT_HEADS)}); the others are kept from the saved run",
    )
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    results = results_lib.Results.from_args(args)
    if args.report:
        result = results.read_json("stage_head.json")
    else:
        rows = SMOKE if args.smoke else FULL
        names = results_lib.chosen_tasks(args, parser, rows)
        saved = results.read_json("stage_head.json", default={})
        heads = args.heads or list(DEFAULT_HEADS)
        unknown = sorted(set(heads) - set(HEADS))
        if unknown:
            parser.error(f"unknown heads {unknown}; choose from {list(HEADS)}")
        result = measure(names, rows, saved, 1 if args.smoke else EPOCHS, heads)
    # What RidgeHead's default must be (tests/test_defaults.py reads it).
    default = leave_one_task_out(result["tasks"])[1]
    result["ridge_head_stages"] = HEADS[default]["stages"]
    results.write_json("stage_head.json", result)
    text = render(result)
    results.write_text("stage_head.md", text)
    results.update_readme("stage_head", text)
    print(text)
    print(f"written to {results.folder}")


if __name__ == "__main__":
    main()
