"""L2-SP (a callback) and DELTA (a callback and a criterion) for skorch nets."""

import copy
from functools import partial
from itertools import product
from typing import ClassVar

import torch
from skorch.callbacks import Callback
from torch import nn

from .._params import (
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    LayerNames,
    validate_constraints,
)
from ..backbones._module import find_head
from ._attention import channel_attention
from ._history_keys import REG_PENALTY

__all__ = ["L2SP", "DeltaLoss", "DeltaRegularizer", "default_layers"]


class _Regularizer(Callback):
    """Shared parts: strengths, the head, and ``reg_penalty`` in the history."""

    def _setup(self, net):
        validate_constraints(self)
        head = find_head(net.module_, self.head)
        if not isinstance(head, nn.Linear):
            msg = "needs an nn.Linear head; name it with head=<submodule name>."
            raise ValueError(f"{type(self).__name__} {msg}")
        self._head_weight = head.weight
        return head

    def on_epoch_end(self, net, **kwargs):
        net.history.record(REG_PENALTY, self._epoch_penalty())


class L2SP(_Regularizer):
    """L2-SP: pull the parameters outside the head toward their start.

    Adds the exact gradients of ``alpha/2 ||w - w0||^2`` (``w0``: the non-head
    parameters at the first ``on_train_begin`` after ``initialize``) and of
    ``beta/2 ||W_head||^2`` (not the bias) after backward, skipping frozen
    parameters. ``alpha=0`` is DELTA's "L2" baseline (head weight decay). The
    penalty at each epoch's end is recorded as ``reg_penalty``.

    Parameters
    ----------
    alpha, beta : float, default=0.01
        Strengths of the pull toward ``w0`` and of the head's weight decay.
    head : str or None, default=None
        Name of the head submodule; None means the last leaf ``nn.Linear``.

    Attributes
    ----------
    w0_ : dict of str to torch.Tensor
        Starting weights by name (kept for ``partial_fit``).

    References
    ----------
    .. [1] Li, Grandvalet, Davoine, "Explicit Inductive Bias for Transfer
       Learning with Convolutional Networks", ICML 2018, arXiv:1802.01483.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skorch import NeuralNetClassifier
    >>> from skfastretrain.callbacks import L2SP
    >>> module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    >>> net = NeuralNetClassifier(module, criterion=torch.nn.CrossEntropyLoss,
    ...     max_epochs=2, train_split=None, verbose=0, callbacks=[L2SP(0.1)])
    >>> X = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    >>> len(net.fit(X, (X[:, 0] > 0).astype("int64")).history[:, "reg_penalty"])
    2
    """

    _parameter_constraints: ClassVar[dict] = {
        "alpha": [NON_NEGATIVE],
        "beta": [NON_NEGATIVE],
        "head": [str, None],
    }

    def __init__(self, alpha=0.01, beta=0.01, *, head=None):
        self.alpha = alpha
        self.beta = beta
        self.head = head

    def initialize(self):
        self.w0_, self._refs, self._head_weight = None, {}, None
        return self

    def on_train_begin(self, net, **kwargs):
        in_head = {id(p) for p in self._setup(net).parameters()}
        params = dict(net.module_.named_parameters())
        if self.w0_ is None:
            kept = {n: p for n, p in params.items() if id(p) not in in_head}
            self.w0_ = {n: p.detach().clone() for n, p in kept.items()}
        self._refs = {id(params[n]): (params[n], w) for n, w in self.w0_.items()}

    @torch.no_grad()
    def on_grad_computed(self, net, named_parameters, **kwargs):
        for _, p in named_parameters:
            if p.grad is None or not p.requires_grad:
                continue
            if id(p) in self._refs:
                p.grad.add_(p - self._refs[id(p)][1].to(p), alpha=self.alpha)
            elif p is self._head_weight:
                p.grad.add_(p, alpha=self.beta)

    @torch.no_grad()
    def _epoch_penalty(self):
        total = sum(float((p - w.to(p)).pow(2).sum()) for p, w in self._refs.values())
        head = float(self._head_weight.pow(2).sum())
        return 0.5 * (self.alpha * total + self.beta * head)


def default_layers(module):
    """DELTA's default layers in ``module``: ``layer1..4`` of a ResNet, or the
    last block of each resolution stage of an EfficientNet-Lite (or [])."""
    from ..backbones._efficientnet_lite import EfficientNetLite

    stages = [f"layer{i}" for i in range(1, 5)]
    for prefix, m in module.named_modules():
        pre = f"{prefix}." if prefix else ""
        if all(isinstance(getattr(m, s, None), nn.Module) for s in stages):
            return [pre + s for s in stages]
        if isinstance(m, EfficientNetLite):
            # A stage ends where the next block downsamples, and at the end.
            ends = [max(b._depthwise_conv.stride) > 1 for b in m._blocks[1:]]
            return [f"{pre}_blocks.{i}" for i, e in enumerate([*ends, True]) if e]
    return []


def _frozen_copy(module):
    # The copy gets empty forward/backward hook dicts: hooks others put on
    # the module must not run in it, nor their owners be deep-copied.
    found = [vars(m).items() for m in module.modules()]
    hooks = [v for d in found for k, v in d if k.startswith(("_forward", "_backward"))]
    memo = {id(v): type(v)() for v in hooks if isinstance(v, dict)}
    return copy.deepcopy(module, memo).requires_grad_(False).eval()


class DeltaLoss(nn.Module):
    """Criterion adding the penalty of a bound :class:`DeltaRegularizer`.

    Bound from train begin to train end. skorch infers ``predict_proba``'s
    softmax from ``CrossEntropyLoss`` only: give a plain net using this
    ``predict_nonlinearity=functools.partial(torch.softmax, dim=-1)``.

    Parameters
    ----------
    criterion : nn.Module or None, default=None
        The loss on logits; None is ``nn.CrossEntropyLoss()``.

    Examples
    --------
    >>> import torch
    >>> from skfastretrain.callbacks import DeltaLoss
    >>> round(float(DeltaLoss()(torch.zeros(2, 2), torch.tensor([0, 1]))), 4)
    0.6931
    """

    def __init__(self, criterion=None):
        super().__init__()
        self.criterion = nn.CrossEntropyLoss() if criterion is None else criterion
        self.regularizer = None

    def forward(self, y_pred, y_true):
        loss = self.criterion(y_pred, y_true)
        penalty = None if self.regularizer is None else self.regularizer.penalty()
        return loss if penalty is None else loss + penalty


class DeltaRegularizer(_Regularizer):
    """DELTA: keep feature maps near the source network's, per channel.

    The net's criterion, a :class:`DeltaLoss`, adds ``alpha * sum_layers
    sum_c w_c ||FM_c - FM0_c||^2 / (H W) + beta/2 ||W_head||^2`` (batch mean;
    no head bias). ``FM0`` comes from the source network, a frozen copy of
    ``net.module_`` made at the first ``on_train_begin`` (eval mode, never
    trained), run under ``torch.no_grad()`` on training-mode forwards only.
    Attention, before training: zeroing channel ``c`` raises the mean
    cross-entropy (eval mode, ``attention_batches`` batches of rows spread
    over the training set) by ``d_c``; per layer ``w = softmax(z /
    temperature)``, ``z`` the standardized ``d`` (:func:`channel_attention`).
    DELTA first trains a new head alone: add this after a callback that
    fits the head (:class:`RidgeHeadSolver`), or set ``fit_head=True``.
    ``weighted=False`` ("feature_map") uses ``w_c = 1/C``. The epoch's mean
    penalty is recorded as ``reg_penalty``.

    Parameters
    ----------
    alpha, beta : float, default=0.01
        Strengths of the feature-map term and of the head's weight decay.
    layers : list of str or None, default=None
        Submodules of ``net.module_`` whose outputs (channels on dim 1) are
        regularized; None uses :func:`default_layers`.
    weighted : bool, default=True
        Channel attention, or equal weights.
    attention_batches : int, default=4
        Batches (of ``net.batch_size`` rows) measuring the attention.
    temperature : float, default=5.0
        Softmax temperature of the attention.
    head : str or None, default=None
        Name of the head submodule; None means the last leaf ``nn.Linear``.
    fit_head : bool, default=False
        Measure the attention with a head ridge-solved on the frozen
        pretrained network (restored afterwards), as DELTA's first step
        does. Leave it False after a callback that already fitted the head.

    Attributes
    ----------
    layers_ : list of str
    attention_ : dict of str to ndarray
        Channel weights of each layer.
    source_ : nn.Module

    References
    ----------
    .. [1] Li, Xiong, Wang, Rao, Liu, Chen, Huan, "DELTA: DEep Learning
       Transfer using Feature Map with Attention", ICLR 2019,
       arXiv:1901.09229; ACM TKDD 2021, doi:10.1145/3473912.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from skorch import NeuralNetClassifier
    >>> from skfastretrain import RidgeHeadSolver
    >>> from skfastretrain.callbacks import DeltaLoss, DeltaRegularizer
    >>> module = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(64, 2))
    >>> reg = DeltaRegularizer(layers=["0"])
    >>> net = NeuralNetClassifier(module, criterion=DeltaLoss(), max_epochs=2,
    ...     train_split=None, verbose=0, callbacks=[RidgeHeadSolver(), reg])
    >>> X = np.random.default_rng(0).normal(size=(32, 1, 6, 6)).astype("float32")
    >>> net = net.fit(X, (X[:, 0, 0, 0] > 0).astype("int64"))
    >>> reg.attention_["0"].shape, len(net.history[:, "reg_penalty"])
    ((4,), 2)
    """

    _parameter_constraints: ClassVar[dict] = {
        **L2SP._parameter_constraints,
        "layers": [LayerNames(), None],
        "weighted": ["boolean"],
        "attention_batches": [POSITIVE_INT],
        "temperature": [POSITIVE],
        "fit_head": ["boolean"],
    }

    def __init__(
        self,
        alpha=0.01,
        beta=0.01,
        *,
        layers=None,
        weighted=True,
        attention_batches=4,
        temperature=5.0,
        head=None,
        fit_head=False,
    ):
        self.alpha = alpha
        self.beta = beta
        self.layers = layers
        self.weighted = weighted
        self.attention_batches = attention_batches
        self.temperature = temperature
        self.head = head
        self.fit_head = fit_head

    def initialize(self):
        if getattr(self, "_hooks", None):
            self.on_train_end(None)
        self.layers_, self.attention_, self.source_, self._hooks = [], {}, None, []
        self._target, self._source, self._criterion, self._sum = {}, {}, None, []
        self._train_forward, self._last = False, None
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        if not isinstance(net.criterion_, DeltaLoss):
            msg = "needs criterion=DeltaLoss(nn.CrossEntropyLoss()) in the net."
            raise TypeError(f"DeltaRegularizer {msg}")
        self._setup(net)
        module = net.module_
        if self.source_ is None and self.alpha > 0:
            self.layers_ = self._resolve_layers(module)
            self.source_ = _frozen_copy(module)
            self.attention_ = channel_attention(
                net,
                # The training rows only: a validation split stays unseen.
                net.get_split_datasets(X, y)[0],
                self.layers_,
                n_batches=self.attention_batches,
                temperature=self.temperature,
                weighted=self.weighted,
                fit_head=self.fit_head,
                head=self.head,
            )
        self._hooks = [module.register_forward_pre_hook(self._run, with_kwargs=True)]
        for name, owner in product(self.layers_, (module, self.source_)):
            hook = partial(self._stash, name, owner is module)
            self._hooks.append(owner.get_submodule(name).register_forward_hook(hook))
        new = self._head_weight.new_tensor
        self._weights = {n: new(w) for n, w in self.attention_.items()}
        self._criterion = net.criterion_
        self._criterion.regularizer = self

    def _resolve_layers(self, module):
        names = default_layers(module) if self.layers is None else list(self.layers)
        missing = [n for n in names if n not in dict(module.named_modules())]
        if missing or not names:
            found = f"no submodules {missing}" if missing else "no default layers"
            raise ValueError(
                f"DeltaRegularizer found {found} in {type(module).__name__}; name the "
                "layers with layers=[...] (with FastRetrainClassifier, names "
                "inside its backbone)."
            )
        return names

    def _stash(self, name, target, module, args, output):
        if self._train_forward or not target:
            (self._target if target else self._source)[name] = output

    def _run(self, module, args, kwargs):
        self.on_batch_end(None)
        self._train_forward = module.training and torch.is_grad_enabled()
        if self._train_forward and self.source_ is not None:
            with torch.no_grad():
                self.source_(*args, **kwargs)

    def penalty(self):
        """The penalty of the last training forward (None after eval ones)."""
        if not self._train_forward:
            return None
        total = 0.5 * self.beta * self._head_weight.pow(2).sum()
        for name, fm in self._target.items():
            diff = (fm - self._source[name]).pow(2)
            per_channel = diff.mean(dim=[d for d in range(diff.ndim) if d != 1])
            total = total + self.alpha * (per_channel @ self._weights[name].to(diff))
        self._last = total.detach()
        return total

    def on_batch_end(self, net, training=False, **kwargs):
        if training and self._last is not None:
            self._sum.append(self._last)
        self._target.clear()
        self._source.clear()
        self._train_forward, self._last = False, None

    def _epoch_penalty(self):
        values, self._sum = self._sum, []
        return float(torch.stack(values).mean()) if values else 0.0

    def on_train_end(self, net, **kwargs):
        for h in self._hooks:
            h.remove()
        if self._criterion is not None:
            self._criterion.regularizer = None
        self._hooks, self._criterion = [], None
        self.on_batch_end(net)
