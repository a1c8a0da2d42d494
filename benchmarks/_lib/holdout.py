"""Measuring estimator settings on rows held out of a task's train split.

:func:`split` holds out a stratified 20% of the train split (seed 0);
:class:`HeldOutCurve` scores the fit on them at its start and after every
epoch; :func:`leave_one_task_out` turns the final scores of a set of
candidate settings into a default. The test split is never read.
"""

import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from skorch.callbacks import Callback

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
    measured on every task compete.
    """
    candidates = [c for c in candidates if all(c in r for r in tasks.values())]
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
    default = candidates[0]
    if len(chosen_everywhere) == 1 and None not in chosen_everywhere:
        default = chosen_everywhere.pop()
    return rows, default


LOTO_HEADER = [
    "task left out",
    "chosen on the others",
    "its final",
    "best other",
    "its final",
    "SE",
    "",
]


def loto_table_rows(rows):
    """The markdown rows of :func:`leave_one_task_out`'s per-task rows."""
    return [
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
    ]
