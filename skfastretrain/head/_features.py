"""The feature passes of the head solve: eval-mode passes and training taps."""

import torch
from torch import nn

from .._batchnorm import is_held_in_eval
from .._data import split_weights
from .._distributed import sync_batchnorm_stats
from .._progress import progress

__all__ = ["TrainingFeatureTap", "feature_pass"]


class TrainingFeatureTap:
    """Capture the head's input in the training forwards of a module.

    A dropout layer that feeds the head directly (Lite0's and torchvision's
    classifiers) is looked through: the captured features are its input, so
    the Gram statistics hold the features predict will see instead of their
    randomly masked and rescaled copies. :meth:`pop` returns the last batch's
    features (or None) and forgets them; :meth:`remove` removes the hooks.
    """

    def __init__(self, module, head):
        self._features = None
        self._dropout_io = None
        self._handles = [head.register_forward_pre_hook(self._on_head)]
        self._handles += [
            m.register_forward_hook(self._on_dropout)
            for m in module.modules()
            if isinstance(m, nn.modules.dropout._DropoutNd)
        ]

    def _on_dropout(self, module, args, output):
        self._dropout_io = (output, args[0])

    def _on_head(self, module, args):
        features, io = args[0], self._dropout_io
        self._dropout_io = None
        if not module.training:
            return
        if io is not None and io[0] is features:
            features = io[1]
        self._features = features

    def pop(self):
        features, self._features = self._features, None
        return features

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._dropout_io = self._features = None


def _start_recalibration(module):
    # Trainable BatchNorm layers that run on batch statistics only: a held
    # one (pretrained statistics, or the frozen prefix of LayerFreezer) is
    # a fixed function and keeps its statistics.
    bns = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and all(p.requires_grad for p in m.parameters())
        and not is_held_in_eval(m)
    ]
    saved = [m.momentum for m in bns]
    for m in bns:
        # momentum=None makes the running statistics an exact average over
        # the pass instead of an exponential one.
        m.momentum = None
        m.reset_running_stats()
    return bns, saved


def feature_pass(
    net, dataset, *, recalibrate_bn=False, distributed=False, desc="head solve"
):
    """Yield ``(logits, y, weights)`` per batch of a skorch net's eval-mode pass.

    ``weights`` are the batch's sample weights where its rows carry them
    (:class:`~skfastretrain._data.WeightedRows`), else None.

    The pass runs under :func:`torch.inference_mode`, without augmentation
    (skorch's validation iterator). Callers capture the activations they need
    with forward hooks. With ``recalibrate_bn`` the trainable BatchNorm layers
    run on batch statistics while their running statistics are reset and
    re-estimated exactly over the pass. The module's mode and the layers'
    momenta are restored afterwards. With ``distributed``, ``dataset`` is
    this rank's shard and the re-estimated statistics are averaged over the
    ranks at the end of the pass. With ``net.verbose`` a progress bar named
    ``desc`` follows the pass.
    """
    was_training = net.module_.training
    net.module_.eval()
    bns, saved = _start_recalibration(net.module_) if recalibrate_bn else ([], [])
    try:
        with torch.inference_mode():
            batches = net.get_iterator(dataset, training=False)
            for Xi, yi in progress(batches, net, desc=desc):
                # A batch of one has no batch statistics: it is normalized
                # with the statistics gathered so far.
                for m in bns:
                    m.train(len(yi) > 1)
                yield net.infer(Xi), yi, split_weights(Xi)[1]
        if distributed:
            sync_batchnorm_stats(bns)
    finally:
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum
        net.module_.train(was_training)
