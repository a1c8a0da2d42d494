"""Filter similarity for :func:`prune_filters`: history, pairs and pull.

:class:`_FilterHistory` records a layer's filters over fine-tuning epochs,
:func:`_history_similarity` scores every pair of filters on that history,
:func:`_select_pairs` picks the most similar disjoint pairs and
:class:`_PairPull` pulls those pairs together during training.
"""

import numpy as np
import torch
import torch.nn.functional as F
from skorch.callbacks import Callback

__all__ = []


class _FilterHistory(Callback):
    """Snapshot conv filters at train begin and after every epoch."""

    def __init__(self, layers):
        self.layers = layers

    def initialize(self):
        self.snapshots_ = {name: [] for name in self.layers}
        return self

    def _snap(self, net):
        for name in self.layers:
            w = net.module_.get_submodule(name).weight.detach()
            self.snapshots_[name].append(w.flatten(1).float().cpu().clone())

    def on_train_begin(self, net, **kwargs):
        self._snap(net)

    def on_epoch_end(self, net, **kwargs):
        self._snap(net)


def _pair_cosines(weight, a, b):
    flat = weight.flatten(1)
    a = torch.as_tensor(a, device=weight.device)
    b = torch.as_tensor(b, device=weight.device)
    return F.cosine_similarity(flat[a], flat[b], dim=1)


class _PairPull(Callback):
    """Add the gradient of ``strength * exp(-sum of pair cosines)`` per layer.

    With ``per_pair=True`` the term is ``strength * sum of exp(-cosine)``
    over the pairs instead, which does not vanish as pairs are added.

    Runs in ``on_grad_computed``, after the loss's backward pass and before
    the optimizer step, so the net optimizes the cross-entropy plus the pull
    term without a change of criterion. Layers frozen for the epoch (by
    LayerFreezer) are left alone.
    """

    def __init__(self, pairs, strength, per_pair=False):
        self.pairs = pairs
        self.strength = strength
        self.per_pair = per_pair

    def on_grad_computed(self, net, training=False, **kwargs):
        if not training or not self.strength:
            return
        weights, terms = [], []
        with torch.enable_grad():
            for name, (a, b) in self.pairs.items():
                w = net.module_.get_submodule(name).weight
                if w.requires_grad:
                    weights.append(w)
                    cos = _pair_cosines(w, a, b)
                    terms.append(
                        torch.exp(-cos).sum()
                        if self.per_pair
                        else torch.exp(-cos.sum())
                    )
            if not terms:
                return
            penalty = self.strength * torch.stack(terms).sum()
            grads = torch.autograd.grad(penalty, weights)
        for w, g in zip(weights, grads, strict=True):
            if w.grad is None:
                w.grad = g.detach()
            else:
                w.grad.add_(g)
        net.history.record_batch("pull_loss", float(penalty.detach()))


def _history_similarity(snapshots):
    """Cosine similarity of every pair of filters, averaged over snapshots."""
    total = 0
    for w in snapshots:
        unit = F.normalize(w.double(), dim=1)
        total = total + unit @ unit.T
    return (total / len(snapshots)).numpy()


def _select_pairs(similarity, n_pairs):
    """The ``n_pairs`` most similar disjoint pairs, greedily."""
    n = len(similarity)
    rows, cols = np.triu_indices(n, 1)
    order = np.argsort(-similarity[rows, cols], kind="stable")
    used = np.zeros(n, dtype=bool)
    a, b = [], []
    for k in order:
        i, j = rows[k], cols[k]
        if not (used[i] or used[j]):
            used[i] = used[j] = True
            a.append(i)
            b.append(j)
            if len(a) == n_pairs:
                break
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)
