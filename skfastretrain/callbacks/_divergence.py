"""Guarding the SGD epochs: stop a diverging fit and keep its best model."""

import math
import warnings

import torch
from skorch.callbacks import Callback

from .._distributed import is_distributed
from ..linalg._targets import is_regression
from ._checkpoint import module_copy
from ._history_keys import (
    DIVERGED,
    INIT,
    KEPT_EPOCH,
    TRAIN_LOSS,
    score_keys,
)

__all__ = ["DivergenceError", "DivergenceGuard", "DivergenceWarning"]


class DivergenceError(ValueError):
    """Training diverged: the loss, or the head's features, became NaN or inf.

    ``epoch`` and ``lr`` say where; FastRetrainClassifier puts the module's
    weights of the last complete epoch back before raising it and keeps them
    (on the CPU) in ``state_dict``.
    """

    def __init__(self, message, *, epoch, lr):
        super().__init__(message)
        self.epoch = epoch
        self.lr = lr
        self.state_dict = None


class DivergenceWarning(UserWarning):
    """Training blew up with a finite loss and was stopped.

    :class:`DivergenceGuard` warns with this category after putting back the
    best model it saw; filter it like any warning (``warnings.simplefilter``).
    """


def current_lr(net):
    """The optimizer's rate, which the probe or a scheduler may have changed."""
    return net.optimizer_.param_groups[0].get("lr", net.lr)


def lower_lr_hint(lr):
    """What to try after a fit diverged at rate ``lr``."""
    # A tenth, not the 0.001 that suits most pretrained fits: on ELPV's
    # solar cells 0.001 diverged too and 0.0003 did not (the Benchmarks
    # page, benchmarks.per_task).
    return (
        f"Lower the learning rate, for instance to {lr / 10:.2g}; pretrained "
        "backbones train at 0.0003 to 0.003 with SGD, and a backbone trained "
        "from scratch at up to about 0.05."
    )


class DivergenceGuard(Callback):
    """Stop a diverging fit and put back the best model it had.

    A NaN or inf training loss raises :class:`DivergenceError` at once. A
    finite blow-up stops training with a :class:`DivergenceWarning` that names
    the learning rate, after restoring the best state seen at an epoch
    boundary (the start of the fit included). Two signs count as a blow-up:

    - the training loss, smoothed over batches, exceeds ``max_loss_ratio``
      times the larger of the loss of the fit's first batch (computed before
      any step) and the loss of a uniform guess, ``log(n_classes)`` (for
      real-valued targets, of a constant guess at their mean: the first
      batch's target variance);
    - the features after an epoch have lost more than ``max_acc_drop`` of
      the starting head's accuracy margin over chance: the training accuracy
      of the epoch's ridge solution (``train_acc_ridge``, recorded by
      :class:`RidgeHeadSolver` on its calibration rows) against that of the
      head solved before the first epoch (``init_train_acc``). For
      real-valued targets the score is R² (``train_r2_ridge``), whose
      chance level is 0.

    States are scored by ``train_acc`` (``train_r2``; the score after each
    solve) where the history has it, else by the epoch's ``train_loss``. The
    finite checks are skipped in a data-parallel fit, where each rank sees
    only its own batches. Works in a plain skorch net.

    Parameters
    ----------
    max_loss_ratio : float, default=4.0
        How many times the reference loss the smoothed loss may reach.
    max_acc_drop : float, default=0.5
        Fraction of the starting accuracy's margin over chance that one
        epoch may lose.
    smoothing : float, default=0.1
        Weight of the newest batch in the exponential moving average of the
        loss.

    Attributes
    ----------
    diverged_ : str or None
        Why training was stopped, or None. The history's last row records it
        as ``diverged``, with ``kept_epoch``.
    best_epoch_ : int or None
        The epoch whose model was put back (0: the start of the fit).

    Examples
    --------
    >>> import warnings
    >>> import numpy as np, torch
    >>> from skorch import NeuralNetClassifier
    >>> from skfastretrain import DivergenceGuard, DivergenceWarning
    >>> X = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = NeuralNetClassifier(
    ...     torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(),
    ...                         torch.nn.Linear(64, 2)),
    ...     criterion=torch.nn.CrossEntropyLoss, optimizer__momentum=0.9,
    ...     max_epochs=5, lr=30.0, train_split=None, verbose=0,
    ...     callbacks=[DivergenceGuard()])
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     net = net.fit(X, y)
    >>> any(issubclass(w.category, DivergenceWarning) for w in caught)
    True
    >>> dict(net.callbacks_)["DivergenceGuard"].diverged_ is not None
    True
    """

    def __init__(self, *, max_loss_ratio=4.0, max_acc_drop=0.5, smoothing=0.1):
        self.max_loss_ratio = max_loss_ratio
        self.max_acc_drop = max_acc_drop
        self.smoothing = smoothing

    def initialize(self):
        self.diverged_ = None
        self.best_epoch_ = None
        self._reset()
        return self

    def _reset(self):
        self._reference = None
        self._ema = None
        self._n_classes = None
        self._regression = None
        self._guess_loss = None
        self._first = None
        self._best = None  # (score, epoch, state_dict)
        self._start = None  # (epoch, state_dict) until its score is known

    def on_train_begin(self, net, **kwargs):
        self.diverged_ = None
        self.best_epoch_ = None
        self._reset()
        self._first = len(net.history)

    def on_epoch_begin(self, net, **kwargs):
        if self._start is None and len(net.history) == self._first + 1:
            # Every callback's on_train_begin has run: this is the model the
            # fit starts from (with the initial ridge head, if any).
            self._start = (self._first, module_copy(net.module_))
        elif len(net.history) > self._first + 1:
            self._check_epoch(net, net.history[-2])

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs):
        if not training or loss is None:
            return
        if not torch.isfinite(loss):
            epoch, lr = len(net.history), current_lr(net)
            raise DivergenceError(
                f"Training diverged: the loss became {loss.item()} in epoch "
                f"{epoch} (lr={lr:.3g}). {lower_lr_hint(lr)}",
                epoch=epoch,
                lr=lr,
            )
        y_pred = kwargs.get("y_pred")
        if self._guess_loss is None and y_pred is not None and y_pred.ndim == 2:
            self._note_targets(y_pred, batch)
        if self.diverged_ is not None or is_distributed():
            return
        value = float(loss.detach())
        if self._reference is None:
            # Computed before the first step: the starting model's loss.
            self._reference = self._ema = value
            return
        self._ema += self.smoothing * (value - self._ema)
        guess = math.log(2) if self._guess_loss is None else self._guess_loss
        bound = self.max_loss_ratio * max(self._reference, guess)
        if self._ema > bound:
            self._stop(
                net,
                f"the training loss rose from {self._reference:.3g} (the first "
                f"batch) to {self._ema:.3g} (smoothed) in epoch {len(net.history)}",
            )

    def _note_targets(self, y_pred, batch):
        # The loss of a guess that knows nothing of the input: a uniform
        # softmax for labels, the targets' mean for real values.
        y = batch[1] if batch is not None else None
        self._regression = y is not None and is_regression(y)
        if self._regression:
            t = torch.as_tensor(y).double().reshape(len(y), -1)
            self._guess_loss = float(t.var(0, unbiased=False).mean())
        else:
            self._n_classes = y_pred.shape[1]
            self._guess_loss = math.log(self._n_classes or 2)

    def on_train_end(self, net, **kwargs):
        if self.diverged_ is None and len(net.history) > self._first:
            self._check_epoch(net, net.history[-1], last=True)
        # The copies are only needed during the fit.
        self._best = self._start = None

    def _check_epoch(self, net, row, last=False):
        """Score the model now in ``net`` (after ``row``'s epoch) and check it."""
        if self.diverged_ is not None or TRAIN_LOSS not in row:
            return
        keys = score_keys(self._regression)
        start_acc = net.history[self._first].get(INIT + keys.train)
        if self._start is not None:
            epoch, state = self._start
            self._start = None
            score = -math.inf if start_acc is None else start_acc
            self._best = (score, epoch, state)
        acc = row.get(keys.ridge)
        if (
            start_acc is not None
            and acc is not None
            and (self._n_classes or self._regression)
            and not is_distributed()
        ):
            chance = 0.0 if self._regression else 1.0 / self._n_classes
            floor = chance + (1 - self.max_acc_drop) * (start_acc - chance)
            if acc < floor:
                self._stop(
                    net,
                    f"the training {'R²' if self._regression else 'accuracy'} of a "
                    "ridge head on the features fell "
                    f"from {start_acc:.3f} (at the start) to {acc:.3f} after "
                    f"epoch {row['epoch']}",
                    raise_stop=not last,
                )
                return
        score = row.get(keys.train, -row[TRAIN_LOSS])
        if self._best is None or score > self._best[0]:
            self._best = (
                score,
                row["epoch"],
                None if last else module_copy(net.module_),
            )

    def _stop(self, net, reason, raise_stop=True):
        lr = current_lr(net)
        best = self._best if self._best is not None else (None, *self._start)
        _, epoch, state = best
        if state is not None:
            net.module_.load_state_dict(state)
        self.best_epoch_ = epoch
        self.diverged_ = reason
        net.history.record(DIVERGED, reason)
        net.history.record(KEPT_EPOCH, epoch)
        warnings.warn(
            f"Training diverged: {reason}. Stopped, and kept the model of "
            f"{'the start of the fit' if epoch == self._first else f'epoch {epoch}'} "
            f"(lr={lr:.3g}). {lower_lr_hint(lr)}",
            DivergenceWarning,
            stacklevel=2,
        )
        if raise_stop:
            # skorch ends the fit on KeyboardInterrupt and still runs the
            # callbacks' on_train_end.
            raise KeyboardInterrupt
