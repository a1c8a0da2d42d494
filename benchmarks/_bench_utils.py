"""Shared pieces of the transfer benchmark: settings, data, timing, memory."""

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from skorch.callbacks import Callback
from torch import nn

from skfastretrain import L2SP, DeltaRegularizer, RidgeHead, SGDEpoch
from skfastretrain.datasets import load_fashion_mnist

SEED = 0
BATCH_SIZE = 32
IMAGE_SIZE = 64

#: The settings. Every method of one run uses the same one; ``image_size``
#: is 64 px unless a setting says otherwise.
SETTINGS = {
    "quick": {"n_train": 1500, "n_test": 500, "epochs": 2},
    "full": {"n_train": 10000, "n_test": 2000, "epochs": 4},
    # The second setting: Lite0's native 224 px, on fewer images to keep
    # the time bounded (12x the pixels of 64 px).
    "native": {"n_train": 1000, "n_test": 1000, "epochs": 3, "image_size": 224},
    "smoke": {"n_train": 100, "n_test": 50, "epochs": 2},  # checks the script
}


def image_size(setting):
    """The side, in pixels, that a setting resizes the 28 px images to."""
    return setting.get("image_size", IMAGE_SIZE)


#: FastRetrainClassifier as plain fine-tuning with sgdm's settings: a new
#: random head, no freezing or head solves, lr 0.003 with the cosine schedule
#: and the pretrained BatchNorm held in eval mode.
_FINE_TUNE = {
    "kind": "estimator",
    "freeze_prob": 0.0,
    "ridge_lambda": None,
    "init_head": "random",
    "lr": 0.003,
    "lr_schedule": "cosine",
}

#: Hyperparameters of each method. pilot.py chose sgdm's lr, BatchNorm mode
#: and stochastic depth (results/pilot.md) and kept lr 0.001 for the
#: estimator.
METHODS = {
    "sgdm": {
        "kind": "sgdm",
        "lr": 0.003,
        "bn": "eval",
        "bn_momentum": 0.1,
        "stochastic_depth": False,
    },
    # fastai's fine_tune in plain torch (_bench_fastai.py); base rate and
    # BatchNorm mode from pilot.py, like sgdm's.
    "fastai": {
        "kind": "fastai",
        "lr": 0.005,
        "bn": "eval",
        "bn_momentum": 0.1,
        "stochastic_depth": False,
    },
    # The estimator exactly as a user who sets nothing gets it (the epoch
    # budget and input size of the setting aside): what the targets judge.
    "default": {"kind": "default"},
    "linear_probe": {"kind": "linear_probe", "C": 1.0, "max_iter": 5000},
    "sgdm_freeze": {
        "kind": "estimator",
        "freeze_prob": 0.5,
        "freeze_mode": "prefix",
        "ridge_lambda": None,
        "init_head": "random",
        "lr": 0.001,
    },
    "sgdm_ridge": {
        "kind": "estimator",
        "freeze_prob": 0.0,
        "ridge_lambda": "auto",
        "lr": 0.001,
    },
    "ours": {
        "kind": "estimator",
        "freeze_prob": 0.5,
        "freeze_mode": "prefix",
        "ridge_lambda": "auto",
        "lr": 0.001,
    },
    "ours_random": {
        "kind": "estimator",
        "freeze_prob": 0.5,
        "freeze_mode": "random",
        "ridge_lambda": "auto",
        "lr": 0.001,
    },
    # The other methods of the research. L2-SP and DELTA regularize plain
    # fine-tuning in their papers, so the regularizer is their only
    # difference from sgdm.
    "l2sp": {**_FINE_TUNE, "regularizer": "l2sp"},
    "delta": {**_FINE_TUNE, "regularizer": "delta"},
    # Dense recomputation of the head from the softmax residual, in ours.
    "residual": {
        "kind": "estimator",
        "freeze_prob": 0.5,
        "freeze_mode": "prefix",
        "ridge_lambda": "auto",
        "head_update": "residual",
        "lr": 0.001,
    },
    # ours, then one round of TASCNet filter pruning (its time is added).
    "pruned": {
        "kind": "pruned",
        "freeze_prob": 0.5,
        "freeze_mode": "prefix",
        "ridge_lambda": "auto",
        "lr": 0.001,
        "prune": {
            "max_rounds": 1,
            "history_epochs": 1,
            "pull_epochs": 1,
            "finetune_epochs": 1,
        },
    },
}


#: Extra variants, run only when named in ``--methods``.
EXTRA_METHODS = {
    # ours with sgdm's optimizer settings: lr 0.003 and the same cosine
    # schedule, so freezing and head solves are the only differences.
    "ours_cosine": {**METHODS["ours"], "lr": 0.003, "lr_schedule": "cosine"},
    # and the frozen prefix shrinking to nothing over the epochs
    "ours_cosine_unfreeze": {
        **METHODS["ours"],
        "lr": 0.003,
        "lr_schedule": "cosine",
        "freeze_prob": [0.5, 0.5, 0.25, 0.0],
    },
    # the estimator as plain fine-tuning, the control of l2sp and delta
    "finetune": _FINE_TUNE,
    # ours with the Gram statistics gathered in the SGD epoch's forward pass
    "ours_reuse": {**METHODS["ours"], "reuse_features": True},
    # ours with three quarters of the layers frozen (pilot: same holdout
    # accuracy as 0.5, SGD epochs 30% shorter)
    "ours_p75": {**METHODS["ours"], "freeze_prob": 0.75},
    # ours with the frozen prefix's output stored once (cache_prefix=True):
    # the same function, with only the rest of the network run after epoch 1
    "ours_cached": {**METHODS["ours"], "cache_prefix": True},
    # ours under bf16 autocast with channels-last (precision="bfloat16")
    "ours_bf16": {**METHODS["ours"], "precision": "bfloat16"},
    # the methods' own schedule (section 1: frozen fraction 0, 0, .25, .25,
    # .5, .5, .75, .75 over 8 epochs) compressed to the full run's 4 epochs
    "ours_paper_schedule": {
        **METHODS["ours"],
        "lr": 0.003,
        "lr_schedule": "cosine",
        "freeze_prob": [0.0, 0.25, 0.5, 0.75],
    },
}


#: The flat setting names of the records (the estimator's parameters before
#: they moved into its components) -> the component's parameter name.
SGD_SETTINGS = {
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "lr_schedule": "lr_schedule",
    "bn_mode": "bn_mode",
    "bn_momentum": "bn_momentum",
    "cache_prefix": "cache_prefix",
    "cache_dtype": "cache_dtype",
}
HEAD_SETTINGS = {
    "head_update": "update",
    "head_blend": "blend",
    "init_head": "init",
    "solve_every": "solve_every",
    "reuse_features": "reuse_features",
    "head_hidden": "hidden",
    "reinit_layers": "reinit_layers",
}
REGULARIZER_SETTINGS = {
    "reg_alpha": "alpha",
    "reg_beta": "beta",
    "reg_layers": "layers",
}
#: The ``regularizer`` names and the callback each stands for.
_REGULARIZERS = {
    "l2sp": (L2SP, {}),
    "delta": (DeltaRegularizer, {}),
    "feature_map": (DeltaRegularizer, {"weighted": False}),
}


def _pop(settings, names):
    return {new: settings.pop(old) for old, new in names.items() if old in settings}


def estimator_kwargs(settings):
    """FastRetrainClassifier keyword arguments for a record's flat settings.

    The records (METHODS, the pilots' runs, the saved JSON) keep one flat,
    JSON-serializable dict per run, in the names the estimator had before its
    head, SGD epoch and regularizer became objects: ``cache_prefix``,
    ``lr_schedule``, ``bn_mode``, ... go into one :class:`SGDEpoch` (``sgd``);
    ``init_head``, ``head_blend``, ``head_update``, ``reuse_features``, ...
    into one :class:`RidgeHead` (``head``); ``reg_alpha``, ``reg_beta`` and
    ``reg_layers`` into the :class:`L2SP` or :class:`DeltaRegularizer` that
    ``regularizer`` names. Every other key is passed as it is.
    """
    kwargs = dict(settings)
    sgd = _pop(kwargs, SGD_SETTINGS)
    head = _pop(kwargs, HEAD_SETTINGS)
    reg = _pop(kwargs, REGULARIZER_SETTINGS)
    if sgd:
        kwargs["sgd"] = SGDEpoch(**sgd)
    if head:
        if kwargs.get("head") == "residual":
            head = {"update": "residual", **head}
        kwargs["head"] = RidgeHead(**head)
    if reg:
        name = kwargs.get("regularizer")
        if name not in _REGULARIZERS:
            raise ValueError(f"{sorted(reg)} need a regularizer name, got {name!r}")
        cls, fixed = _REGULARIZERS[name]
        kwargs["regularizer"] = cls(**fixed, **reg)
    return kwargs


def load_data(setting, *, holdout=False):
    """Train and test images (uint8, (n, 28, 28)) and labels.

    With ``holdout=True`` (the pilot) the evaluation rows come from the train
    split too, drawn with another seed, so choosing hyperparameters never
    looks at the test split.
    """
    n_train, n_test = setting["n_train"], setting["n_test"]
    if holdout:
        from sklearn.model_selection import train_test_split

        X, y = load_fashion_mnist(
            split="train",
            subset=n_train + n_test,
            random_state=1,
            source="release",
            return_X_y=True,
        )
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=n_test, stratify=y, random_state=SEED
        )
        return X_tr, y_tr, X_te, y_te
    X_tr, y_tr = load_fashion_mnist(
        split="train",
        subset=n_train,
        random_state=SEED,
        source="release",
        return_X_y=True,
    )
    X_te, y_te = load_fashion_mnist(
        split="test",
        subset=n_test,
        random_state=SEED,
        source="release",
        return_X_y=True,
    )
    return X_tr, y_tr, X_te, y_te


def validation_rows(X_train, n, *, seed=SEED):
    """``n`` images of the train split (and labels) not among ``X_train``.

    For a method that needs a validation set (``prune_filters``): rows the
    model was trained on would make its accuracy look better than it is, and
    the test split stays unseen.
    """
    X, y = load_fashion_mnist(split="train", source="release", return_X_y=True)
    used = {img.tobytes() for img in X_train}
    free = np.flatnonzero([img.tobytes() not in used for img in X])
    rows = np.random.default_rng(seed).choice(free, size=n, replace=False)
    return X[rows], y[rows]


class LitePreprocess(nn.Module):
    """What the estimator does to the images, written out for the baselines.

    uint8 / 255, one channel repeated to three, bilinear antialiased resize,
    then EfficientNet-Lite's normalization ``(x - 127/255) / (128/255)``.
    """

    def __init__(self, size=IMAGE_SIZE):
        super().__init__()
        self.size = (size, size)

    def forward(self, x):
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(
            x, size=self.size, mode="bilinear", align_corners=False, antialias=True
        )
        return (x - 127 / 255) / (128 / 255)


def rss_mb():
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb():
    """Resident memory of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class TestAccuracy(Callback):
    """Record test accuracy at the start of training and after every epoch.

    The time spent predicting is measured and excluded from the reported fit
    time: ``time`` is seconds since ``t0`` (set right before ``fit``) minus
    all evaluation so far. Runs after the estimator's own callbacks, so the
    first point follows the initial ridge solve and every later one follows
    that epoch's head solve.
    """

    def __init__(self, X_test, y_test, t0=None):
        self.X_test = X_test
        self.y_test = y_test
        self.t0 = t0

    def initialize(self):
        self.points_ = []
        self.eval_time_ = 0.0
        return self

    def _measure(self, net, epoch, train_loss=None):
        now = time.perf_counter()
        fit_time = now - self.t0 - self.eval_time_
        with torch.random.fork_rng(devices=[]):
            pred = net.predict(self.X_test[:, None])
        acc = float(np.mean(pred == self.y_test))
        self.last_pred_ = pred.tolist()
        self.eval_time_ += time.perf_counter() - now
        self.points_.append(
            {
                "epoch": epoch,
                "time": fit_time,
                "test_acc": acc,
                "train_loss": train_loss,
            }
        )
        return fit_time, acc

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self._measure(net, 0)

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        fit_time, acc = self._measure(net, epoch, net.history[-1, "train_loss"])
        net.history.record("fit_time", fit_time)
        net.history.record("test_acc", acc)


def machine_info():
    """What the timings depend on: threads, cores and the load on them."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
    }


#: The start of a snippet run by :func:`run_snippet`: imports, and the
#: benchmark folder on the path (format it with ``here``).
SNIPPET_PRELUDE = """
import json, sys, time, torch
sys.path.insert(0, {here!r})
from torch import nn
from _bench_methods import _features, _pretrained_lite0
from _bench_utils import LitePreprocess, load_data
"""


def run_snippet(code, env_extra=None, *, timeout=None):
    """Run ``code`` in a fresh interpreter; its last stdout line is JSON.

    ``OMP_WAIT_POLICY`` is dropped from the environment unless
    ``env_extra`` sets it. A failure returns ``{"error": <last stderr line>}``.
    """
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_extra or {})
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])
