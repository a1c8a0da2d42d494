"""A store of the frozen prefix's output, so that only the rest of the backbone runs."""

import hashlib
import warnings
from contextlib import ExitStack
from functools import partial

import torch
import torch.fx
from skorch.callbacks import Callback
from torch import nn

from .._batchnorm import is_held_in_eval
from .._data import split_weights
from ..backbones._fold import inference_copy
from ..backbones._stages import CONTAINERS, pool_stage
from ._history_keys import PREFIX_STORE_ROWS

__all__ = ["PrefixCache"]


class _NothingFrozen(ValueError):
    pass


class _LeafTracer(torch.fx.Tracer):
    # Every module but a plain container runs as itself, so that what it does
    # in train or eval mode (dropout, BatchNorm, stochastic depth) is decided
    # when it runs, not frozen into the graph when it is traced.
    def is_leaf_module(self, m, module_qualified_name):
        return not isinstance(m, CONTAINERS)


def _is_fixed(module):
    # A fixed function of its input for as long as nothing is unfrozen.
    if any(p.requires_grad for p in module.parameters()):
        return False
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not is_held_in_eval(m):
            return False
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return False
    return True


def _copy_nodes(graph, inputs, keep, outputs=None):
    new, env = torch.fx.Graph(), {}
    for node in inputs:
        env[node] = new.placeholder(node.name)
    for node in graph.nodes:
        if node in env or node not in keep:
            continue
        if node.op == "output" and outputs is None:
            new.node_copy(node, lambda a: env[a])
        elif node.op != "output":
            env[node] = new.node_copy(node, lambda a: env[a])
    if outputs is not None:
        new.output(tuple(env[n] for n in outputs))
    return new


class _Split:
    """The backbone as a prefix graph (fixed nodes) and a suffix graph.

    The prefix returns the values the suffix reads, then the outputs of the
    stages (of ``stages``) that run inside it.
    """

    def __init__(self, backbone, stages=()):
        graph = _LeafTracer().trace(backbone)
        modules = dict(backbone.named_modules())
        fixed, tensors = set(), []
        for node in graph.nodes:
            inputs_fixed = all(n in fixed for n in node.all_input_nodes)
            if node.op == "placeholder":
                fixed.add(node)
            elif node.op == "get_attr":
                value = _attr(backbone, node.target)
                if not (isinstance(value, nn.Parameter) and value.requires_grad):
                    fixed.add(node)
                    tensors.append(value)
            elif node.op == "call_module":
                module = modules[node.target]
                if inputs_fixed and _is_fixed(module):
                    fixed.add(node)
                    tensors += [*module.parameters(), *module.buffers()]
            elif node.op in ("call_function", "call_method") and inputs_fixed:
                fixed.add(node)
        # The values of the prefix that the rest of the network reads.
        frontier = [
            n
            for n in graph.nodes
            if n in fixed
            and n.op != "get_attr"
            and any(user not in fixed for user in n.users)
        ]
        if all(n.op == "placeholder" for n in frontier):
            raise _NothingFrozen("no frozen layer runs before the first trained one")
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ValueError("the backbone's forward takes more than one input")
        # A stage's last call wins, as in the module's own hooks.
        calls = {n.target: n for n in graph.nodes if n.op == "call_module"}
        for name in stages:
            inside = [t for t in calls if name.startswith(f"{t}.")]
            if name not in calls and any(calls[t] in fixed for t in inside):
                raise ValueError(
                    f"the stage {name!r} runs inside the frozen {inside[0]!r}, "
                    "whose output alone can be stored"
                )
        stored = [
            (name, calls[name])
            for name in stages
            if name in calls and calls[name] in fixed
        ]
        self.n_frontier = len(frontier)
        self.stages = [name for name, _ in stored]
        self.prefix = torch.fx.GraphModule(
            backbone,
            _copy_nodes(
                graph, placeholders, fixed, [*frontier, *(n for _, n in stored)]
            ),
        )
        rest = {n for n in graph.nodes if n not in fixed or n.op == "get_attr"}
        self.suffix = torch.fx.GraphModule(backbone, _copy_nodes(graph, frontier, rest))
        self.tensors = tensors
        self.versions = self._versions()

    def _versions(self):
        return [t._version for t in self.tensors]

    def valid(self):
        """False once a tensor of the prefix is trainable or changed in place."""
        return (
            not any(t.requires_grad for t in self.tensors)
            and self._versions() == self.versions
        )


def _attr(module, target):
    for name in target.split("."):
        module = getattr(module, name)
    return module


class PrefixCache(Callback):
    """Store the frozen prefix's output for each input and run only the rest.

    With :class:`LayerFreezer`'s ``mode="prefix"`` the first layers of the
    backbone are a fixed function during the fit (frozen weights, BatchNorm
    held in eval mode), so their output for a training image never changes.
    Before each epoch this callback traces the backbone of a
    :class:`FastRetrainModule` with ``torch.fx``
    (modules other than containers are kept whole), splits it where the
    frozen prefix ends, and checks on a batch, in train and eval mode, that
    the two parts give the full network's output and that the prefix does
    not depend on the batch or on chance. Forward passes then look up each
    input row (by a hash of its bytes) and run the prefix only for rows not
    stored yet: the SGD epochs and the head solve's feature pass run only
    the rest of the network. The store is dropped when any tensor of the
    prefix changes (an unfrozen layer, loaded weights) and at the end of
    training. Where the backbone cannot be split, a warning says why and
    the fit runs without the store. The history records
    ``prefix_cache_rows``, the rows stored when each epoch begins.

    The store is set up in ``on_train_begin`` too (after
    :class:`LayerFreezer` froze the first epoch's prefix), so that a head
    solve's first pass fills it and the first epoch already runs only the
    rest. Outputs are stored in ``dtype``. With ``fold=True`` the prefix
    fills the store as inference: a copy with each BatchNorm folded into the
    convolution before it, in channels-last memory format, checked against
    the prefix on a batch.

    Parameters
    ----------
    max_bytes : int, default=2**31
        Rows are stored until their outputs take this many bytes; later ones
        run the prefix every time.
    dtype : {"float32", "float16"}, default="float32"
        How float32 outputs are stored; they are given back as float32.
        ``"float16"`` halves the store (a row with a value beyond float16's
        range is stored in float32); the stored features are rounded to
        float16's precision (the Benchmarks page measures the effect).
    fold : bool, default=False
        Fill the store with the folded inference copy of the prefix, which
        runs the prefix faster but rounds otherwise than the prefix; in
        whole fits it gave no measurable time gain and lower held-out
        accuracy (the Benchmarks page), so it is off by default.

    Attributes
    ----------
    n_stored_ : int
        Rows stored.
    status_ : str
        ``"on"`` or why the store is off.

    Examples
    --------
    >>> import numpy as np
    >>> from skorch import NeuralNetClassifier
    >>> from torch import nn
    >>> from skfastretrain import FastRetrainModule, PrefixCache, LayerFreezer
    >>> backbone = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
    >>> module = FastRetrainModule(nn.Identity(), backbone, nn.Linear(8, 2))
    >>> net = NeuralNetClassifier(
    ...     module, criterion=nn.CrossEntropyLoss, max_epochs=2,
    ...     train_split=None, verbose=0,
    ...     callbacks=[LayerFreezer(0.5, mode="prefix", head="head"),
    ...                PrefixCache()])
    >>> X = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    >>> net = net.fit(X, (X[:, 0] > 0).astype("int64"))
    >>> net.history[:, "prefix_cache_rows"]
    [0, 20]
    """

    def __init__(self, max_bytes=2**31, dtype="float32", fold=False):
        self.max_bytes = max_bytes
        self.dtype = dtype
        self.fold = fold

    def initialize(self):
        if isinstance(self.max_bytes, bool) or not (
            isinstance(self.max_bytes, int) and self.max_bytes >= 0
        ):
            raise ValueError(f"max_bytes must be an int >= 0, got {self.max_bytes!r}.")
        if self.dtype not in _STORAGE:
            raise ValueError(
                f"dtype must be one of {sorted(_STORAGE)}, got {self.dtype!r}."
            )
        self._split = None
        self._store = {}
        self._bytes = 0
        self._routing = None
        self.n_stored_ = 0
        self.status_ = "off"
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        if not all(hasattr(net.module_, a) for a in ("preprocess", "backbone")):
            raise TypeError(
                "PrefixCache needs a FastRetrainModule as the net's module, got "
                f"{type(net.module_).__name__}."
            )
        if X is not None:
            # Before the head solve's first pass (a later callback's
            # on_train_begin), which then fills the store.
            self._release()
            self._install(net, net.get_dataset(X, y))

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        if self._split is None or not self._split.valid():
            self._release()
            self._install(net, dataset_train)
        net.history.record(PREFIX_STORE_ROWS, self.n_stored_)

    def _install(self, net, dataset_train):
        module = net.module_
        device = torch.device(net.device)
        devices = [device.index or 0] if device.type == "cuda" else []
        try:
            # Fetching a batch seeds the loader from the global generator:
            # the fit's random stream must not see it.
            with torch.random.fork_rng(devices=devices):
                iterator = net.get_iterator(dataset_train, training=False)
                # Weighted rows carry the images beside their weights.
                probe = split_weights(next(iter(iterator))[0])[0]
                self._split = _build(module, device, probe, fold=self.fold)
            self.status_ = "on"
        except _NothingFrozen as exc:
            self.status_ = str(exc)
            return
        except (ValueError, TypeError, NotImplementedError, RuntimeError) as exc:
            # torch.fx raises plain TypeError and NotImplementedError
            # for forwards it cannot trace.
            if str(exc) != self.status_:
                warnings.warn(
                    f"PrefixCache is off: {exc}.", RuntimeWarning, stacklevel=2
                )
            self.status_ = str(exc)
            return
        # Scoped: closed by _release (at the end of the fit, or when the
        # frozen prefix changes), which puts the module's own forward back.
        self._routing = ExitStack()
        self._routing.enter_context(
            module.reading_prefix_store(partial(self.backbone_output, module))
        )

    def on_train_end(self, net, **kwargs):
        self._release()

    def __getstate__(self):
        # The routing of a fit in progress belongs to that fit's module.
        state = self.__dict__.copy()
        state["_routing"] = None
        return state

    def _release(self):
        if self._routing is not None:
            self._routing.close()
        self._routing = None
        self._split, self._store, self._bytes = None, {}, 0
        self.n_stored_ = 0

    def backbone_output(self, module, x):
        """The backbone's output for raw input ``x`` and the pooled outputs of
        the module's stages inside the prefix (a dict), or None when stale."""
        split = self._split
        if split is None or not split.valid():
            self._release()
            return None
        keys = [_key(row) for row in x.detach().cpu()]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        computed = {}
        if missing:
            with torch.no_grad():
                outs = split.fill(module.preprocess(x[missing]))
            # A stage inside the prefix is stored pooled, as the head reads it.
            n = split.n_frontier
            outs = [*outs[:n], *(pool_stage(out) for out in outs[n:])]
            split.dtypes = [out.dtype for out in outs]
            for j, i in enumerate(missing):
                row = tuple(_compact(out[j], _STORAGE[self.dtype]) for out in outs)
                size = sum(t.numel() * t.element_size() for t in row)
                if self._bytes + size <= self.max_bytes:
                    self._store[keys[i]] = row
                    self._bytes += size
                computed[i] = row
        rows = [computed.get(i) or self._store[k] for i, k in enumerate(keys)]
        self.n_stored_ = len(self._store)
        values = [
            torch.stack([part.to(dtype) for part in parts])
            for parts, dtype in zip(zip(*rows, strict=True), split.dtypes, strict=True)
        ]
        n = split.n_frontier
        return split.suffix(*values[:n]), dict(
            zip(split.stages, values[n:], strict=True)
        )


#: PrefixCache's ``dtype`` names.
_STORAGE = {"float16": torch.float16, "float32": torch.float32}

#: The largest finite float16.
_FLOAT16_MAX = torch.finfo(torch.float16).max


def _compact(t, dtype):
    # A copy of one row's output, in float16 where it fits (NaN compares
    # false, so a row holding one stays float32 too).
    # The range check (a reduction and a sync) runs for float16 stores only.
    if (
        dtype == torch.float16
        and t.dtype == torch.float32
        and (t.numel() == 0 or bool(t.abs().max() <= _FLOAT16_MAX))
    ):
        return t.to(torch.float16)
    return t.clone()


def _key(row):
    digest = hashlib.blake2b(row.contiguous().numpy().tobytes(), digest_size=16)
    digest.update(f"{row.dtype}{tuple(row.shape)}".encode())
    return digest.digest()


def _build(module, device, probe, *, fold=False):
    if getattr(module, "precision", "float32") != "float32":
        raise ValueError("it supports precision='float32' only")
    split = _Split(module.backbone, getattr(module, "stages", ()))
    x = module.preprocess(torch.as_tensor(probe).to(device))
    _check(module.backbone, split, x)
    split.fill = inference_copy(split.prefix, x) if fold else split.prefix
    split.versions = split._versions()
    return split


def _close(a, b, rtol=1e-4):
    """Whether ``a`` and ``b`` agree to ``rtol`` of their largest value.

    Relative to the tensor's scale rather than to each value: the CPU
    kernels sum in another order for another batch size or thread count,
    which moves an output near zero by a few float32 ulps of the larger
    ones (on one thread, Lite0's pretrained prefix failed an elementwise
    1e-4 / 1e-5 test at 64 and 224 px). A random or batch-dependent layer
    moves the outputs by their own size.
    """
    return bool((a - b).abs().max() <= rtol * b.abs().max())


def _check(backbone, split, x):
    was_training = backbone.training
    buffers = {k: v.clone() for k, v in backbone.named_buffers()}
    try:
        with torch.no_grad():
            for training in (False, True):
                backbone.train(training)
                torch.manual_seed(0)
                full = backbone(x)
                torch.manual_seed(0)
                parts = split.prefix(x)[: split.n_frontier]
                split_out = split.suffix(*parts)
                torch.manual_seed(1)
                again = split.prefix(x[: max(len(x) // 2, 1)])[: split.n_frontier]
                same = _close(full, split_out) and all(
                    _close(a[: len(b)], b) for a, b in zip(parts, again, strict=True)
                )
                if not same:
                    mode = "train" if training else "eval"
                    raise ValueError(
                        f"the split backbone differs from the whole in {mode} mode "
                        "(a random or batch-dependent layer in the frozen prefix)"
                    )
    finally:
        backbone.train(was_training)
        for k, v in backbone.named_buffers():
            v.copy_(buffers[k])
