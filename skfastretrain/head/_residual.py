"""Recomputation of dense layers from the residual (the predecessor method)."""

import torch
from torch import nn

from .._distributed import all_reduce_counts, all_reduce_gram
from ..linalg._gram import GramAccumulator, sum_statistics, update_folds
from ..linalg._solve import ridge_solve, select_lambda
from ..linalg._targets import is_regression
from ._features import feature_pass

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
    n_folds=5,
    pullback_alpha=1.0,
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

    With ``alpha="auto"`` each layer's strength is chosen on its own by
    :func:`select_lambda` over ``n_folds`` folds of that layer's statistics
    (the layers' inputs differ in scale and width, so one strength does not
    suit all), and the pull-back maps use ``pullback_alpha``.

    Returns
    -------
    train_acc : float
        Accuracy of the model before the update, over the pass.
    alphas : list of float
        The ridge strength used for each layer, bottom-up.
    """
    auto = isinstance(alpha, str)
    if not auto:
        pullback_alpha = alpha
    accuracy, alphas = None, []
    # Bottom-up, one pass per layer: a layer's update changes the inputs of
    # every layer above it, so each is solved on activations and a residual
    # measured after the updates below it (solving all from one pass made
    # the loss rise in our tests).
    for i, layer in enumerate(layers):
        folds, train_acc = _layer_statistics(
            net,
            dataset,
            layer,
            _pullback_maps(layers[i:], pullback_alpha)[0],
            recalibrate_bn,
            n_folds if auto else 1,
            distributed,
        )
        accuracy = train_acc if accuracy is None else accuracy
        total = sum_statistics(folds)
        layer_alpha = select_lambda(folds)[0] if auto else alpha
        alphas.append(float(layer_alpha))
        with torch.no_grad():
            coef, intercept = ridge_solve(
                total, layer_alpha, fit_intercept=layer.bias is not None
            )
            delta = coef.T.to(layer.weight)
            mask = torch.rand(delta.shape, generator=generator) < keep_prob
            layer.weight.add_(rate * mask.to(delta) * delta)
            if layer.bias is not None:
                layer.bias.add_(rate * intercept.to(layer.bias))
    return accuracy, alphas


def _layer_statistics(
    net, dataset, layer, pullback, recalibrate_bn, n_folds, distributed
):
    captured = []
    hook = layer.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    folds, correct, seen = None, 0, 0
    try:
        batches = feature_pass(
            net, dataset, recalibrate_bn=recalibrate_bn, distributed=distributed
        )
        # The residual update is unweighted: it has no sample_weight path.
        for logits, yi, _ in batches:
            if is_regression(yi):
                raise ValueError(
                    "update='residual' corrects the head by the residual of its "
                    "softmax and needs integer class labels; a regression head "
                    "takes update='blend'."
                )
            y = torch.as_tensor(yi, device=logits.device).long()
            onehot = nn.functional.one_hot(y, logits.shape[1]).to(torch.float64)
            residual = onehot - torch.softmax(logits.double(), dim=1)
            if folds is None:
                folds = [
                    GramAccumulator(
                        layer.in_features, layer.out_features, device=logits.device
                    )
                    for _ in range(n_folds)
                ]
            target = residual @ pullback.to(residual.device)
            update_folds(folds, seen, captured.pop(), target)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
    finally:
        hook.remove()
    if distributed:
        for fold in folds:
            all_reduce_gram(fold)
        correct, seen = all_reduce_counts(correct, seen)
    return folds, correct / max(seen, 1)
