"""Per-task choices, each measured alone against the defaults on four tasks.

The four-task issue asks, for each setting where one constant might fail on
some task, whether deciding it per task (from the user's own training rows)
or another constant does better, measured one setting at a time. Each run
is ``FastRetrainClassifier`` with its defaults (the task's side as
``input_size`` aside) and one change, fitted on 80% of a task's train
split and scored on the other 20% (stratified, seed 0) at the ridge start
and after each of 3 epochs. The test split is not used. The choices:

- ``lr``: the learning-rate probe (``lr="auto"``, the incumbent: the largest
  rate whose loss after 8 steps stays within 2x the start's) against a
  fixed ``lr=0.001``, against the probe with a tighter bound (1.5x), and
  against the probe over 32 steps instead of 8 (its loss then averages 16
  batches, not 4).
- ``bn_mode``: BatchNorm held at its pretrained statistics during the SGD
  epochs (``SGDEpoch(bn_mode="auto")``, the incumbent, which is ``"eval"``
  for pretrained layers) against batch statistics (``"train"``, which the
  tuned SGDM baseline chose on three of the four tasks).
- ``augment``: none (the incumbent) against ``SGDEpoch(augment="light")``
  (a random resized crop, scale 0.7-1, and a horizontal flip, in the SGD
  epochs only); it turns the frozen prefix's store off.
- ``head solves``: the head solved after every epoch (the incumbent)
  against once, after the last epoch (``RidgeHead(solve_every=3)`` in 3
  epochs), which saves two solves and leaves the head to SGD in between.
- ``head blend``: each solve moving the head halfway to the ridge solution
  (``RidgeHead(blend=0.5)``, the incumbent) against replacing it (``1``).
- ``freeze_prob``: half the backbone's layers frozen as a prefix (the
  incumbent, chosen on the two tiny grayscale tasks by
  ``benchmarks.defaults``) against a quarter and three quarters.

On ELPV, whose cells have no canonical orientation, two more runs:
``SGDEpoch(augment="dihedral")`` (a random flip and quarter turn, as the
published CNN was trained with) and the same for 10 epochs, what a longer
budget buys toward the published 88.42%. And one for the learning rate
where the probe's choice diverges (over 32 steps it picks 0.003 there):
the same probe with a rate back-off (:class:`BackoffGuard`) in place of
stopping at the first blow-up.

The number of epochs (held-out early stopping within a budget against a
fixed 3) and the input size were measured the same way by
``benchmarks.stage_head`` and ``benchmarks.defaults``. Each choice's
default is decided by leaving one task out (``_lib.holdout``): the
incumbent stays unless the candidate the other tasks choose wins, or ties
within one standard error, on every task left out.

Usage, from the repository root::

    python -m benchmarks.per_task --tasks all          # ~2.2 h on 2 cores
    python -m benchmarks.per_task --tasks elpv224 --runs base,lr=0.001
    python -m benchmarks.per_task --report             # re-print the saved run
    python -m benchmarks.per_task --smoke              # 200 rows, 1 epoch

Writes ``results/per_task.json`` (each run saved as it ends; runs of other
tasks and settings are kept) and ``.md``, and the README's ``per_task``
section.
"""

import time
import warnings
from contextlib import contextmanager
from unittest import mock

from skfastretrain import DivergenceGuard, LRProbe, RidgeHead, SGDEpoch
from skfastretrain.callbacks._divergence import current_lr
from skfastretrain.callbacks._lr_probe import load_changed

from ._lib import holdout
from ._lib import results as results_lib
from ._lib import tasks as tasks_lib
from ._lib.measure import machine_info
from ._lib.tables import markdown_table

EPOCHS = 3
#: Run label -> the one setting it changes from the defaults.
RUNS = {
    "base": {},
    "lr=0.001": {"lr": 0.001},
    "probe bound 1.5": {"probe": {"max_loss_ratio": 1.5}},
    "probe 32 steps": {"probe": {"n_steps": 32}},
    "bn_mode=train": {"sgd": {"bn_mode": "train"}},
    "augment=light": {"sgd": {"augment": "light"}},
    # The head solved once, after the last epoch, instead of after each.
    "solve at the end": {"head": {"solve_every": "last"}},
    # Each solve replaces the head instead of moving it halfway.
    "blend=1": {"head": {"blend": 1.0}},
    # A shallower and a deeper frozen prefix, chosen on two tasks only.
    "freeze_prob=0.25": {"freeze_prob": 0.25},
    "freeze_prob=0.75": {"freeze_prob": 0.75},
    # Only where flips and quarter turns keep the labels (ELPV's cells).
    "augment=dihedral": {"sgd": {"augment": "dihedral"}},
    # What a longer budget buys there: 10 epochs with that augmentation.
    "dihedral 10 epochs": {"max_epochs": 10, "sgd": {"augment": "dihedral"}},
    # Where the probe's rate diverges: back off instead of stopping.
    "probe 32 steps + back-off": {"probe": {"n_steps": 32}, "backoff": 2},
}
#: The runs of a task besides those of every task (:data:`CHOICES`).
TASK_RUNS = {
    "elpv224": ("augment=dihedral", "dihedral 10 epochs", "probe 32 steps + back-off")
}
#: Each choice's candidates, the incumbent (the defaults' run) first.
CHOICES = {
    "lr": ("base", "lr=0.001", "probe bound 1.5", "probe 32 steps"),
    "bn_mode": ("base", "bn_mode=train"),
    "augment": ("base", "augment=light"),
    "head solves": ("base", "solve at the end"),
    "head blend": ("base", "blend=1"),
    "freeze_prob": ("base", "freeze_prob=0.25", "freeze_prob=0.75"),
}
#: The issue's four tasks, ELPV at its default side on a CPU (224 px).
FULL = {
    "fashion64": {"n_train": 4000, "n_test": 10},
    "digits64": {},
    "fashion224": {"n_train": 1000, "n_test": 10},
    "elpv224": {},
}
SMOKE = {"fashion64": {"n_train": 200, "n_test": 10}, "digits64": {"n": 200}}


@contextmanager
def probe_defaults(**params):
    """The estimator's learning-rate probe with other defaults ``params``
    (candidates for LRProbe's defaults, so they are measured by changing
    them where the estimator builds its probe)."""
    if not params:
        yield
        return

    class Probe(LRProbe):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**params, **kwargs})

    with mock.patch("skfastretrain._pipeline.LRProbe", Probe):
        yield


class BackoffGuard(DivergenceGuard):
    """A candidate DivergenceGuard that backs the rate off at a blow-up.

    At each of its first ``max_backoffs`` blow-ups it puts back the best
    model seen (as DivergenceGuard does before stopping), divides the rate
    by sqrt(10), one step of the probe's grid, empties the momentum and
    goes on; after them it stops as DivergenceGuard does. It does not put
    the best model back at the end of the fit, and a NaN loss still raises
    (DivergenceError); under ``lr_schedule="cosine"`` the scheduler would
    overwrite the lowered rate (the runs here use the constant default).
    Measured here, not in the package: it reads DivergenceGuard's private
    state.
    """

    max_backoffs = 0

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        self.backoffs_ = []

    def _stop(self, net, reason, raise_stop=True):
        if len(self.backoffs_) >= self.max_backoffs or not raise_stop:
            return super()._stop(net, reason, raise_stop)
        _, epoch, state = self._best or (None, *self._start)
        # Only the changed tensors: the frozen prefix's store stays valid.
        load_changed(net.module_, state)
        for group in net.optimizer_.param_groups:
            group["lr"] /= 10**0.5
        net.optimizer_.state.clear()
        self._ema = self._reference
        self.backoffs_.append((len(net.history), epoch, current_lr(net)))


@contextmanager
def backoff_guard(max_backoffs):
    """Fits with :class:`BackoffGuard` in place of DivergenceGuard."""
    if not max_backoffs:
        yield
        return
    guard = type("BackoffGuard", (BackoffGuard,), {"max_backoffs": max_backoffs})
    with mock.patch("skfastretrain._pipeline.DivergenceGuard", guard):
        yield


def run_settings(label, epochs=EPOCHS):
    """``RUNS[label]`` for a run of ``epochs`` epochs (unless it sets its
    own), with a head solved ``"last"`` solved after its last epoch."""
    settings = dict(RUNS[label])
    head = settings.get("head")
    if head is not None and head.get("solve_every") == "last":
        last = settings.get("max_epochs", epochs)
        settings["head"] = {**head, "solve_every": last}
    return settings


def run_one(task, label, epochs):
    """One run of ``RUNS[label]`` on ``task``'s held-out split."""
    settings = run_settings(label, epochs)
    # Only what the run changes; the rest stays the estimator's defaults.
    if "sgd" in settings:
        settings["sgd"] = SGDEpoch(**settings["sgd"])
    if "head" in settings:
        settings["head"] = RidgeHead(**settings["head"])
    probe = settings.pop("probe", {})
    max_epochs = settings.pop("max_epochs", epochs)
    with (
        probe_defaults(**probe),
        backoff_guard(settings.pop("backoff", 0)),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        clf, measured = holdout.fit_held_out(
            task,
            max_epochs=max_epochs,
            **settings,
        )
    lr_probe = next(
        (cb for _, cb in clf.net_.callbacks_ if isinstance(cb, LRProbe)), None
    )
    guard = next(
        (cb for _, cb in clf.net_.callbacks_ if isinstance(cb, DivergenceGuard)), None
    )
    return {
        **measured,
        "lr": float(clf.lr_),
        # The probe's loss per rate tried, and the loss it compared them with.
        "probe_losses": None
        if lr_probe is None
        else {f"{lr:g}": loss for lr, loss in lr_probe.losses_.items()},
        "probe_start_loss": getattr(lr_probe, "start_loss_", None),
        # A stopped epoch has no train_loss (DivergenceGuard stops it mid-way).
        "train_loss": [row.get("train_loss") for row in clf.history_],
        "kept_epoch": clf.history_[-1].get("kept_epoch"),
        # (epoch, epoch put back, new rate) of each back-off (BackoffGuard).
        "backoffs": getattr(guard, "backoffs_", []),
        "diverged": [
            str(w.message)[:200] for w in caught if "diverg" in str(w.message).lower()
        ],
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def task_runs(name):
    """The runs of task ``name``: every choice's candidates, then its own."""
    return [*dict.fromkeys(sum(CHOICES.values(), ())), *TASK_RUNS.get(name, ())]


def measure(names, rows, runs, epochs, saved, save):
    saved["machine"] = machine_info()
    records = saved.setdefault("tasks", {})
    for name in names:
        task = tasks_lib.LOADERS[name](**rows[name])
        fit, hold = holdout.split(task.y_train)
        record = records.setdefault(name, {})
        record.update(size=task.size, n_fit=len(fit), n_holdout=len(hold))
        for label in runs or task_runs(name):
            print(f"[{time.strftime('%H:%M:%S')}] {name} {label}", flush=True)
            record[label] = run_one(task, label, epochs)
            print(name, label, record[label]["curve"], record[label]["lr"], flush=True)
            save(saved)
    saved["tasks"] = {n: records[n] for n in FULL if n in records}
    return saved


def decide(result):
    """Each choice's leave-one-task-out rows and the default it gives."""
    tasks = {n: r for n, r in result["tasks"].items() if n in FULL}
    return {
        choice: holdout.leave_one_task_out(tasks, candidates)
        for choice, candidates in CHOICES.items()
        if len(tasks) == len(FULL)
    }


def render(result):
    machine = result["machine"]
    note = (
        "FastRetrainClassifier with its defaults (input_size: the task's side) and "
        f"one change per run, {EPOCHS} epochs, seed 0; fitted on 80% of the train "
        "split, every accuracy on the other 20% (held out, stratified): at the ridge "
        "start, then after each epoch, with the fit's seconds until then. lr: the "
        "rate the fit used (probed unless fixed); fit s: the whole fit, held-out "
        "scoring included. One SE of a held-out accuracy "
        f"near 0.85 on n rows is sqrt(0.13 / n). torch {machine['torch']}, "
        f"{machine['threads']} threads."
    )
    rows = []
    for name, r in result["tasks"].items():
        for label in RUNS:
            if label not in r:
                continue
            run = r[label]
            curve = holdout.curve_text(run["curve"])
            notes = []
            notes.extend(
                f"blew up in epoch {epoch}: epoch {kept} put back, lr {lr:.2g}"
                for epoch, kept, lr in run.get("backoffs", ())
            )
            if run["kept_epoch"] is not None:
                notes.append(f"diverged, kept epoch {run['kept_epoch']}")
            rows.append(
                [
                    name,
                    f"{r['n_fit']} / {r['n_holdout']}",
                    label,
                    f"{run['lr']:g}",
                    curve,
                    f"{run['final_holdout_acc']:.3f}",
                    f"{holdout.se(run['final_holdout_acc'], r['n_holdout']):.3f}",
                    f"{run['fit_s']:.0f}",
                    "; ".join(notes),
                ]
            )
    text = (
        note
        + "\n\n"
        + markdown_table(
            [
                "task",
                "fit / held-out rows",
                "run",
                "lr",
                "held-out acc: start / epochs (s)",
                "final",
                "SE",
                "fit s",
                "note",
            ],
            rows,
        )
    )
    for choice, (loto_rows, default) in decide(result).items():
        text += (
            f"\n\n**{choice}**: leave one task out over "
            f"{', '.join(CHOICES[choice])} (ties within one SE hold); the default "
            f"this gives: {default}.\n\n" + holdout.loto_table(loto_rows)
        )
    return text


def _parser():
    parser = results_lib.tasks_parser(
        __doc__.splitlines()[0], FULL, "200 rows of fashion64 and digits64, 1 epoch"
    )
    parser.add_argument(
        "--runs",
        type=results_lib.comma_list,
        help=f"comma-separated subset of {','.join(RUNS)} (default: the choices' "
        "runs and the task's own); the others are kept from the saved run",
    )
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    results = results_lib.Results.from_args(args)
    if args.report:
        result = results.read_json("per_task.json")
    else:
        rows = SMOKE if args.smoke else FULL
        names = results_lib.chosen_tasks(args, parser, rows)
        runs = args.runs
        unknown = sorted(set(runs or ()) - set(RUNS))
        if unknown:
            parser.error(f"unknown runs {unknown}; choose from {list(RUNS)}")
        saved = results.read_json("per_task.json", default={})
        result = measure(
            names,
            rows,
            runs,
            1 if args.smoke else EPOCHS,
            saved,
            lambda record: results.write_json("per_task.json", record),
        )
    # What the defaults must be (tests/test_defaults.py reads them): each
    # choice's chosen run and the settings of every candidate.
    result["defaults"] = {
        choice: {
            "chosen": default,
            "candidates": {label: run_settings(label) for label in CHOICES[choice]},
        }
        for choice, (_, default) in decide(result).items()
    }
    results.write_json("per_task.json", result)
    results.publish("per_task", render(result))


if __name__ == "__main__":
    main()
