"""Clocks, memory and the machine: what the benchmarks measure with."""

import os
import resource
import time

import numpy as np
import torch
from skorch.callbacks import Callback


def median_time(fn, n=10, *, warmup=2):
    """Median seconds of ``n`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[n // 2]


def best_time(fn, repeats):
    """Best seconds of ``repeats`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def rss_mb():
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb():
    """Resident memory of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def machine_info():
    """What the timings depend on: threads, cores and the load on them."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
    }


class TestAccuracy(Callback):
    """Record test accuracy at the start of training and after every epoch.

    The time spent predicting is measured and excluded from the reported fit
    time: ``time`` is seconds since ``t0`` (set right before ``fit``) minus
    all evaluation so far. Runs after the estimator's own callbacks, so the
    first point follows the initial ridge solve and every later one follows
    that epoch's head solve. When the fit ends with an earlier model put
    back (by ``DivergenceGuard`` or early stopping), that model is measured
    once more as the last point, marked ``"kept"``.
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

    def on_train_end(self, net, **kwargs):
        # DivergenceGuard or early stopping may have put an earlier model
        # back after the last epoch's point (their on_train_end runs before
        # this one): the model the fit ends with is then its last point.
        last = self.last_pred_
        self._measure(net, len(net.history))
        if self.last_pred_ == last:
            self.points_.pop()
        else:
            self.points_[-1]["kept"] = True

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        fit_time, acc = self._measure(net, epoch, net.history[-1, "train_loss"])
        net.history.record("fit_time", fit_time)
        net.history.record("test_acc", acc)
