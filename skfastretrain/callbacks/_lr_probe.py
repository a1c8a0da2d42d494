"""Choosing the SGD learning rate: a short probe of candidate rates."""

import math
from numbers import Real
from typing import ClassVar

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch.callbacks import Callback, LRScheduler
from torch.utils.data import Subset

from .._distributed import is_distributed
from .._params import POSITIVE, POSITIVE_INT, Number, validate_constraints
from .._progress import progress
from ._checkpoint import module_copy
from ._history_keys import PROBE_LR

__all__ = ["LR_CANDIDATES", "LRProbe"]

#: Learning rates :class:`LRProbe` tries by default, half a decade apart.
LR_CANDIDATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def load_changed(module, state):
    """Copy into ``module`` the tensors of ``state`` (a module_copy) that differ.

    A tensor left alone keeps its version counter, so a store of a frozen
    prefix's output (:class:`PrefixCache`) stays valid across the restore.
    """
    with torch.no_grad():
        for key, value in module.state_dict(keep_vars=True).items():
            saved = state[key]
            if value.shape != saved.shape or not torch.equal(
                value, saved.to(value.device)
            ):
                value.copy_(saved)


class LRProbe(Callback):
    """Pick the SGD learning rate by a few steps at each candidate rate.

    Right before the first epoch (after every callback's ``on_train_begin``,
    so from the ridge-started head, and with the first epoch's layers frozen
    when it runs after :class:`LayerFreezer`), the model takes ``n_steps``
    SGD steps at some rates of ``candidates`` on the same batches of
    training rows, starting each time from the same weights, an empty
    momentum and the same dropout masks. A rate's probe loss is the
    mean training loss over the last half of its steps (each batch's loss is
    computed before the step on it); the starting loss is that of the
    untouched model on the same batches. The largest rate whose probe loss
    stays within ``max_loss_ratio`` times the starting loss is kept: the
    fastest rate that does not throw the model away from where it starts.
    The search starts at the candidate nearest ``start`` and climbs until a
    rate is beyond the bound, or, when ``start`` already is, descends until
    one is within it; when none is, the rate with the lowest probe loss is
    kept.
    Afterwards the weights, BatchNorm statistics and optimizer are put back.

    Why a probe: a pretrained network whose head was just solved keeps its
    features at 1e-3 and loses them at 1e-2, while a network trained from
    scratch, whose small features give a large ridge head, blows up at 1e-3.
    One fixed rate does not suit both (the Benchmarks page, "Defaults");
    the probe costs at most ``len(candidates) * n_steps`` steps.

    The chosen rate is written into the optimizer's parameter groups (and
    the base rates of skorch :class:`~skorch.callbacks.LRScheduler`
    callbacks), recorded as ``probe_lr`` in the history's first row, and
    kept in ``lr_``. In a data-parallel fit every rank probes the same rows
    and the losses are averaged over the ranks, so all ranks choose alike.
    A fit that continues from saved epochs (``len(history) > 1`` at its
    first epoch) does not probe again.

    Parameters
    ----------
    candidates : sequence of float, default=LR_CANDIDATES
        Learning rates to try, each > 0.
    start : float, default=1e-3
        Where the search starts: the rate our benchmarks found best for
        pretrained backbones.
    n_steps : int, default=8
        SGD steps per candidate.
    max_loss_ratio : float, default=2.0
        How far above the starting loss a rate's probe loss may be.
    random_state : int, RandomState instance or None, default=None
        Chooses the probe's training rows.

    Attributes
    ----------
    lr_ : float or None
        The chosen learning rate (None until the probe ran).
    losses_ : dict of float to float
        The probe loss of every candidate tried.
    start_loss_ : float
        The starting loss the probe losses are compared with.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skorch import NeuralNetClassifier
    >>> from skfastretrain import LRProbe
    >>> X = np.random.default_rng(0).normal(size=(512, 8)).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> net = NeuralNetClassifier(
    ...     torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
    ...                         torch.nn.Linear(16, 2)),
    ...     criterion=torch.nn.CrossEntropyLoss, optimizer__momentum=0.9,
    ...     batch_size=32, max_epochs=1, train_split=None, verbose=0,
    ...     callbacks=[LRProbe(candidates=[1e-3, 1e-1, 1e3], random_state=0)])
    >>> net = net.fit(X, y)
    >>> probe = dict(net.callbacks_)["LRProbe"]
    >>> probe.lr_, net.optimizer_.param_groups[0]["lr"]
    (0.1, 0.1)
    """

    _parameter_constraints: ClassVar[dict] = {
        "candidates": ["array-like"],
        "start": [POSITIVE],
        "n_steps": [POSITIVE_INT],
        "max_loss_ratio": [Number(Real, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        candidates=LR_CANDIDATES,
        *,
        start=1e-3,
        n_steps=8,
        max_loss_ratio=2.0,
        random_state=None,
    ):
        self.start = start
        self.candidates = candidates
        self.n_steps = n_steps
        self.max_loss_ratio = max_loss_ratio
        self.random_state = random_state

    def initialize(self):
        self.lr_ = None
        self.losses_ = {}
        return self

    def on_train_begin(self, net, **kwargs):
        rates = np.asarray(self.candidates, dtype=float)
        if rates.ndim != 1 or not len(rates) or not np.all(rates > 0):
            raise ValueError(
                f"candidates must be a non-empty sequence of rates > 0, got "
                f"{self.candidates!r}."
            )
        validate_constraints(self)

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        if len(net.history) != 1 or dataset_train is None:
            return
        module_state = module_copy(net.module_)
        optimizer_state = net.optimizer_.state_dict()
        modes = [m.training for m in net.module_.modules()]
        losses = {}
        # Every candidate, and the starting loss, see the same dropout masks
        # (common random numbers), so that their losses differ by the rate
        # alone; the fit's own random stream is left as it was (a
        # DataLoader draws its seed from it too).
        seed = int(check_random_state(self.random_state).randint(2**31))
        try:
            with torch.random.fork_rng(devices=_devices(net)):
                batches = self._batches(net, dataset_train)
                torch.manual_seed(seed)
                self.start_loss_ = _rank_mean(self._start_loss(net, batches))
                losses = self._search(net, batches, module_state, seed)
        finally:
            load_changed(net.module_, module_state)
            net.optimizer_.load_state_dict(optimizer_state)
            for module, mode in zip(net.module_.modules(), modes, strict=True):
                module.training = mode
            for param in net.module_.parameters():
                param.grad = None
        self.losses_ = losses
        bound = self.max_loss_ratio * self.start_loss_
        safe = [lr for lr, loss in self.losses_.items() if loss <= bound]
        # The largest safe rate; when none is, the least harmful one.
        self.lr_ = max(safe) if safe else min(self.losses_, key=self.losses_.get)
        self._apply(net, self.lr_)
        net.history.record(PROBE_LR, self.lr_)

    def _search(self, net, batches, module_state, seed):
        """Probe losses, from ``start`` up to the first unsafe rate, or down
        to the first safe one when ``start`` is unsafe."""
        rates = sorted({float(lr) for lr in self.candidates})
        first = int(np.argmin(np.abs(np.log(rates) - math.log(self.start))))
        bound = self.max_loss_ratio * self.start_loss_
        losses = {}

        def safe(lr):
            torch.manual_seed(seed)
            losses[lr] = _rank_mean(self._try(net, lr, batches, module_state))
            return losses[lr] <= bound

        if safe(rates[first]):
            for lr in rates[first + 1 :]:
                if not safe(lr):
                    break
        else:
            for lr in reversed(rates[:first]):
                if safe(lr):
                    break
        return losses

    def _batches(self, net, dataset):
        rng = check_random_state(self.random_state)
        n_rows = min(len(dataset), self.n_steps * net.batch_size)
        rows = np.sort(rng.choice(len(dataset), size=n_rows, replace=False))
        # The validation iterator: the same batches for every candidate, in
        # order, without the training set's augmentation.
        return list(net.get_iterator(Subset(dataset, rows.tolist()), training=False))

    def _start_loss(self, net, batches):
        # The loss before any step, in training mode as the steps see it.
        net.module_.train()
        losses = []
        with torch.no_grad():
            # The batches of _try's steps, in their order (cycled when the
            # training set holds fewer than n_steps batches).
            for step in range(self.n_steps):
                Xi, yi = batches[step % len(batches)]
                y_pred = net.infer(Xi)
                losses.append(float(net.get_loss(y_pred, yi, X=Xi, training=True)))
        return float(np.mean(losses[len(losses) // 2 :]))

    def _try(self, net, lr, batches, module_state):
        load_changed(net.module_, module_state)
        net.optimizer_.state.clear()
        for group in net.optimizer_.param_groups:
            group["lr"] = lr
        net.module_.train()
        losses = []
        steps = progress(range(self.n_steps), net, desc=f"lr probe {lr:g}")
        for step in steps:
            # The loss of a batch is computed before the step on it: each
            # step's loss is measured on rows not yet trained on.
            batch = batches[step % len(batches)]
            loss = float(net.train_step(batch)["loss"].detach())
            if not math.isfinite(loss):
                return math.inf
            losses.append(loss)
        return float(np.mean(losses[len(losses) // 2 :]))

    def on_train_end(self, net, **kwargs):
        if self.lr_ is None and len(net.history):
            # A resumed fit: the probe ran in the run it resumes, whose rate
            # the restored history holds (and the restored optimizer uses).
            self.lr_ = net.history[0].get(PROBE_LR)

    def _apply(self, net, lr):
        for group in net.optimizer_.param_groups:
            group["lr"] = lr
            if "initial_lr" in group:
                group["initial_lr"] = lr
        for _, cb in net.callbacks_:
            scheduler = getattr(cb, "lr_scheduler_", None)
            if isinstance(cb, LRScheduler) and hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [lr] * len(scheduler.base_lrs)


def _rank_mean(value):
    """``value`` averaged over the ranks of a data-parallel fit.

    Every rank then takes the same decisions from it (inf stays inf).
    """
    if not is_distributed():
        return value
    total = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(total)
    return float(total.item()) / torch.distributed.get_world_size()


def _devices(net):
    device = torch.device(net.device)
    return [device] if device.type == "cuda" else []
