"""DELTA's channel attention: how much the loss needs each channel."""

import copy

import numpy as np
import torch

from .._progress import progress
from ..linalg._targets import row_losses
from ._ridge_head import RidgeHeadSolver

__all__ = ["channel_attention"]


def channel_attention(
    net,
    dataset,
    layers,
    *,
    n_batches=4,
    temperature=5.0,
    weighted=True,
    fit_head=False,
    head=None,
):
    """Per-channel weights of ``layers``: the loss rise when a channel is zeroed.

    Zeroing channel ``c`` of a layer's output raises the mean cross-entropy
    (eval mode, ``n_batches`` batches of rows spread over ``dataset``) by
    ``d_c``; the layer's weights are ``softmax(z / temperature)`` with ``z``
    the standardized ``d`` (DELTA, section 3 of the methods). ``weighted=False``
    gives equal weights.

    DELTA measures this with a new head trained on the frozen pretrained
    backbone. ``fit_head=True`` does so in closed form: the head (``head``,
    or the last ``nn.Linear``) is ridge-solved on all of ``dataset`` for the
    measurement and restored afterwards. Leave it False when the head is
    already fitted, by a :class:`RidgeHeadSolver` running before.

    Returns
    -------
    attention : dict of str to ndarray
        The weights of each layer, summing to 1.
    """
    n, size = len(dataset), net.batch_size
    size = min(n, n_batches * (size if size and size > 0 else n))
    rows = np.linspace(0, n - 1, size).round().astype(int).tolist()
    subset = torch.utils.data.Subset(dataset, rows)  # spread over the data
    batches = list(net.get_iterator(subset, training=False))
    tile = max(1, 256 // max(len(yi) for _, yi in batches))  # rows per forward
    module, attention, was_training = net.module_, {}, net.module_.training
    saved = copy.deepcopy(module.state_dict()) if fit_head else None
    try:
        if fit_head:
            solver = RidgeHeadSolver("auto", head=head, random_state=0).initialize()
            solver.solve(net, dataset, blend=1.0, residual=False)
        module.eval()
        with torch.no_grad():
            base = _summed_ce(net, batches)
            for name in progress(layers, net, desc="DELTA attention"):
                layer = module.get_submodule(name)
                rise = (_channel_losses(net, batches, layer, tile) - base) / size
                std = rise.std(unbiased=False).item() if weighted else 0.0
                z = (rise - rise.mean()) / std if std > 0 else 0 * rise
                w = np.exp((z - z.max()).numpy() / temperature)
                attention[name] = w / w.sum()
    finally:
        if saved is not None:
            # The solve's pass may also re-estimate BatchNorm statistics.
            module.load_state_dict(saved)
        module.train(was_training)
    return attention


def _summed_ce(net, batches, layer=None, channels=(None,)):
    # Summed cross-entropy per replica j of the batches: channel channels[j]
    # of layer's output zeroed.
    k = len(channels)

    def zero(module, args, out):
        tiled = out.unsqueeze(0).expand(k, *out.shape).clone()
        index = torch.as_tensor(channels, device=out.device)
        tiled[torch.arange(k, device=out.device), :, index] = 0
        return tiled.flatten(0, 1)

    handle = None if layer is None else layer.register_forward_hook(zero)
    total = torch.zeros(k, dtype=torch.float64)
    try:
        for Xi, yi in batches:
            logits = net.infer(Xi)
            y = torch.as_tensor(yi).to(logits.device)
            y = y.repeat(k, *[1] * (y.ndim - 1))
            losses = row_losses(logits.float(), y)
            total += losses.view(k, -1).sum(1).double().cpu()
    finally:
        if handle is not None:
            handle.remove()
    return total


def _channel_losses(net, batches, layer, tile):
    """Summed cross-entropy with each channel of ``layer`` zeroed in turn."""
    shape = []
    handle = layer.register_forward_hook(lambda m, a, out: shape.append(out.shape))
    net.infer(batches[0][0])
    handle.remove()
    c = list(range(shape[0][1]))
    try:
        parts = [_summed_ce(net, batches, layer, c[i : i + tile]) for i in c[::tile]]
    except RuntimeError:  # a skip around the layer, or out of memory
        if tile == 1:
            raise
        parts = [_summed_ce(net, batches, layer, [j]) for j in c]
    return torch.cat(parts)
