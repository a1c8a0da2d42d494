"""The frozen prefix run as inference: BatchNorm folded into its convolutions."""

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["inference_copy"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _conv_bn_pairs(module, x):
    """Names of (conv, BatchNorm) leaves where the BatchNorm reads the conv's output.

    Found by running ``module`` once with forward hooks: a pair is kept when
    the tensor a BatchNorm receives is the very tensor a convolution of the
    same channel count returned. Whether anything else also reads the
    convolution's output cannot be seen this way; :func:`inference_copy`
    checks the folded copy against the original for that.
    """
    produced, pairs, hooks = {}, [], []
    names = {m: n for n, m in module.named_modules()}

    def conv_hook(m, args, out):
        # The output is kept alive with its id, so that no later tensor
        # can take the id during the pass.
        produced[id(out)] = (m, out)

    def bn_hook(m, args):
        conv, _ = produced.get(id(args[0]), (None, None))
        if conv is not None and conv.out_channels == m.num_features:
            pairs.append((names[conv], names[m]))

    for m in module.modules():
        if isinstance(m, _CONV_TYPES):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, _BN_TYPES) and m.track_running_stats:
            hooks.append(m.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    # A module called twice would pair twice; each pair is folded once.
    return list(dict.fromkeys(pairs))


def _set(root, name, value):
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, value)


def inference_copy(module, x, *, rtol=1e-4, atol=1e-5):
    """A copy of a fixed ``module`` that computes the same output faster.

    Every BatchNorm that reads a convolution's output is folded into that
    convolution (its running statistics and affine parameters become the
    convolution's weight and bias: one layer fewer per pair) and, for
    4-d input, the copy runs in channels-last memory format, which oneDNN
    and cuDNN convolve faster (the Benchmarks page gives the measured
    speed-up on Lite0's frozen prefix).

    The copy is checked on ``x`` against ``module`` in eval mode: every
    output must be within ``atol + rtol * max|output|`` of the module's.
    Where it is not (another layer reads a folded convolution's output) the
    pairs are not folded and only the memory format changes, and where that
    differs too ``module`` itself is returned.

    Parameters
    ----------
    module : nn.Module
        A function of its input alone: frozen weights, BatchNorm in eval
        mode, no dropout (:class:`PrefixCache`'s prefix).
    x : Tensor
        An input batch to find the pairs and check the copy on.
    rtol, atol : float, default=1e-4, 1e-5
        The tolerance of the check, relative to each output's largest
        magnitude and absolute.

    Returns
    -------
    copy : nn.Module
        The folded copy in eval mode, or ``module``. It takes and returns
        tensors in the usual (contiguous) memory format.
    """
    # Each layer's own mode is put back (a prefix shares its layers with the
    # backbone, whose modes need not agree with the prefix's flag).
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            reference = _as_tuple(module(x))
        channels_last = x.dim() == 4
        pairs = _conv_bn_pairs(module, x)
        for fold in [True, False] if pairs else [False]:
            folded = copy.deepcopy(module).eval()
            if fold:
                for conv_name, bn_name in pairs:
                    conv = folded.get_submodule(conv_name)
                    bn = folded.get_submodule(bn_name)
                    _set(folded, conv_name, fuse_conv_bn_eval(conv, bn))
                    _set(folded, bn_name, nn.Identity())
            candidate = _Formatted(folded, channels_last)
            with torch.no_grad():
                out = _as_tuple(candidate(x))
            if len(out) == len(reference) and all(
                _close(a, b, rtol, atol) for a, b in zip(out, reference, strict=True)
            ):
                return candidate
        return module
    finally:
        for m, mode in modes:
            m.training = mode


def _close(a, b, rtol, atol):
    # Relative to the output's scale, not elementwise: folding rounds every
    # element at the scale of the largest, so an element near zero may move
    # by more than rtol of itself.
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    scale = b.abs().max() if b.numel() else 0.0
    return bool((a - b).abs().max() <= atol + rtol * scale) if b.numel() else True


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


class _Formatted(nn.Module):
    """``module`` fed channels-last input; its outputs made contiguous again."""

    def __init__(self, module, channels_last):
        super().__init__()
        self.module = module
        self.channels_last = channels_last
        if channels_last:
            self.module.to(memory_format=torch.channels_last)

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.module(x)
        if isinstance(out, tuple):
            return tuple(o.contiguous() for o in out)
        return out.contiguous()
