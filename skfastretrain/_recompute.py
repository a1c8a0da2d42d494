"""Recomputation of dense layers from the residual (the predecessor method)."""

import torch
from torch import nn

from ._distributed import all_reduce_counts, all_reduce_gram
from ._gram import GramAccumulator, feature_pass
from ._solve import ridge_solve

__all__ = ["dense_layers", "recompute_dense"]


def dense_layers(head):
    """The ``nn.Linear`` layers of a head, in registration (forward) order."""
    if isinstance(head, nn.Linear):
        return [head]
    return [m for m in head.modules() if isinstance(m, nn.Linear)]


def _pullback_maps(layers, alpha):
    # E_{l-1} = E_l W_l (W_l^T W_l + alpha I)^-1 maps a layer's output error
    # to its input through the ridge pseudo-inverse of its weights. Composed
    # from the top, each map turns the output residual into that layer's
    # target, so one pass over the data serves every layer.
    maps = [None] * len(layers)
    current = torch.eye(layers[-1].out_features, dtype=torch.float64)
    for i in range(len(layers) - 1, -1, -1):
        maps[i] = current
        w = layers[i].weight.detach().double().cpu()
        eye = torch.eye(w.shape[1], dtype=torch.float64)
        current = current @ torch.linalg.solve(w.T @ w + alpha * eye, w.T).T
    return maps


def recompute_dense(
    net,
    dataset,
    layers,
    *,
    alpha=1.0,
    rate=1.0,
    keep_prob=0.9,
    generator=None,
    recalibrate_bn=False,
    distributed=False,
):
    """Correct dense layers in closed form from the softmax residual.

    With one-hot targets ``Y`` and the current softmax output ``Y_hat``, the
    top layer's correction solves the ridge problem
    ``dW = (A^T A + alpha I)^-1 A^T (Y - Y_hat)`` on its inputs ``A``; the
    residual is pulled back to each lower layer through the pseudo-inverse of
    the layer above, and every layer is solved in turn (section 2 of the
    methods). Each update is ``W <- W + rate * (M * dW)`` with a random
    keep-mask ``M``. Layers are solved bottom-up, one eval-mode pass each, so
    that every layer is fitted to the activations and residual left by the
    updates below it; no pass holds the activations. With ``distributed``,
    ``dataset`` is this rank's shard and the statistics are summed over the
    ranks before each solve.

    Returns
    -------
    train_acc : float
        Accuracy of the model before the update, over the pass.
    """
    accuracy = None
    # Bottom-up, one pass per layer: a layer's update changes the inputs of
    # every layer above it, so each is solved on activations and a residual
    # measured after the updates below it (solving all from one pass made
    # the loss rise in our tests).
    for i, layer in enumerate(layers):
        acc, train_acc = _layer_statistics(
            net,
            dataset,
            layer,
            _pullback_maps(layers[i:], alpha)[0],
            recalibrate_bn,
            distributed,
        )
        accuracy = train_acc if accuracy is None else accuracy
        with torch.no_grad():
            coef, intercept = ridge_solve(
                acc, alpha, fit_intercept=layer.bias is not None
            )
            delta = coef.T.to(layer.weight)
            mask = torch.rand(delta.shape, generator=generator) < keep_prob
            layer.weight.add_(rate * mask.to(delta) * delta)
            if layer.bias is not None:
                layer.bias.add_(rate * intercept.to(layer.bias))
    return accuracy


def _layer_statistics(net, dataset, layer, pullback, recalibrate_bn, distributed):
    captured = []
    hook = layer.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    stats, correct, seen = None, 0, 0
    try:
        batches = feature_pass(
            net, dataset, recalibrate_bn=recalibrate_bn, distributed=distributed
        )
        for logits, yi in batches:
            y = torch.as_tensor(yi, device=logits.device).long()
            onehot = nn.functional.one_hot(y, logits.shape[1]).to(torch.float64)
            residual = onehot - torch.softmax(logits.double(), dim=1)
            if stats is None:
                stats = GramAccumulator(
                    layer.in_features, layer.out_features, device=logits.device
                )
            stats.update(captured.pop(), residual @ pullback.to(residual.device))
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
    finally:
        hook.remove()
    if distributed:
        all_reduce_gram(stats)
        correct, seen = all_reduce_counts(correct, seen)
    return stats, correct / max(seen, 1)
