"""Filter surgery for :func:`prune_filters`: removal of the planned filters.

:func:`remove_filters` removes output filters of a convolution found by
:func:`find_prunable`, and the channels they feed along its
:class:`LayerPlan`, as physically smaller tensors.
"""

import numpy as np
import torch
from torch import nn

from ._plan import _BN

__all__ = ["remove_filters"]


def _replace(m, name, value):
    old = getattr(m, name, None)
    if old is None:
        return
    value = value.detach().clone().contiguous()
    if isinstance(old, nn.Parameter):
        setattr(m, name, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        setattr(m, name, value)


def _mix(tensor, keep, drop, alpha):
    # In place: tensor[keep] <- alpha * tensor[keep] + (1 - alpha) * tensor[drop].
    shape = (-1,) + (1,) * (tensor.ndim - 1)
    a = alpha.to(tensor).view(shape)
    tensor[keep] = a * tensor[keep] + (1 - a) * tensor[drop]


def remove_filters(module, plan, remove, *, merge_into=None):
    """Remove output filters of ``plan.conv`` and the channels they feed.

    The convolution's weight (and bias) lose the rows ``remove``; every
    BatchNorm and depthwise convolution of ``plan.channelwise`` loses those
    channels; the consumer loses the matching input channels (for a linear
    consumer after flattening, the matching blocks of input features).
    Parameters are replaced by new, smaller ``nn.Parameter`` objects: an
    optimizer holding the old ones must be re-created.

    Parameters
    ----------
    module : nn.Module
        The root module ``plan`` names layers in; changed in place.
    plan : LayerPlan
        From :func:`find_prunable`.
    remove : array-like of int
        Filter indices to remove (distinct).
    merge_into : array-like of int or None, default=None
        If given, ``remove[i]`` is first merged into filter ``merge_into[i]``:
        their weights (and per-channel parameters along the chain) are
        averaged with weights proportional to their L1 norms, and the
        consumer's weights for the removed channel are added to the kept
        one's, since the merged channel now stands for both.

    Returns
    -------
    keep : ndarray of int
        The original indices of the remaining filters, in order.
    """
    conv = module.get_submodule(plan.conv)
    consumer = module.get_submodule(plan.consumer)
    n = conv.out_channels
    remove = np.asarray(remove, dtype=np.int64).reshape(-1)
    if len(np.unique(remove)) != len(remove) or np.any((remove < 0) | (remove >= n)):
        raise ValueError(f"remove must be distinct filter indices in [0, {n}).")
    if len(remove) >= n:
        raise ValueError("Cannot remove every filter of a layer.")
    keep = np.setdiff1d(np.arange(n), remove)
    chain = [module.get_submodule(name) for name in plan.channelwise]
    mult = consumer.in_features // n if isinstance(consumer, nn.Linear) else 1
    with torch.no_grad():
        if merge_into is not None:
            _merge(conv, chain, consumer, mult, remove, np.asarray(merge_into))
        device = conv.weight.device
        idx = torch.as_tensor(keep, device=device)
        for m in [conv, *chain]:
            for name in ("weight", "bias", "running_mean", "running_var"):
                tensor = getattr(m, name, None)
                if tensor is not None:
                    _replace(m, name, tensor.index_select(0, idx))
            if isinstance(m, _BN):
                m.num_features = len(keep)
            elif m is conv:
                m.out_channels = len(keep)
            else:  # depthwise
                m.in_channels = m.out_channels = m.groups = len(keep)
        cols = (idx[:, None] * mult + torch.arange(mult, device=device)).reshape(-1)
        _replace(consumer, "weight", consumer.weight.index_select(1, cols))
        if isinstance(consumer, nn.Linear):
            consumer.in_features = len(cols)
        else:
            consumer.in_channels = len(keep)
    return keep


def _merge(conv, chain, consumer, mult, remove, merge_into):
    if merge_into.shape != remove.shape or np.intersect1d(merge_into, remove).size:
        raise ValueError("merge_into must pair each removed filter with a kept one.")
    keep_t = torch.as_tensor(merge_into, device=conv.weight.device)
    drop_t = torch.as_tensor(remove, device=conv.weight.device)
    l1 = conv.weight.detach().flatten(1).abs().sum(1)
    alpha = l1[keep_t] / (l1[keep_t] + l1[drop_t]).clamp_min(1e-12)
    for m in [conv, *chain]:
        for name in ("weight", "bias", "running_mean", "running_var"):
            tensor = getattr(m, name, None)
            if tensor is not None:
                _mix(tensor.data, keep_t, drop_t, alpha)
    w = consumer.weight.data
    for offset in range(mult):
        w[:, keep_t * mult + offset] += w[:, drop_t * mult + offset]
