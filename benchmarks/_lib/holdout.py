"""Measuring estimator settings on rows held out of a task's train split.

:func:`split` holds out a stratified 20% of the train split (seed 0);
:class:`HeldOutCurve` scores the fit on them at its start and after every
epoch (:func:`fit_held_out` fits the estimator so);
:func:`leave_one_task_out` turns the final scores of a set of candidate
settings into a default. The test split is never read.
"""

import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from skorch.callbacks import Callback

from skfastretrain import FastRetrainClassifier

from .tables import markdown_table

SEED = 0
HOLDOUT = 0.2


def split(y, *, holdout=HOLDOUT, seed=SEED):
    """Row indices ``(fit, held_out)`` of a train split with labels ``y``."""
    return train_test_split(
        np.arange(len(y)), test_size=holdout, stratify=y, random_state=seed
    )


def se(acc, n):
    """One standard error of an accuracy ``acc`` measured on ``n`` rows."""
    return (acc * (1 - acc) / n) ** 0.5


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


def leave_one_task_out(tasks, candidates):
    """The default that leaving one task out gives, and each task's row.

    ``tasks`` maps a task to its record: ``n_holdout`` and, per candidate
    setting, ``{"final_holdout_acc": ...}``. For each task: the candidate
    the *other* tasks choose (the highest mean final held-out accuracy; the
    incumbent, ``candidates[0]``, on a tie) and whether it wins, or ties
    within one standard error, against every other candidate on the task
    left out. A candidate becomes the default only if every task's row
    chooses it and holds; otherwise the incumbent stays. Only the candidates
    measured on every task compete; with fewer than two, no row is made
    and the incumbent stays.
    """
    incumbent = candidates[0]
    candidates = [c for c in candidates if all(c in r for r in tasks.values())]
    if len(candidates) < 2:
        # Nothing to choose between (a run of one candidate, or a smoke run).
        return [], incumbent
    rows, chosen_everywhere = [], set()
    for name, r in tasks.items():
        others = [o for o in tasks if o != name]
        mean = {
            c: np.mean([tasks[o][c]["final_holdout_acc"] for o in others])
            for c in candidates
        }
        # max keeps the first of equal means: the incumbent wins ties.
        chosen = max(candidates, key=lambda c: mean[c])
        acc = {c: r[c]["final_holdout_acc"] for c in candidates}
        rival = max((c for c in candidates if c != chosen), key=lambda c: acc[c])
        error = se(acc[rival], r["n_holdout"])
        holds = acc[chosen] >= acc[rival] - error
        rows.append(
            {
                "task": name,
                "chosen": chosen,
                "acc_chosen": acc[chosen],
                "rival": rival,
                "acc_other": acc[rival],
                "se": error,
                "holds": bool(holds),
            }
        )
        chosen_everywhere.add(chosen if holds else None)
    default = incumbent
    if len(chosen_everywhere) == 1 and None not in chosen_everywhere:
        default = chosen_everywhere.pop()
    return rows, default


def loto_table(rows):
    """:func:`leave_one_task_out`'s per-task rows as a markdown table."""
    header = [
        "task left out",
        "chosen on the others",
        "its final",
        "best other",
        "its final",
        "SE",
        "",
    ]
    return markdown_table(
        header,
        [
            [
                row["task"],
                row["chosen"],
                f"{row['acc_chosen']:.3f}",
                row["rival"],
                f"{row['acc_other']:.3f}",
                f"{row['se']:.3f}",
                "wins or ties" if row["holds"] else "loses",
            ]
            for row in rows
        ],
    )


def curve_text(points):
    """``(seconds, accuracy)`` points as ``0.835 (10 s) / 0.851 (29 s)``."""
    return " / ".join(f"{acc:.3f} ({s:.0f} s)" for s, acc in points)


def fit_held_out(task, **params):
    """``FastRetrainClassifier(**params)`` fitted on :func:`split`'s fit rows
    of ``task``'s train split, at the task's side and seed 0, scored on the
    held-out rows by :class:`HeldOutCurve`.

    Returns the fitted estimator and a record: ``fit_s`` (the whole fit,
    scoring included), ``curve`` (the held-out points) and
    ``final_holdout_acc`` (of the model ``predict`` uses).
    """
    X, y = task.X_train, task.y_train
    fit, hold = split(y)
    start = time.perf_counter()
    clf = FastRetrainClassifier(
        input_size=task.size,
        random_state=SEED,
        verbose=0,
        callbacks=[("held_out", HeldOutCurve(X[hold][:, None], y[hold]))],
        **params,
    ).fit(X[fit], y[fit])
    fit_s = time.perf_counter() - start
    # The estimator trains a copy of the callbacks it is given.
    curve = dict(clf.net_.callbacks_)["held_out"]
    return clf, {
        "fit_s": fit_s,
        "curve": curve.points_,
        "final_holdout_acc": float(np.mean(clf.predict(X[hold]) == y[hold])),
    }
