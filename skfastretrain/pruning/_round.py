"""One round of :func:`prune_filters`: record, pull, remove, fine-tune.

:func:`_prune_round` runs the steps of a TASCNet round on a copy of the
estimator through its own skorch net (:func:`_train`), in the BatchNorm mode
it was fitted with (:func:`_bn_mode`).
"""

import numpy as np

from .._batchnorm import hold_in_eval
from ._similarity import (
    _FilterHistory,
    _history_similarity,
    _pair_cosines,
    _PairPull,
    _select_pairs,
)
from ._surgery import remove_filters

__all__ = []


def _bn_mode(est):
    """Names of the BatchNorm layers the estimator held in eval mode."""
    return list(est.held_batchnorm_)


def _train(est, X, y, epochs, bn_mode, callback=None):
    """Continue training ``est.net_`` for ``epochs`` with its own callbacks."""
    if epochs == 0:
        if callback is not None:  # a history of the current weights only
            callback.initialize().on_train_begin(est.net_)
        return
    net = est.net_
    entry = None
    if callback is not None:
        entry = ("prune_filters", callback.initialize())
        net.callbacks_.append(entry)
    held = hold_in_eval([net.module_.get_submodule(name) for name in bn_mode])
    try:
        net.partial_fit(X, y, epochs=epochs)
    finally:
        for h in held:
            h.remove()
        if entry is not None:
            net.callbacks_.remove(entry)


def _prune_round(est, plans, X, y, bn_mode, params):
    """One round on ``est`` (changed in place); returns its record."""
    history = _FilterHistory([p.conv for p in plans])
    _train(est, X, y, params["history_epochs"], bn_mode, history)
    module = est.module_
    pairs, similarity = {}, {}
    for plan in plans:
        n = module.get_submodule(plan.conv).out_channels
        k = min(max(1, round(params["pair_fraction"] * n)), n - params["min_filters"])
        sim = _history_similarity(history.snapshots_[plan.conv])
        a, b = _select_pairs(sim, k)
        pairs[plan.conv] = (a, b)
        similarity[plan.conv] = float(sim[a, b].mean())
    per_pair = params["pull_terms"] == "pair"
    pull = _PairPull(pairs, params["pull_strength"], per_pair)
    _train(est, X, y, params["pull_epochs"], bn_mode, pull)
    module = est.module_
    removed, cosines = {}, {}
    for plan in plans:
        a, b = pairs[plan.conv]
        weight = module.get_submodule(plan.conv).weight.detach()
        cosines[plan.conv] = float(_pair_cosines(weight, a, b).mean())
        l1 = weight.flatten(1).abs().sum(1).cpu().numpy()
        drop_a = l1[a] < l1[b]
        remove, partner = np.where(drop_a, a, b), np.where(drop_a, b, a)
        remove_filters(
            module, plan, remove, merge_into=partner if params["merge"] else None
        )
        removed[plan.conv] = len(remove)
    est.net_.initialize_optimizer()
    _train(est, X, y, params["finetune_epochs"], bn_mode)
    return {"removed": removed, "pair_similarity": similarity, "pull_cosine": cosines}
