"""Does the estimator's head that reads every stage beat the last layer,
at its ridge start and after fine-tuning, and does a fit that stops on
held-out rows beat a fixed number of epochs?

For each task, ``FastRetrainClassifier`` with its defaults but for
``input_size`` (the task's side) and ``max_epochs``, fitted once per
configuration: ``head=RidgeHead(stages=None)`` (the last layer alone) or
``head=RidgeHead(stages="auto")`` (every block of Lite0, standardized, the
stages' weight and the ridge strength chosen by the solve's
cross-validation), each either for a fixed 3 epochs or with
``early_stopping=True`` within a budget of 6 (a tenth of the fit's rows
held out of it, the ridge start scored as epoch 0, the best of the start
and the epochs kept). Each fit sees 80% of the task's train split; the
other 20% (stratified, seed 0) are the held-out rows every accuracy here is
measured on: at the ridge start (epoch 0, the head solved before the
first epoch) and after every epoch, with the fit's seconds until then
(scoring excluded). The test split is not used. Usage, from the
repository root::

    python -m benchmarks.stage_head                    # every task, ~1 h
    python -m benchmarks.stage_head --tasks digits64   # rerun some
    python -m benchmarks.stage_head --heads "last+stop"   # some configurations
    python -m benchmarks.stage_head --report           # re-print the saved run
    python -m benchmarks.stage_head --smoke            # 200 rows, 1 epoch
"""

import time

from skfastretrain import RidgeHead

from ._lib import holdout
from ._lib import results as results_lib
from ._lib import tasks as tasks_lib
from ._lib.measure import machine_info
from ._lib.tables import markdown_table

EPOCHS = 3
#: The configurations compared: RidgeHead's ``stages``, then further
#: estimator settings; ``epochs_factor`` multiplies the run's epochs into the
#: budget of a fit that stops on held-out rows. The first four decide the
#: defaults (leave one task out); the others are measured beside them.
HEADS = {
    "last": {"stages": None},
    "stages": {"stages": "auto"},
    "last+stop": {"stages": None, "early_stopping": True, "epochs_factor": 2},
    "stages+stop": {"stages": "auto", "early_stopping": True, "epochs_factor": 2},
    "stages lr=0.001": {"stages": "auto", "lr": 0.001},
}
#: The candidates for the defaults, the incumbent first.
CANDIDATES = ("last", "stages", "last+stop", "stages+stop")
#: What a run measures unless ``--heads`` says otherwise.
DEFAULT_HEADS = CANDIDATES
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


def run_task(name, rows, epochs, heads, record=None):
    """Fit ``heads`` on task ``name``; add them to its ``record``."""
    task = tasks_lib.LOADERS[name](**rows)
    fit, hold = holdout.split(task.y_train)
    record = {
        **(record or {}),
        "size": task.size,
        "n_fit": len(fit),
        "n_holdout": len(hold),
    }
    for head in heads:
        settings = dict(HEADS[head])
        stages = settings.pop("stages")
        max_epochs = epochs * settings.pop("epochs_factor", 1)
        clf, measured = holdout.fit_held_out(
            task,
            head=RidgeHead(stages=stages),
            max_epochs=max_epochs,
            **settings,
        )
        history = clf.net_.history
        record[head] = {
            **measured,
            "width": int(clf.net_.module_.head.in_features),
            "lr": float(clf.lr_),
            "stage_weight": history[0].get("stage_weight"),
            "ridge_lambda": history[:, "ridge_lambda"],
            "kept_epoch": history[-1].get("kept_epoch"),
            "max_epochs": max_epochs,
            "epochs_run": int(clf.n_iter_),
            "best_epoch": clf.best_epoch_,
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


def leave_one_task_out(tasks):
    """Leave one task out over :data:`CANDIDATES` on :data:`DEFAULT_TASKS`
    (:func:`benchmarks._lib.holdout.leave_one_task_out`)."""
    tasks = {n: r for n, r in tasks.items() if n in DEFAULT_TASKS}
    return holdout.leave_one_task_out(tasks, CANDIDATES)


def render(result):
    machine = result["machine"]
    note = (
        "FastRetrainClassifier with its defaults but input_size and max_epochs, "
        "RidgeHead(stages=None) (last) against RidgeHead(stages='auto') (stages), "
        f"each for {EPOCHS} epochs or with early_stopping=True within "
        f"{2 * EPOCHS} (+stop; the ridge start is epoch 0); "
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
            curve = holdout.curve_text(h["curve"])
            run = h.get("epochs_run", len(h["curve"]) - 1)
            kept = h.get("best_epoch")
            rows.append(
                [
                    name,
                    str(r["size"]),
                    f"{r['n_fit']} / {r['n_holdout']}",
                    head,
                    f"{run} of {h.get('max_epochs', EPOCHS)}"
                    + ("" if kept is None else f", kept {kept}"),
                    str(h["width"]),
                    "-" if h["stage_weight"] is None else f"{h['stage_weight']:g}",
                    f"{h['lr']:g}",
                    curve,
                    f"{h['final_holdout_acc']:.3f}",
                    f"{holdout.se(h['final_holdout_acc'], r['n_holdout']):.3f}",
                    f"{h['fit_s']:.0f}",
                ]
            )
    loto_rows, default = leave_one_task_out(result["tasks"])
    chosen = HEADS[default]
    loto_text = (
        "\n\nLeave one task out: the configuration the other tasks choose (highest "
        "mean final held-out accuracy), scored on the task left out, against the "
        "best other configuration there (ties within one SE hold). The defaults "
        f"this gives ({default}): RidgeHead(stages={chosen['stages']!r}), "
        f"early_stopping={chosen.get('early_stopping', False)}, "
        f"max_epochs={EPOCHS * chosen.get('epochs_factor', 1)}.\n\n"
        + holdout.loto_table(loto_rows)
    )
    return (
        note
        + "\n\n"
        + markdown_table(
            [
                "task",
                "px",
                "fit / held-out rows",
                "configuration",
                "epochs run",
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
    # What the defaults must be (tests/test_defaults.py reads them).
    chosen = HEADS[leave_one_task_out(result["tasks"])[1]]
    result["ridge_head_stages"] = chosen["stages"]
    result["early_stopping"] = chosen.get("early_stopping", False)
    result["max_epochs"] = EPOCHS * chosen.get("epochs_factor", 1)
    results.write_json("stage_head.json", result)
    text = render(result)
    results.publish("stage_head", text)


if __name__ == "__main__":
    main()
