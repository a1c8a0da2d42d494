"""Crash-safe checkpoints of a skorch training run, and resuming from them."""

import copy
import json
import os
import pickle
import tempfile
import zipfile
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist
from skorch.callbacks import Callback

from .._distributed import is_distributed
from .._params import validate_constraints

__all__ = [
    "TrainingCheckpoint",
    "module_copy",
    "net_state_without_caches",
    "read_checkpoint",
    "without_caches",
    "write_atomic",
]

_FORMAT = "skfastretrain-checkpoint"
_VERSION = 1
# Attributes of callbacks that change from epoch to epoch and that a resumed
# run needs (beyond their random generators, which are found by type).
_CALLBACK_ATTRS = ("scale_", "ridge_lambda_", "batch_idx_")


def write_atomic(obj, path):
    """``torch.save`` ``obj`` to ``path`` so that ``path`` is never partial.

    The data go to a temporary file in the same directory, are flushed and
    fsynced, and the file is renamed over ``path`` (atomic on POSIX and
    Windows); the directory is then fsynced so the rename survives a power
    loss. A crash at any point leaves either the old file or the new one.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-write must not leave junk.
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_checkpoint(path):
    """Load and check a checkpoint written by :class:`TrainingCheckpoint`.

    Loads with ``torch.load(weights_only=True)``, which runs no code. Raises
    ValueError for a file that is not a complete checkpoint.
    """
    path = os.fspath(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError):
        raise
    except (
        RuntimeError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        UnicodeDecodeError,
    ) as exc:
        raise ValueError(
            f"Checkpoint {path!r} is corrupt or not a checkpoint ({exc}). Delete "
            "it to start over."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"{path!r} is not an skfastretrain checkpoint.")
    if state.get("version") != _VERSION:
        raise ValueError(
            f"Checkpoint {path!r} has format version {state.get('version')}; "
            f"this version of skfastretrain reads version {_VERSION}."
        )
    return state


def _encode_rng(rng):
    if isinstance(rng, np.random.RandomState):
        _, keys, pos, has_gauss, gauss = rng.get_state()
        return {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        }
    if isinstance(rng, torch.Generator):
        return rng.get_state()
    if isinstance(rng, np.random.Generator):
        return {"bit_generator": rng.bit_generator.state}
    return None


def _decode_rng(rng, state):
    if isinstance(rng, np.random.RandomState):
        keys = state["keys"].numpy().astype(np.uint32)
        rng.set_state(
            ("MT19937", keys, state["pos"], state["has_gauss"], state["gauss"])
        )
    elif isinstance(rng, torch.Generator):
        rng.set_state(state)
    else:
        rng.bit_generator.state = state["bit_generator"]


def _callback_state(cb):
    out = {}
    for name, value in vars(cb).items():
        encoded = _encode_rng(value)
        if encoded is not None:
            out[name] = encoded
        elif _has_state_dict(value):
            # Learning-rate schedulers (skorch's LRScheduler.lr_scheduler_).
            out[name] = value.state_dict()
        elif name in _CALLBACK_ATTRS and (
            value is None or isinstance(value, (int, float, str))
        ):
            out[name] = value
    stats = getattr(cb, "stats_", None)
    if stats is not None and hasattr(stats, "tensors"):
        # The head statistics of the last solve: not needed to resume (every
        # solve gathers its own), kept so a checkpoint describes the head.
        out["stats_"] = {
            "tensors": [t.detach().cpu() for t in stats.tensors()],
            "n_samples": stats.n_samples,
        }
    return out


def _has_state_dict(value):
    # Modules and optimizers of callbacks are fixed copies or net's own.
    return (
        not isinstance(value, type)
        and hasattr(value, "state_dict")
        and hasattr(value, "load_state_dict")
        and not isinstance(value, (torch.nn.Module, torch.optim.Optimizer))
    )


def _restore_callback(cb, state):
    for name, value in state.items():
        if name == "stats_":
            continue
        current = getattr(cb, name, None)
        if _encode_rng(current) is not None:
            _decode_rng(current, value)
        elif _has_state_dict(current):
            current.load_state_dict(value)
        else:
            setattr(cb, name, value)


def _history_json(history):
    def default(obj):
        return obj.item() if hasattr(obj, "item") else repr(obj)

    return json.dumps(history.to_list(), default=default)


#: Callback attributes that only more training (or a checkpoint) uses.
_TRAINING_CACHES = ("stats_",)


def without_caches(callback):
    """``callback``, or a shallow copy of it without its training caches.

    For pickles of a fitted model: the Gram statistics of the last solve
    (``stats_``) are larger than many models and serve only a checkpoint
    and ``partial_fit``; a callback with ``keep_statistics=True`` keeps them.
    """
    if getattr(callback, "keep_statistics", False) or all(
        getattr(callback, n, None) is None for n in _TRAINING_CACHES
    ):
        return callback
    slim = copy.copy(callback)
    for name in _TRAINING_CACHES:
        if getattr(slim, name, None) is not None:
            setattr(slim, name, None)
    return slim


def net_state_without_caches(state):
    """A skorch net's pickled state with its callbacks' training caches
    (:func:`without_caches`) left out."""
    # The callbacks parameter holds the same objects as callbacks_.
    slim = {}

    def swap(cb):
        return slim.setdefault(id(cb), without_caches(cb))

    state["callbacks_"] = [(name, swap(cb)) for name, cb in state["callbacks_"]]
    if state.get("callbacks") is not None:
        state["callbacks"] = [
            (item[0], swap(item[1])) if isinstance(item, tuple) else swap(item)
            for item in state["callbacks"]
        ]
    return state


def module_copy(module):
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class TrainingCheckpoint(Callback):
    """Save everything a skorch run needs to resume after each epoch.

    After every epoch (place it last among the callbacks, so that the other
    callbacks have finished the epoch) it writes, atomically (a temporary file
    in the same directory, fsynced, then renamed), the module's state
    (BatchNorm running statistics included), the optimizer's state (momentum
    buffers), the history, the random generators of every callback (such as
    :class:`LayerFreezer`'s) and of the training data loader, torch's global
    generator, the state of learning-rate schedulers (skorch's
    ``LRScheduler``), and the head statistics of :class:`RidgeHeadSolver`. A crash,
    even ``kill -9`` during a write, leaves the last complete checkpoint.

    Files hold only tensors and plain containers and are loaded with
    ``torch.load(weights_only=True)``, which runs no code. With
    ``resume=True`` and an existing file, the state is restored at the start
    of training (after the other callbacks' ``on_train_begin``) and training
    stops when ``max_epochs`` epochs are done in all; on the CPU the result
    is the one an uninterrupted run would give.

    Parameters
    ----------
    path : str, os.PathLike or None, default=None
        Checkpoint file. None keeps the state of the last complete epoch in
        memory only (see :meth:`restore_module`).
    resume : bool, default=False
        Restore from ``path`` at the start of training when it exists.
    fingerprint : str or None, default=None
        Any text identifying the run (parameters, data); it is stored, and a
        resumed file must carry the same one.

    Attributes
    ----------
    epochs_ : int
        Epochs completed (and saved) so far.
    resumed_ : bool
        Whether this run started from a checkpoint.

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch
    >>> from skorch import NeuralNetClassifier
    >>> from skfastretrain import TrainingCheckpoint
    >>> path = os.path.join(tempfile.mkdtemp(), "run.pt")
    >>> X = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
    >>> y = (X[:, 0] > 0).astype("int64")
    >>> def make_net(max_epochs, resume):
    ...     torch.manual_seed(0)
    ...     return NeuralNetClassifier(
    ...         torch.nn.Sequential(torch.nn.Linear(4, 2)),
    ...         criterion=torch.nn.CrossEntropyLoss, max_epochs=max_epochs,
    ...         train_split=None, verbose=0,
    ...         callbacks=[TrainingCheckpoint(path, resume=resume)])
    >>> net = make_net(2, resume=False).fit(X, y)  # stopped after 2 epochs
    >>> resumed = make_net(5, resume=True).fit(X, y)
    >>> len(resumed.history), dict(resumed.callbacks_)["TrainingCheckpoint"].resumed_
    (5, True)
    """

    _parameter_constraints: ClassVar[dict] = {
        "path": [str, os.PathLike, None],
        "resume": ["boolean"],
        "fingerprint": [str, None],
    }

    def __init__(self, path=None, *, resume=False, fingerprint=None):
        self.path = path
        self.resume = resume
        self.fingerprint = fingerprint

    def initialize(self):
        validate_constraints(self)
        if self.path is not None:
            # Here, when the net starts, rather than at the first write.
            directory = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(directory) or os.path.isdir(self.path):
                raise ValueError(
                    "TrainingCheckpoint's path must be a file in an existing "
                    f"directory, got {self.path!r}."
                )
        self.epochs_ = 0
        self.resumed_ = False
        self._snapshot = None
        return self

    def state(self, net):
        """The resumable state of ``net`` after its last epoch, as a dict."""
        loader = getattr(net, "iterator_train__generator", None)
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "epoch": len(net.history),
            "fingerprint": self.fingerprint,
            "module": net.module_.state_dict(),
            "optimizer": net.optimizer_.state_dict(),
            "history": _history_json(net.history),
            "callbacks": {name: _callback_state(cb) for name, cb in net.callbacks_},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": (
                torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
            ),
            "loader_rng": None if loader is None else loader.get_state(),
        }

    def load_state(self, net, state):
        """Put a state from :meth:`state` (or a file) back into ``net``."""
        net.module_.load_state_dict(state["module"])
        net.optimizer_.load_state_dict(state["optimizer"])
        net.history[:] = json.loads(state["history"])
        callbacks = dict(net.callbacks_)
        for name, cb_state in state["callbacks"].items():
            if name in callbacks:
                _restore_callback(callbacks[name], cb_state)
        torch.set_rng_state(state["torch_rng"])
        cuda = state.get("cuda_rng")
        if cuda is not None and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        loader = getattr(net, "iterator_train__generator", None)
        if loader is not None and state["loader_rng"] is not None:
            loader.set_state(state["loader_rng"])
        self.epochs_ = state["epoch"]
        self._snapshot = module_copy(net.module_)

    def read(self):
        """The checkpoint in ``path``, checked against ``fingerprint``."""
        state = read_checkpoint(self.path)
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"Checkpoint {os.fspath(self.path)!r} was written by a run with "
                "other parameters or data; it cannot be resumed here."
            )
        return state

    def on_train_begin(self, net, **kwargs):
        self.epochs_, self.resumed_ = len(net.history), False
        self._snapshot = module_copy(net.module_)
        if self.resume and self.path is not None and os.path.exists(self.path):
            self.load_state(net, self.read())
            self.resumed_ = True

    def on_epoch_begin(self, net, **kwargs):
        # A resumed plain skorch run stops at max_epochs in all, the way
        # skorch's EarlyStopping stops a run.
        if self.resumed_ and len(net.history) > net.max_epochs:
            del net.history[-1]
            raise KeyboardInterrupt

    def on_epoch_end(self, net, **kwargs):
        # Under DDP every rank holds the same state: rank 0 alone writes, and
        # the others wait for it, so that a resume on any rank reads it.
        if self.path is not None and not (is_distributed() and dist.get_rank()):
            write_atomic(self.state(net), self.path)
        if self.path is not None and is_distributed():
            dist.barrier()
        self._snapshot = module_copy(net.module_)
        self.epochs_ = len(net.history)

    def release(self):
        """Drop the in-memory copy of the weights (at the end of a fit)."""
        self._snapshot = None

    def restore_module(self, net):
        """Load the module's weights from the end of the last complete epoch
        (or from the start of training when none completed)."""
        if self._snapshot is not None:
            net.module_.load_state_dict(self._snapshot)
