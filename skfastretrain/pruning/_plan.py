"""Dependency analysis for :func:`prune_filters`: which filters can be removed.

:func:`find_prunable` traces a network with :mod:`torch.fx` and finds the
convolutions whose output channels can be removed as physically smaller
tensors: those whose output reaches exactly one consumer (a convolution or a
linear layer) through channel-wise operations only. Each is described by a
:class:`LayerPlan`, which :func:`remove_filters` carries out.
"""

import operator
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torchvision.ops import stochastic_depth

from ..backbones._module import FastRetrainModule

__all__ = ["LayerPlan", "find_prunable"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.modules.batchnorm._BatchNorm,)
# Operations that map channel c to channel c: activations, dropout, pooling.
_MODULE_NAMES = (
    "ReLU Hardtanh LeakyReLU ELU SELU CELU GELU SiLU Mish Sigmoid Tanh Softplus "
    "Hardswish Hardsigmoid Identity Dropout Dropout1d Dropout2d Dropout3d "
    "AlphaDropout"  # nn.Hardtanh covers nn.ReLU6
)
_FUNCTION_NAMES = (
    "relu relu_ relu6 hardtanh leaky_relu elu selu gelu silu mish hardswish "
    "hardsigmoid softplus sigmoid tanh dropout dropout1d dropout2d dropout3d"
)
_POOLS = [(k, d) for k in ("Max", "Avg", "AdaptiveAvg", "AdaptiveMax") for d in "123"]
_CHANNELWISE_MODULES = tuple(
    getattr(nn, name)
    for name in _MODULE_NAMES.split() + [f"{k}Pool{d}d" for k, d in _POOLS]
)
_CHANNELWISE_FUNCTIONS = {
    getattr(F, name)
    for name in _FUNCTION_NAMES.split()
    + [f"{k.replace('Adaptive', 'Adaptive_').lower()}_pool{d}d" for k, d in _POOLS]
} | {torch.relu, torch.relu_, torch.sigmoid, torch.tanh, stochastic_depth}
_CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}
_CHANNELWISE_METHODS |= {"contiguous", "clone"}


@dataclass(frozen=True)
class LayerPlan:
    """A prunable convolution and the layers its output channels reach.

    Attributes
    ----------
    conv : str
        Qualified name (in the root module) of the convolution to prune.
    channelwise : tuple of str
        BatchNorm layers and depthwise convolutions between it and the
        consumer, shrunk together with it.
    consumer : str
        The convolution or linear layer that reads the channels.
    """

    conv: str
    channelwise: tuple
    consumer: str


class _Tracer(fx.Tracer):
    # Subclasses of torch.nn layers defined elsewhere (such as the padded
    # convolutions of EfficientNet-Lite) stay opaque, like the originals.
    def is_leaf_module(self, m, qualname):
        if isinstance(m, (*_CONV, nn.Linear, *_BN, *_CHANNELWISE_MODULES)):
            return True
        return super().is_leaf_module(m, qualname)


def _trace(module):
    was_training = module.training
    module.eval()  # the graph of inference: no stochastic-depth branches
    try:
        tracer = _Tracer(autowrap_functions=(stochastic_depth,))
        return tracer.trace(module)
    except Exception as exc:
        raise ValueError(
            f"prune_filters finds layer dependencies with torch.fx, which cannot "
            f"trace this backbone ({type(exc).__name__}: {exc})."
        ) from exc
    finally:
        module.train(was_training)


def _option(node, index, name, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _classify(node, traced):
    """What ``node`` does to the channels of its first input."""
    if node.op == "call_module":
        m = traced.get_submodule(node.target)
        if isinstance(m, _BN):
            return "bn", m
        if isinstance(m, _CONV):
            if m.groups == 1:
                return "conv", m
            if m.groups == m.in_channels == m.out_channels:
                return "depthwise", m
            return "other", m
        if isinstance(m, nn.Linear):
            return "linear", m
        if isinstance(m, nn.Flatten):
            flat = m.start_dim == 1 and m.end_dim == -1
            return ("flatten" if flat else "other"), m
        if isinstance(m, _CHANNELWISE_MODULES):
            indices = getattr(m, "return_indices", False)
            return ("other" if indices else "channelwise"), m
        return "other", m
    if node.op == "call_function":
        if node.target in _CHANNELWISE_FUNCTIONS:
            indices = node.kwargs.get("return_indices", False)
            return ("other" if indices else "channelwise"), None
        if node.target is torch.flatten:
            return _flatten(node), None
        if node.target is torch.mean:
            return _reduction(node), None
        return "other", None
    if node.op == "call_method":
        if node.target in _CHANNELWISE_METHODS:
            return "channelwise", None
        if node.target == "flatten":
            return _flatten(node), None
        if node.target in ("mean", "amax"):
            return _reduction(node), None
    return "other", None


def _flatten(node):
    start, end = _option(node, 1, "start_dim", 0), _option(node, 2, "end_dim", -1)
    return "flatten" if (start, end) == (1, -1) else "other"


def _reduction(node):
    # A mean over spatial axes only (global pooling written as x.mean((2, 3))).
    dims = _option(node, 1, "dim", None)
    dims = (dims,) if isinstance(dims, int) else dims
    if not isinstance(dims, (tuple, list)) or not all(
        isinstance(d, int) and d >= 2 for d in dims
    ):
        return "other"
    return "channelwise" if _option(node, 2, "keepdim", False) else "flatten"


def _describe(node, traced):
    if node.op == "call_module":
        return f"{type(traced.get_submodule(node.target)).__name__} {node.target!r}"
    if node.target in (operator.add, torch.add, operator.iadd):
        return "an add"
    if node.target is torch.cat:
        return "a concatenation"
    return getattr(node.target, "__name__", str(node.target))


def _follow(conv_node, traced, calls, channels, output_consumer):
    """The LayerPlan pieces for ``conv_node``, or None and the reason."""
    chain, flat, cur = [], False, conv_node
    while True:
        users = list(cur.users)
        if len(users) != 1:
            return None, (
                f"its output is used by {len(users)} operations (such as a "
                "residual add or a concatenation)"
                if users
                else "its output is unused"
            )
        node = users[0]
        if node.op == "output":
            if output_consumer is None or node.args[0] is not cur:
                return None, "its output is the network's output"
            return (tuple(chain), output_consumer), ""
        if node.all_input_nodes != [cur] or not node.args or node.args[0] is not cur:
            return None, (
                f"its output reaches {_describe(node, traced)}, which combines it "
                "with another tensor (such as a residual add or a concatenation)"
            )
        kind, m = _classify(node, traced)
        if kind in ("bn", "depthwise", "conv", "linear") and calls[id(m)] != 1:
            return None, f"{node.target!r} is called more than once"
        if kind == "channelwise":
            pass
        elif kind == "flatten":
            flat = True
        elif kind in ("bn", "depthwise", "conv") and not flat:
            width = m.num_features if kind == "bn" else m.in_channels
            if width != channels:
                return None, f"{node.target!r} does not take its {channels} channels"
            if kind == "conv":
                return (tuple(chain), node.target), ""
            chain.append(node.target)
        elif kind == "linear" and flat and m.in_features % channels == 0:
            return (tuple(chain), node.target), ""
        else:
            return None, f"its output reaches {_describe(node, traced)}"
        cur = node


def find_prunable(module, min_filters=0):
    """Convolutions whose filters can be removed, and why the others cannot.

    A convolution (``groups=1``) with more than ``min_filters`` filters is
    prunable when its output reaches exactly one consumer convolution or
    linear layer through channel-wise operations only: BatchNorm, depthwise
    convolutions (``groups == channels``), activations, dropout, pooling and
    flattening. Convolutions whose output feeds a residual add, a
    concatenation or several branches are skipped: removing a channel there
    would have to remove it from every tensor it is combined with.

    Parameters
    ----------
    module : nn.Module
        A :class:`FastRetrainModule` (its backbone is traced and its output
        feeds the head) or any module traceable by :mod:`torch.fx` (whose
        output cannot be shrunk).
    min_filters : int, default=0
        Convolutions with at most this many filters are not considered.

    Returns
    -------
    plans : list of LayerPlan
        The prunable convolutions, in graph order.
    skipped : dict of str to str
        For every other convolution with more than ``min_filters`` filters,
        why it is not prunable.
    """
    if isinstance(module, FastRetrainModule):
        traced, prefix, output_consumer = module.backbone, "backbone.", "head"
    else:
        traced, prefix, output_consumer = module, "", None
    graph = _trace(traced)
    calls = Counter(
        id(traced.get_submodule(n.target)) for n in graph.nodes if n.op == "call_module"
    )
    # Modules whose parameters the graph reads directly cannot be resized.
    direct = {
        id(traced.get_submodule(n.target.rpartition(".")[0]))
        for n in graph.nodes
        if n.op == "get_attr"
    }
    plans, skipped = [], {}
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        m = traced.get_submodule(node.target)
        if not isinstance(m, _CONV) or m.out_channels <= min_filters:
            continue
        name = prefix + node.target
        if m.groups != 1:
            reason = "it is a grouped or depthwise convolution"
        elif calls[id(m)] != 1 or id(m) in direct:
            reason = "it is called more than once"
        else:
            found, reason = _follow(
                node, traced, calls, m.out_channels, output_consumer
            )
            if found is not None:
                chain, consumer = found
                if any(id(traced.get_submodule(t)) in direct for t in chain):
                    reason = "a layer after it is used directly"
                else:
                    prefixed = tuple(prefix + t for t in chain)
                    if consumer != "head":
                        consumer = prefix + consumer
                    plans.append(LayerPlan(name, prefixed, consumer))
                    continue
        skipped[name] = reason
    # Depthwise convolutions pruned along with a chain are not "skipped".
    shrunk = {t for plan in plans for t in plan.channelwise}
    return plans, {k: v for k, v in skipped.items() if k not in shrunk}
