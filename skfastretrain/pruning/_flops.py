"""Model size for :func:`prune_filters`: parameter and multiply-accumulate counts.

:func:`count_params` and :func:`count_flops` measure a network before and
after pruning, for :class:`PruningReport`.
"""

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_params"]


def count_params(module):
    """Number of parameters (trainable or not) of ``module``.

    Parameters
    ----------
    module : nn.Module

    Returns
    -------
    n : int

    Examples
    --------
    >>> from torch import nn
    >>> from skfastretrain.pruning import count_params
    >>> count_params(nn.Conv2d(3, 8, 3))  # 8 * 3 * 3 * 3 weights + 8 biases
    224
    """
    return int(sum(p.numel() for p in module.parameters()))


def count_flops(module, input_shape):
    """Multiply-accumulates of the convolutions and matrix products for one sample.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (half its
    floating-point operations): a convolution costs
    ``out_h * out_w * out_channels * (in_channels / groups) * kh * kw``
    (likewise in 1-D and 3-D and transposed), a linear layer or matrix
    product ``in_features * out_features`` per output row; biases,
    normalization, activations and pooling are not counted.

    Parameters
    ----------
    module : nn.Module
        Run once in eval mode on zeros (its modes are restored afterwards).
    input_shape : tuple of int
        Shape of one sample, without the batch axis (for a fitted
        :class:`FastRetrainClassifier`, its ``input_shape_``).

    Returns
    -------
    macs : int

    Examples
    --------
    >>> from torch import nn
    >>> from skfastretrain.pruning import count_flops
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(),
    ...                       nn.Linear(4 * 8 * 8, 10))
    >>> count_flops(model, (1, 8, 8))  # 8*8*4*1*3*3 + 256*10
    4864
    """
    modes = {m: m.training for m in module.modules()}
    param = next(module.parameters(), None)
    device = param.device if param is not None else "cpu"
    dtype = param.dtype if param is not None and param.is_floating_point() else None
    try:
        module.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        for m, mode in modes.items():
            m.training = mode
    # torch counts a multiply-accumulate as two floating-point operations.
    return int(counter.get_total_flops() // 2)
