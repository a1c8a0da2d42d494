"""How each method of the transfer benchmark is fitted and measured.

:func:`run_method` runs one method and returns its record; the transfer
benchmark and the pilot call it in a fresh process
(:func:`benchmarks._lib.snapshot.spawn_method`), so that the peak memory is
that method's own.
"""

import math
import os
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier
from skorch.callbacks import LRScheduler
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from skfastretrain import FastRetrainClassifier, prune_filters

from .data import (
    BATCH_SIZE,
    SEED,
    image_size,
    load_data,
    n_classes_of,
    validation_rows,
)
from .fastai import run_fastai
from .measure import TestAccuracy, current_rss_mb, machine_info, rss_mb
from .methods import estimator_kwargs
from .models import Preprocess, hold_bn_in_eval, lite_features, pretrained_lite0


def baseline_backbone(params, n_classes=10):
    """Pretrained Lite0 with a new head, as a baseline's ``params`` set it.

    ``stochastic_depth`` (default True) keeps the blocks' drop-connect;
    ``bn`` is ``"eval"`` (pretrained statistics held) or ``"train"`` (batch
    statistics, running ones at ``bn_momentum``).
    """
    backbone = pretrained_lite0(n_classes=n_classes)
    if not params.get("stochastic_depth", True):
        for block in backbone._blocks:
            block.drop_connect = 0.0
    if params["bn"] == "eval":
        hold_bn_in_eval(backbone)
    else:
        for m in backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = params["bn_momentum"]
    return backbone


def run_sgdm(params, data, setting):
    """Plain skorch fine-tuning of the whole network, cosine learning rate."""
    X_tr, y_tr, X_te, y_te = data
    epochs, size = setting["epochs"], image_size(setting)
    steps = epochs * math.ceil(len(y_tr) / BATCH_SIZE)
    acc_cb = TestAccuracy(X_te, y_te)
    acc_cb.t0 = time.perf_counter()
    torch.manual_seed(SEED)
    backbone = baseline_backbone(params, n_classes_of(y_tr))
    net = NeuralNetClassifier(
        nn.Sequential(Preprocess(size), backbone),
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        lr=params["lr"],
        batch_size=BATCH_SIZE,
        max_epochs=epochs,
        train_split=None,
        iterator_train__shuffle=True,
        iterator_train__generator=torch.Generator().manual_seed(SEED),
        callbacks=[
            (
                "lr_schedule",
                LRScheduler(CosineAnnealingLR, T_max=steps, step_every="batch"),
            ),
            ("test_acc", acc_cb),
        ],
        device="cpu",
        verbose=0,
    )
    net.fit(X_tr[:, None], y_tr)
    cb = dict(net.callbacks_)["test_acc"]
    fit_wall = time.perf_counter() - acc_cb.t0 - cb.eval_time_
    history = [{"dur": row["dur"]} for row in net.history]
    return cb.points_, history, fit_wall, cb.eval_time_, cb.last_pred_, None


def run_linear_probe(params, data, setting):
    """Frozen pretrained features, standardized, and a LogisticRegression."""
    X_tr, y_tr, X_te, y_te = data
    size = image_size(setting)
    t0 = time.perf_counter()
    backbone = pretrained_lite0().eval()
    H = lite_features(backbone, X_tr, size)
    t_feat = time.perf_counter() - t0
    clf = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=params["C"], max_iter=params["max_iter"]),
    ).fit(H, y_tr)
    fit_wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    pred = clf.predict(lite_features(backbone, X_te, size))
    acc = float(np.mean(pred == y_te))
    eval_time = time.perf_counter() - t1
    loss = float(log_loss(y_tr, clf.predict_proba(H)))
    n_iter = int(clf[-1].n_iter_.max())
    point = {"epoch": 1, "time": fit_wall, "test_acc": acc, "train_loss": loss}
    history = [{"feature_dur": t_feat, "lr_dur": fit_wall - t_feat, "n_iter": n_iter}]
    return [point], history, fit_wall, eval_time, pred.tolist(), None


#: The record keys run_estimator reads, in their flat names (estimator_kwargs
#: turns them into the estimator's parameters and components).
_ESTIMATOR_KEYS = (
    "freeze_prob",
    "freeze_mode",
    "ridge_lambda",
    "init_head",
    "lr",
    "head_blend",
    "bn_mode",
    "reuse_features",
    "lr_schedule",
    "regularizer",
    "head_update",
    "precision",
    "cache_prefix",
)
_HISTORY_KEYS = (
    "dur",
    "solve_dur",
    "init_solve_dur",
    "train_acc_before_solve",
    "init_train_acc_before_solve",
    "ridge_lambda",
    "init_ridge_lambda",
    "frozen_fraction",
)


def run_estimator(params, data, setting):
    """FastRetrainClassifier with one of the ablation's settings."""
    X_tr, y_tr, X_te, y_te = data
    epochs = setting["epochs"]
    acc_cb = TestAccuracy(X_te, y_te)
    settings = {k: params[k] for k in _ESTIMATOR_KEYS if k in params}
    if params["kind"] != "default":
        # The recorded ablation predates the defaults pilot (benchmarks.defaults): a
        # method states every setting it depends on, and the new defaults
        # that would change it are pinned to the values those runs had.
        settings = {"cache_prefix": False, "lr": 0.01, **settings}
    # Flat settings (the records' names) -> sgd=SGDEpoch(...), head=RidgeHead(...)
    kwargs = estimator_kwargs(settings)
    clf = FastRetrainClassifier(
        "efficientnet_lite0",
        weights="DEFAULT",
        input_size=image_size(setting),
        max_epochs=epochs,
        batch_size=BATCH_SIZE,
        random_state=SEED,
        callbacks=[("test_acc", acc_cb)],
        **kwargs,
    )
    acc_cb.t0 = time.perf_counter()
    clf.fit(X_tr, y_tr)
    cb = dict(clf.net_.callbacks_)["test_acc"]
    fit_wall = time.perf_counter() - acc_cb.t0 - cb.eval_time_
    history = [{k: row[k] for k in _HISTORY_KEYS if k in row} for row in clf.history_]
    return cb.points_, history, fit_wall, cb.eval_time_, cb.last_pred_, clf


def run_pruned(params, data, setting):
    """ours, then ``prune_filters``; the last point adds the pruning time.

    The pruning's validation rows are train-split images outside the
    training subset (as many as the test rows); the test rows stay unseen.
    """
    X_tr, y_tr, X_te, y_te = data
    points, history, fit_wall, eval_time, _, clf = run_estimator(params, data, setting)
    validation = validation_rows(X_tr, len(y_te), setting)
    start = time.perf_counter()
    pruned = prune_filters(
        clf,
        X_tr,
        y_tr,
        validation_data=validation,
        random_state=SEED,
        **params["prune"],
    )
    prune_wall = time.perf_counter() - start
    start = time.perf_counter()
    pred = pruned.predict(X_te)
    eval_time += time.perf_counter() - start
    report = pruned.pruning_report_
    points.append(
        {
            "epoch": len(pruned.history_),
            "time": fit_wall + prune_wall,
            "test_acc": float(np.mean(pred == y_te)),
            "train_loss": pruned.history_[-1, "train_loss"],
        }
    )
    history.append(
        {
            "prune_dur": prune_wall,
            "params_before": report.params_before,
            "params_after": report.params_after,
            "flops_before": report.flops_before,
            "flops_after": report.flops_after,
            "stop_reason": report.stop_reason,
        }
    )
    return points, history, fit_wall + prune_wall, eval_time, pred.tolist(), pruned


def run_fastai_baseline(params, data, setting):
    """fastai's ``fine_tune`` in plain torch (:mod:`benchmarks._lib.fastai`)."""
    return run_fastai(params, data, setting, backbone=baseline_backbone)


RUNNERS = {
    "sgdm": run_sgdm,
    "fastai": run_fastai_baseline,
    "linear_probe": run_linear_probe,
    "estimator": run_estimator,
    "default": run_estimator,
    "pruned": run_pruned,
}


def run_method(method, params, setting, holdout=False):
    """Run one method; return its record (peak memory of this process)."""
    import skfastretrain

    info_start = machine_info()
    info_start["package_file"] = skfastretrain.__file__
    data = load_data(setting, holdout=holdout)
    rss_before = current_rss_mb()
    peak_before = rss_mb()
    points, history, fit_wall, eval_time, pred, _ = RUNNERS[params["kind"]](
        params, data, setting
    )
    peak = rss_mb()
    return {
        "method": method,
        "params": params,
        "points": points,
        "history": history,
        "fit_wall": fit_wall,
        "eval_time": eval_time,
        "final_pred": pred,
        "y_test": data[3].tolist(),
        "peak_rss_mb": peak,
        "rss_before_fit_mb": rss_before,
        "peak_rss_before_fit_mb": peak_before,
        "fit_rss_increase_mb": peak - rss_before,
        "machine_start": info_start,
        "loadavg_end": list(os.getloadavg()),
    }
