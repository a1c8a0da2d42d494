"""Scoring held-out rows after each epoch, and stopping when they stop improving."""

import math
import time
from typing import ClassVar

import numpy as np
import torch
from sklearn.utils._param_validation import StrOptions
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit

from .._data import split_weights
from .._params import NON_NEGATIVE, POSITIVE_INT, validate_constraints
from .._progress import progress
from ..linalg._targets import OutputScore, is_regression, row_losses
from ._checkpoint import module_copy
from ._history_keys import (
    DIVERGED,
    INIT,
    STOPPED_EARLY,
    VALID_ACC,
    VALID_DUR,
    VALID_LOSS,
    VALID_R2,
    score_keys,
)

__all__ = ["ValidationScoring", "held_out_rows", "validation_split"]


class _BestEpoch:
    """The best epoch so far and its weights, saved by TrainingCheckpoint.

    It has ``state_dict``/``load_state_dict``, so a checkpoint stores it
    with the callback and a resumed fit can still put the best weights back.
    """

    def __init__(self):
        self.score, self.epoch, self.bad_epochs, self.weights = None, None, 0, None

    def state_dict(self):
        return {
            "score": self.score,
            "epoch": self.epoch,
            "bad_epochs": self.bad_epochs,
            "weights": self.weights,
        }

    def load_state_dict(self, state):
        self.score, self.epoch = state["score"], state["epoch"]
        self.bad_epochs, self.weights = state["bad_epochs"], state["weights"]


class ValidationScoring(Callback):
    """Score the validation rows at each epoch's end; stop when they stall.

    skorch scores its validation split during the epoch, before the
    callbacks' ``on_epoch_end``; a :class:`RidgeHeadSolver` changes the head
    there, so that score would describe a model the epoch does not end with.
    This callback scores the net's ``dataset_valid`` (the net needs a
    ``train_split``, such as skorch's ``ValidSplit``) in eval mode after the
    callbacks before it, and records ``valid_loss`` (the mean log loss) and
    ``valid_acc`` in the history (and ``valid_loss_best`` or
    ``valid_acc_best``, marking the best epoch so far). Place it after the
    head solve. For real-valued targets (a regression net), the loss is the
    mean squared error and the score R², ``valid_r2``.

    With ``n_iter_no_change``, training stops once the monitored score has
    not improved by more than ``tol`` for that many epochs in a row (as
    :class:`~sklearn.neural_network.MLPClassifier`'s ``early_stopping``
    does), and at the end of training the weights of the best epoch are put
    back. The history keeps a row per epoch run; the last row records
    ``stopped_early`` when training stopped. A :class:`TrainingCheckpoint`
    saves the best epoch's weights too, so a resumed fit can restore them.

    With ``score_start``, the model the fit starts from (after every
    callback's ``on_train_begin``, such as a :class:`RidgeHeadSolver`'s
    first solve) is scored too, as epoch 0: its scores go into the first
    row as ``init_valid_loss`` and ``init_valid_acc``, the epochs must
    improve on it, and when none does, the fit ends with the model it
    started from.

    Parameters
    ----------
    n_iter_no_change : int or None, default=2
        Epochs without improvement before training stops; None scores and
        restores the best epoch but never stops early.
    tol : float, default=1e-4
        The improvement that counts: a validation loss below the best by
        more than ``tol``, or a score above it by more than ``tol``.
    scoring : {"loss", "accuracy", "r2"}, default="loss"
        What decides the best epoch: ``valid_loss`` (smoother on small
        validation sets), ``valid_acc`` (class labels) or ``valid_r2``
        (real-valued targets).
    restore_best : bool, default=True
        Put the best epoch's weights back at the end of training.
    score_start : bool, default=False
        Score the model before the first epoch as epoch 0, a candidate for
        the best. Off by default, as in scikit-learn's rule, because a plain
        net starts from a random head; turn it on when the start is a
        trained model, such as a head solved in closed form.

    Attributes
    ----------
    best_epoch_ : int or None
        The epoch whose weights the net ends with (the best one); 0 with
        ``score_start`` is the start of the fit.
    stopped_epoch_ : int or None
        The epoch after which training stopped early, or None.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skorch import NeuralNetClassifier
    >>> from skorch.dataset import ValidSplit
    >>> from skfastretrain.callbacks import ValidationScoring
    >>> X = np.random.default_rng(0).normal(size=(200, 4)).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = NeuralNetClassifier(
    ...     torch.nn.Linear(4, 2), max_epochs=5, verbose=0,
    ...     train_split=ValidSplit(0.2, stratified=True, random_state=0),
    ...     callbacks=[ValidationScoring(n_iter_no_change=None)]).fit(X, y)
    >>> scoring = dict(net.callbacks_)["ValidationScoring"]
    >>> scoring.best_epoch_ == int(np.argmin(net.history[:, "valid_loss"])) + 1
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_iter_no_change": [POSITIVE_INT, None],
        "tol": [NON_NEGATIVE],
        "scoring": [StrOptions({"loss", "accuracy", "r2"})],
        "restore_best": ["boolean"],
        "score_start": ["boolean"],
    }

    def __init__(
        self,
        n_iter_no_change=2,
        *,
        tol=1e-4,
        scoring="loss",
        restore_best=True,
        score_start=False,
    ):
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.scoring = scoring
        self.restore_best = restore_best
        self.score_start = score_start

    def initialize(self):
        validate_constraints(self)
        self.best_ = _BestEpoch()
        self.best_epoch_ = None
        self.stopped_epoch_ = None
        return self

    def on_train_begin(self, net, **kwargs):
        # A resumed fit gets its best epoch back from the checkpoint, which
        # loads after every on_train_begin.
        self.best_ = _BestEpoch()
        self.stopped_epoch_ = None

    def on_epoch_begin(self, net, dataset_valid=None, **kwargs):
        if self.score_start and len(net.history) == 1:
            # The first row of a fresh fit is open and every on_train_begin
            # has run: this is the model the fit starts from. (A resumed fit
            # gets its start's score back with the checkpoint.)
            self._record(net, dataset_valid, epoch=0, prefix=INIT)
        best = self.best_
        if (
            self.n_iter_no_change is not None
            and best.bad_epochs >= self.n_iter_no_change
        ):
            # Stopped here rather than at the end of the last epoch, so that
            # every callback (the checkpoint last) has finished that epoch.
            self.stopped_epoch_ = len(net.history) - 1
            if net.verbose:
                kept = "the start" if best.epoch == 0 else f"epoch {best.epoch}"
                print(
                    f"Stopping: {self._key()} has not improved by more "
                    f"than {self.tol:g} for {best.bad_epochs} epochs; keeping "
                    f"{kept}."
                )
            # skorch ends the fit on KeyboardInterrupt and still runs every
            # callback's on_train_end, where the best weights come back.
            raise KeyboardInterrupt

    def on_epoch_end(self, net, dataset_valid=None, **kwargs):
        epoch = len(net.history)
        self._record(net, dataset_valid, epoch=epoch)
        # skorch's convention: PrintLog highlights a value whose <key>_best
        # is True.
        net.history.record(f"{self._key()}_best", self.best_.epoch == epoch)

    def _record(self, net, dataset_valid, *, epoch, prefix=""):
        """Score the model now in ``net`` as ``epoch``'s; keep it if best."""
        if dataset_valid is None:
            raise ValueError(
                "ValidationScoring needs validation rows: give the net a "
                "train_split, such as skorch.dataset.ValidSplit(0.1, "
                "stratified=True)."
            )
        start = time.perf_counter()
        loss, acc, regression = self._score(net, dataset_valid)
        net.history.record(prefix + VALID_LOSS, loss)
        net.history.record(prefix + score_keys(regression).valid, acc)
        net.history.record(prefix + VALID_DUR, time.perf_counter() - start)
        if epoch == 0:
            # The start sets the bar; it is not an epoch without improvement.
            self.best_.score = -loss if self.scoring == "loss" else acc
            self.best_.epoch = 0
            self.best_.weights = module_copy(net.module_) if self.restore_best else None
            return
        score = -loss if self.scoring == "loss" else acc
        best = self.best_
        improved = best.score is None or score > best.score + self.tol
        if best.score is None or score > best.score:
            # The best weights follow every gain; only a gain above tol
            # resets the count, as in scikit-learn.
            best.score, best.epoch = score, epoch
            best.weights = module_copy(net.module_) if self.restore_best else None
        best.bad_epochs = 0 if improved else best.bad_epochs + 1

    def on_train_end(self, net, **kwargs):
        if self.stopped_epoch_ is not None:
            # The epoch that was about to start left an empty row.
            if len(net.history) > self.stopped_epoch_:
                del net.history[self.stopped_epoch_ :]
            net.history.record(STOPPED_EARLY, True)
        best = self.best_
        diverged = bool(len(net.history)) and DIVERGED in net.history[-1]
        # DivergenceGuard has already put back the model it trusts.
        if self.restore_best and best.weights is not None and not diverged:
            net.module_.load_state_dict(best.weights)
        self.best_epoch_ = best.epoch
        # The copy would double the size of a pickled net.
        best.weights = None

    def _key(self):
        if self.scoring == "loss":
            return VALID_LOSS
        return VALID_R2 if self.scoring == "r2" else VALID_ACC

    def _score(self, net, dataset):
        total_loss, n = 0.0, 0.0
        score = OutputScore()
        module = net.module_
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                batches = net.get_iterator(dataset, training=False)
                for Xi, yi in progress(batches, net, desc="validation"):
                    logits = net.infer(Xi)
                    yi = torch.as_tensor(yi, device=logits.device)
                    # Weighted rows weigh their loss and accuracy.
                    wi = split_weights(Xi)[1]
                    wi = (
                        torch.ones(len(yi), device=logits.device)
                        if wi is None
                        else torch.as_tensor(wi, device=logits.device).float()
                    )
                    losses = row_losses(logits.float(), yi)
                    total_loss += float((wi * losses).sum())
                    score.add(logits, yi, wi)
                    n += float(wi.sum())
        finally:
            module.train(was_training)
        wants_regression = {"accuracy": False, "r2": True}.get(self.scoring)
        if wants_regression not in (None, score.regression):
            raise ValueError(
                f"ValidationScoring(scoring={self.scoring!r}) does not score "
                f"{'real-valued targets' if score.regression else 'class labels'}"
                f"; use 'loss' or {'r2' if score.regression else 'accuracy'!r}."
            )
        if not n:
            return math.nan, math.nan, score.regression
        return total_loss / n, score.value, score.regression


def validation_split(fraction, y, seed):
    """skorch's stratified ``ValidSplit`` of ``fraction`` of the rows, checked.

    Every class needs a row on both sides, which StratifiedShuffleSplit
    would otherwise refuse with a message that does not name the parameter.
    ``y`` holds the labels encoded as ``0 .. k-1``; real-valued targets (a
    regression) are split at random, as scikit-learn's regressors split
    them, with a row needed on each side.
    """
    n_valid = held_out_rows(fraction, len(y))
    if is_regression(y):
        if not 0 < n_valid < len(y):
            raise ValueError(
                f"EarlyStopping(validation_fraction={fraction}) holds out "
                f"{n_valid} of {len(y)} training rows; both sides need a row. "
                "Raise validation_fraction, add rows, or set early_stopping=False."
            )
        return ValidSplit(fraction, stratified=False, random_state=seed)
    n_classes = int(y.max()) + 1
    counts = np.bincount(y, minlength=n_classes)
    if n_valid < n_classes or len(y) - n_valid < n_classes or counts.min() < 2:
        raise ValueError(
            f"EarlyStopping(validation_fraction={fraction}) holds out {n_valid} "
            f"of {len(y)} training rows, but each of the {n_classes} classes "
            "needs a row on both sides (the smallest class has "
            f"{counts.min()}). Raise validation_fraction, add rows, or set "
            "early_stopping=False."
        )
    return ValidSplit(fraction, stratified=True, random_state=seed)


def held_out_rows(fraction, n_rows):
    """How many of ``n_rows`` the split of ``fraction`` holds out: scikit-learn's
    StratifiedShuffleSplit (behind skorch's ValidSplit) rounds up."""
    return math.ceil(fraction * n_rows)
