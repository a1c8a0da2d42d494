"""Layer freezing for the SGD epochs (a random draw or a prefix): a callback."""

import warnings
from typing import ClassVar

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from skorch.callbacks import Callback
from torch import nn

from .._batchnorm import hold_in_eval, is_held_in_eval
from .._params import FractionSchedule, validate_constraints
from ..backbones._module import find_head
from ._history_keys import FROZEN_FRACTION

__all__ = ["LayerFreezer", "RandomFreezer"]

_CANDIDATE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def freeze_schedule_value(freeze_prob, epoch):
    """Fraction to freeze at 1-based ``epoch`` (the last value repeats)."""
    if np.ndim(freeze_prob) == 0:
        return float(freeze_prob)
    return float(freeze_prob[min(epoch, len(freeze_prob)) - 1])


class LayerFreezer(Callback):
    """Freeze a fraction of a network's layers before each training epoch.

    Candidates are the weight-carrying convolution and linear layers of
    ``net.module_``; the classifier head is never a candidate. Before each
    epoch ``round(freeze_prob * n_candidates)`` of them get
    ``requires_grad=False``, so SGD (and its momentum and weight decay) leaves
    them untouched for that epoch. Works in any skorch net.

    With ``mode="random"`` the frozen layers are a uniform draw without
    replacement, as in the paper; BatchNorm layers keep training. With
    ``mode="prefix"`` the first layers in forward order are frozen together
    with every parameter that runs before the first trainable layer, and the
    BatchNorm layers of that prefix are held in eval mode. The prefix is then a
    fixed function: autograd records nothing for it, so the backward pass
    stops early and its activations are not stored. A prefix whose BatchNorm
    layers are all held in eval mode already (pretrained statistics) is
    frozen from ``on_train_begin`` on, so that what other callbacks run
    before the first epoch (a head solve's pass, which fills
    :class:`PrefixCache`) sees the first epoch's prefix.

    The fraction frozen in each epoch is recorded in the history as
    ``frozen_fraction``. Everything is unfrozen at the end of training.

    Parameters
    ----------
    freeze_prob : float or sequence of float, default=0.5
        Fraction of candidates to freeze, in [0, 1); a sequence gives one value
        per epoch (its last value repeats after it runs out).
    mode : {"random", "prefix"}, default="random"
        Which layers are frozen.
    head : str or None, default=None
        Name of the head submodule, never frozen. None means the last
        registered leaf module when it is an ``nn.Linear``.
    random_state : int, RandomState instance or None, default=None
        Seeds the draws of ``mode="random"``.

    Attributes
    ----------
    candidates_ : list of str
        Candidate layer names, in forward order for ``mode="prefix"``.
    frozen_ : list of str
        Layers frozen in the current (or last) epoch.

    References
    ----------
    .. [1] Zhang, Yang, Akilan, Wu, Liu, "Fast Transfer Learning Method Using
       Random Layer Freezing and Feature Refinement Strategy", IEEE
       Transactions on Cybernetics, 2024, doi:10.1109/TCYB.2024.3483068.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skorch import NeuralNetClassifier
    >>> from skfastretrain import LayerFreezer
    >>> module = torch.nn.Sequential(
    ...     torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
    ...     torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> net = NeuralNetClassifier(
    ...     module, criterion=torch.nn.CrossEntropyLoss, max_epochs=2,
    ...     train_split=None, verbose=0,
    ...     callbacks=[LayerFreezer(0.5, random_state=0)])
    >>> X = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    >>> net = net.fit(X, (X[:, 0] > 0).astype("int64"))
    >>> net.history[:, "frozen_fraction"]
    [0.5, 0.5]
    """

    _parameter_constraints: ClassVar[dict] = {
        "freeze_prob": [FractionSchedule()],
        "mode": [StrOptions({"random", "prefix"})],
        "head": [str, None],
        "random_state": ["random_state"],
    }

    def __init__(self, freeze_prob=0.5, *, mode="random", head=None, random_state=None):
        self.freeze_prob = freeze_prob
        self.mode = mode
        self.head = head
        self.random_state = random_state

    def initialize(self):
        self.candidates_ = []
        self.frozen_ = []
        self._rng = check_random_state(self.random_state)
        self._order = []
        self._hooks = []
        self._touched = []
        self._newly_held = False
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        validate_constraints(self)
        module = net.module_
        head = find_head(module, self.head)
        excluded = {id(p) for p in head.parameters()} if head is not None else set()
        leaves = {
            name: m
            for name, m in module.named_modules()
            if not list(m.children()) and any(True for _ in m.parameters(recurse=False))
        }
        if self.mode == "prefix":
            leaves = self._forward_order(net, leaves, X, y)
        self._order = list(leaves.items())
        self.candidates_ = [
            name
            for name, m in self._order
            if isinstance(m, _CANDIDATE_TYPES)
            and not any(id(p) in excluded for p in m.parameters())
        ]
        self._excluded = excluded
        if self.mode == "prefix":
            # The first epoch's prefix is frozen before the fit's first pass
            # (the head solve's, in on_train_begin), so that PrefixCache can
            # store its output during that pass. A prefix draws nothing, so
            # the random stream is the same as without this. Not where the
            # prefix holds BatchNorm layers that nothing held before: that
            # pass re-estimates their statistics (RidgeHeadSolver's
            # recalibrate_bn), which a held layer would keep at its initial
            # values.
            self._apply(len(net.history) + 1)
            if self._newly_held:
                self._release()

    def _forward_order(self, net, leaves, X, y):
        seen = []
        hooks = [
            m.register_forward_pre_hook(lambda mod, args, n=name: seen.append(n))
            for name, m in leaves.items()
        ]
        was_training = net.module_.training
        try:
            net.module_.eval()
            batch = next(iter(net.get_iterator(net.get_dataset(X, y), training=False)))
            with torch.no_grad():
                net.infer(batch[0])
        finally:
            for h in hooks:
                h.remove()
            net.module_.train(was_training)
        order = list(dict.fromkeys(seen))
        # Leaves never called in the dry run (unused branches) go last.
        order += [n for n in leaves if n not in order]
        return {n: leaves[n] for n in order}

    def _release(self):
        for h in self._hooks:
            h.remove()
        for p in self._touched:
            p.requires_grad_(True)
        self._hooks, self._touched, self._newly_held = [], [], False

    def _freeze(self, params):
        for p in params:
            if p.requires_grad:
                p.requires_grad_(False)
                self._touched.append(p)

    def on_epoch_begin(self, net, **kwargs):
        n_freeze = self._apply(len(net.history))
        n_cand = len(self.candidates_)
        net.history.record(FROZEN_FRACTION, n_freeze / n_cand if n_cand else 0.0)

    def _apply(self, epoch):
        """Freeze the layers of 1-based ``epoch``; return how many candidates."""
        self._release()
        fraction = freeze_schedule_value(self.freeze_prob, epoch)
        n_cand = len(self.candidates_)
        # Python rounding (half to even), as in the authors' code.
        n_freeze = round(fraction * n_cand)
        if self.mode == "random":
            idx = np.sort(self._rng.choice(n_cand, size=n_freeze, replace=False))
            self.frozen_ = [self.candidates_[i] for i in idx]
            modules = dict(self._order)
            for name in self.frozen_:
                self._freeze(modules[name].parameters())
        else:
            self.frozen_ = self.candidates_[:n_freeze]
            if n_freeze:
                stop = self.candidates_[n_freeze] if n_freeze < n_cand else None
                for name, m in self._order:
                    if name == stop:
                        break
                    if any(id(p) in self._excluded for p in m.parameters()):
                        continue
                    self._freeze(m.parameters())
                    if isinstance(m, _BN_TYPES):
                        self._newly_held |= not is_held_in_eval(m)
                        self._hooks += hold_in_eval([m])
        return n_freeze

    def on_train_end(self, net, **kwargs):
        self._release()
        # References to the net's layers: a pickle would store them again,
        # apart from the module (skorch pickles the module separately).
        self._order = []


class RandomFreezer(LayerFreezer):
    """Deprecated name of :class:`LayerFreezer`.

    .. deprecated:: 0.1
        ``RandomFreezer`` was renamed :class:`LayerFreezer`, which also
        freezes a prefix (``mode="prefix"``, the estimator's default) and is
        not always random. The old name will be removed in 0.3.

    Parameters
    ----------
    freeze_prob : float or sequence of float, default=0.5
        As in :class:`LayerFreezer`.
    mode : {"random", "prefix"}, default="random"
        As in :class:`LayerFreezer`.
    head : str or None, default=None
        As in :class:`LayerFreezer`.
    random_state : int, RandomState instance or None, default=None
        As in :class:`LayerFreezer`.

    Examples
    --------
    >>> import warnings
    >>> from skfastretrain.callbacks import LayerFreezer, RandomFreezer
    >>> with warnings.catch_warnings(record=True):
    ...     warnings.simplefilter("always")
    ...     isinstance(RandomFreezer(0.5), LayerFreezer)
    True
    """

    def __init__(self, freeze_prob=0.5, *, mode="random", head=None, random_state=None):
        warnings.warn(
            "RandomFreezer was renamed LayerFreezer in 0.1 and will be removed "
            "in 0.3; use skfastretrain.callbacks.LayerFreezer.",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(freeze_prob, mode=mode, head=head, random_state=random_state)
