"""Runs that survive: falling back on interrupts, fingerprints, resuming."""

import json
import numbers
import os
import re
import warnings
from typing import NamedTuple

import joblib
import numpy as np

from ._stacklevel import outside_stacklevel
from .callbacks._checkpoint import TrainingCheckpoint, module_copy, read_checkpoint
from .callbacks._divergence import DivergenceError

__all__ = [
    "RunPlan",
    "checkpoint_path",
    "fit_recovering",
    "is_checkpoint",
    "plan_run",
]

# Parameters that may change between a run and its resumption: they do not
# change the arithmetic on one device (max_epochs may grow to train longer).
_FREE_PARAMS = ("verbose", "device", "max_epochs")


class RunPlan(NamedTuple):
    """Where a fit starts: its fingerprint, its seed, the epochs already done."""

    fingerprint: str
    seed: int
    done: int


def is_checkpoint(cb):
    """Whether ``cb`` (a callback or a (name, callback) pair) is a
    :class:`TrainingCheckpoint`."""
    return isinstance(cb[1] if isinstance(cb, tuple) else cb, TrainingCheckpoint)


def checkpoint_path(callbacks):
    """The file of the first :class:`TrainingCheckpoint` in ``callbacks``."""
    for cb in callbacks or []:
        if is_checkpoint(cb):
            return (cb[1] if isinstance(cb, tuple) else cb).path
    return None


def fit_recovering(net, X, y, *, epochs, checkpoint, guard):
    """``net.fit`` that falls back to the last complete epoch when it stops
    early, and puts the last good weights back when training diverges.

    ``checkpoint`` and ``guard`` are the net's :class:`TrainingCheckpoint`
    and :class:`DivergenceGuard` callbacks. An interrupt (KeyboardInterrupt,
    which skorch swallows) before any epoch completed is raised again; a
    later one warns.
    """
    try:
        net.fit(X, y, epochs=epochs)
        _fall_back_if_stopped(net, checkpoint, guard)
    except DivergenceError as exc:
        checkpoint.restore_module(net)
        exc.state_dict = module_copy(net.module_)
        # skorch skips on_train_end after an error: unfreeze and unhook here.
        net.notify("on_train_end", X=X, y=y)
        raise
    finally:
        # The copy would double the size of a pickled estimator.
        checkpoint.release()
    return net


def _fall_back_if_stopped(net, ckpt, guard):
    done = ckpt.epochs_
    if len(net.history) <= done:
        return
    if guard.diverged_ is not None:
        # The guard has put its best model back, warned, and recorded why in
        # the interrupted epoch's row, which stays.
        return
    if done == 0:
        raise KeyboardInterrupt
    ckpt.restore_module(net)
    del net.history[done:]
    warnings.warn(
        f"Training stopped during epoch {done + 1} (KeyboardInterrupt, or a "
        "callback that ends training); the estimator keeps the model of "
        f"the last completed epoch, {done}.",
        UserWarning,
        stacklevel=outside_stacklevel(),
    )


def _describe(value):
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if hasattr(value, "get_params") and not isinstance(value, type):
        # Components and callbacks: their class and parameters, which a
        # skorch callback's repr does not show.
        params = value.get_params(deep=False)
        return [type(value).__name__, {k: _describe(v) for k, v in params.items()}]
    # Memory addresses in reprs (functions, modules) differ between
    # processes and say nothing about the run.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _fingerprint(est, X, y, seed):
    params = est.get_params(deep=False)
    # A checkpoint's file may move between a run and its resumption.
    params["callbacks"] = [
        cb for cb in params["callbacks"] or [] if not is_checkpoint(cb)
    ]
    params = {
        k: _describe(v)
        for k, v in params.items()
        if k not in _FREE_PARAMS and k != "random_state"
    }
    shape = list(X.shape) if hasattr(X, "shape") else [len(X)]
    data = {
        "shape": shape,
        "dtype": str(getattr(X, "dtype", type(X).__name__)),
        "labels": joblib.hash(np.asarray(y)),
    }
    return {"params": params, "data": data, "seed": seed}


def plan_run(est, X, y, seed, *, resume):
    """The :class:`RunPlan` of a fit of ``est``.

    With ``resume`` and an existing checkpoint file, the file must come from
    the same parameters and data; its seed is used unless ``random_state`` is
    an int that gives another one.
    """
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {resume!r}.")
    path = checkpoint_path(est.callbacks)
    if resume and path is None:
        raise ValueError(
            "fit(resume=True) needs a TrainingCheckpoint(path) in callbacks."
        )
    mine = _fingerprint(est, X, y, seed)
    if not resume or not os.path.exists(path):
        return RunPlan(json.dumps(mine, sort_keys=True), seed, 0)
    state = read_checkpoint(path)
    try:
        theirs = json.loads(state["fingerprint"])
    except (TypeError, ValueError):
        theirs = {}
    if not isinstance(theirs, dict) or set(theirs) != set(mine):
        raise ValueError(f"{path!r} was not written by FastRetrainClassifier.")
    if not isinstance(est.random_state, numbers.Integral):
        mine["seed"] = theirs["seed"]
    changed = sorted(
        k
        for k in set(mine["params"]) | set(theirs["params"])
        if mine["params"].get(k) != theirs["params"].get(k)
    )
    data = mine["data"]
    changed += [f"data {k}" for k in data if data[k] != theirs["data"].get(k)]
    changed += ["random_state"] if mine["seed"] != theirs["seed"] else []
    if changed:
        raise ValueError(
            f"Cannot resume from {path!r}: it was written by a fit with "
            f"other {', '.join(changed)}."
        )
    if state["epoch"] > est.max_epochs:
        raise ValueError(
            f"Checkpoint {path!r} holds {state['epoch']} epochs, more "
            f"than max_epochs={est.max_epochs}."
        )
    return RunPlan(state["fingerprint"], theirs["seed"], state["epoch"])
