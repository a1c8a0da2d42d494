"""The model the estimator trains: preprocessing, backbone and a new head."""

from contextlib import contextmanager

import torch
from torch import nn

from .._data import Preprocess

__all__ = ["FastRetrainModule", "build_module", "find_head", "first_conv"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _leaves(module):
    return [(n, m) for n, m in module.named_modules() if not list(m.children())]


def find_head(module, name=None):
    """The classifier head: ``name``, or the last leaf if it is an nn.Linear."""
    if name is not None:
        return module.get_submodule(name)
    leaves = _leaves(module)
    if leaves and isinstance(leaves[-1][1], nn.Linear):
        return leaves[-1][1]
    return None


def first_conv(module):
    """The first registered weight layer if it is a convolution, else None."""
    for _, m in _leaves(module):
        if isinstance(m, (*_CONV_TYPES, nn.Linear)):
            return m if isinstance(m, _CONV_TYPES) else None
    return None


class FastRetrainModule(nn.Module):
    """Preprocessing, a feature extractor and a linear head, in forward order.

    Parameters
    ----------
    preprocess : nn.Module
    backbone : nn.Module
        Maps preprocessed input to features (flattened after it).
    head : nn.Linear
        The classifier, solved in closed form by the ridge step.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` runs the backbone under bf16 autocast on
        channels-last images; features and head stay float32.
    """

    precision = "float32"  # modules pickled before the option existed
    # Set only inside ``reading_prefix_store``, for the time of a fit.
    _prefix_store = None

    def __init__(self, preprocess, backbone, head, *, precision="float32"):
        super().__init__()
        self.preprocess = preprocess
        self.backbone = backbone
        self.head = head
        self.precision = precision

    def features(self, x):
        """The flattened backbone output for raw input ``x``.

        Inside :meth:`reading_prefix_store` the backbone's output comes from
        the store's lookup, unless the lookup returns None.
        """
        if self._prefix_store is not None:
            h = self._prefix_store(x)
            if h is not None:
                return torch.flatten(h, 1)
        x = self.preprocess(x)
        if self.precision != "bfloat16":
            return torch.flatten(self.backbone(x), 1)
        if x.ndim == 4:
            # channels-last alone slowed the CPU step; with bf16 it paid
            # (the levers benchmark).
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            h = self.backbone(x)
        return torch.flatten(h, 1).float()

    def forward(self, x):
        return self.head(self.features(x))

    @contextmanager
    def reading_prefix_store(self, lookup):
        """Within the block, take the backbone's output from ``lookup``.

        ``lookup(x)`` returns the backbone's output for raw input ``x``
        computed from a store of a frozen prefix's outputs, or None when the
        store no longer applies (then the backbone runs). Used by
        :class:`PrefixCache` for the time of a fit; the module is unchanged
        after the block, and a pickle never holds the lookup.

        Parameters
        ----------
        lookup : callable
            Maps a batch of raw inputs to the backbone's output, or None.
        """
        previous, self._prefix_store = self._prefix_store, lookup
        try:
            yield self
        finally:
            self._prefix_store = previous

    def __getstate__(self):
        # A store read during a fit in progress is not part of the model.
        state = super().__getstate__()
        state.pop("_prefix_store", None)
        return state


def make_head(width, n_classes, hidden=()):
    """A linear head, or an MLP head with ReLU between its dense layers."""
    if not hidden:
        return nn.Linear(width, n_classes)
    layers, inputs = [], width
    for units in hidden:
        layers += [nn.Linear(inputs, units), nn.ReLU()]
        inputs = units
    return nn.Sequential(*layers, nn.Linear(inputs, n_classes))


def reinit_last_layers(backbone, n_layers):
    """Re-initialize the last ``n_layers`` conv and linear layers in place.

    TASCNet's first stage replaces the deepest layers, the most task-specific
    ones, with freshly trained ones. Every parametrized layer from the first
    re-initialized one on restarts, BatchNorm statistics included.
    """
    if not n_layers:
        return backbone
    layers = [
        m for _, m in _leaves(backbone) if isinstance(m, (*_CONV_TYPES, nn.Linear))
    ]
    if n_layers > len(layers):
        raise ValueError(
            f"reinit_layers={n_layers} but the backbone has only {len(layers)} "
            "conv and linear layers."
        )
    first = layers[-n_layers]
    reset = False
    for _, m in _leaves(backbone):
        reset = reset or m is first
        # BatchNorm after the first re-initialized layer restarts too: its
        # pretrained statistics describe activations that no longer exist.
        if reset and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return backbone


def build_module(
    backbone, spec, X, n_classes, *, input_size=None, hidden=(), reinit_layers=0
):
    """Strip the backbone's classifier and attach a fresh ``n_classes`` head.

    ``X`` (a few samples in model layout) drives one dry forward pass that
    finds the head's input width and checks that the backbone takes the data.
    """
    head = find_head(backbone)
    if head is not None:
        path = next(n for n, m in backbone.named_modules() if m is head)
        parent, _, child = path.rpartition(".")
        setattr(backbone.get_submodule(parent), child, nn.Identity())
    reinit_last_layers(backbone, reinit_layers)
    conv = first_conv(backbone)
    size = input_size if input_size is not None else spec.input_size
    preprocess = Preprocess(
        channels=None if conv is None else conv.in_channels,
        size=size,
        mean=spec.mean if X.ndim == 4 else None,
        std=spec.std if X.ndim == 4 else None,
    )
    if conv is not None and X.shape[1] not in (1, conv.in_channels):
        raise ValueError(
            f"The backbone takes {conv.in_channels}-channel images; X has "
            f"{X.shape[1]} channels."
        )
    model = FastRetrainModule(preprocess, backbone, nn.Identity())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            width = model.features(torch.as_tensor(X[:2])).shape[1]
    except RuntimeError as exc:
        raise ValueError(
            f"The backbone failed on input of shape {tuple(X.shape[1:])} "
            f"(after preprocessing): {exc}"
        ) from exc
    model.train(was_training)
    model.head = make_head(width, n_classes, hidden)
    return model
