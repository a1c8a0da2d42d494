"""The model the estimator trains: preprocessing, backbone and a new head."""

from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from .._data import Preprocess
from ._stages import find_stages, pool_stage, resolve_stage

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
    stages : sequence of str, default=()
        Submodules of ``backbone`` whose outputs the head reads besides the
        backbone's output (see :func:`~skfastretrain.find_stages`):
        each is pooled by :func:`pool_stage` (feature maps averaged over
        space), and the head's input is the stages' pooled outputs, in the
        order given, followed by the flattened backbone output. An
        ``nn.Sequential`` stands for its last module.
    stage_gradients : bool, default=False
        Whether the training gradient flows into the backbone through the
        stages too. False passes the head their values only: the backbone
        is trained through its output, as without stages. A ridge head on
        rescaled stages puts large weights on their low-variance features,
        and a gradient through them made fine-tuning diverge (the
        Benchmarks page).

    Attributes
    ----------
    stage_widths : tuple of int
        The widths of the head input's parts, the backbone output's last;
        set by :func:`build_module` (empty on a module built otherwise).
    """

    precision = "float32"  # modules pickled before the option existed
    stages = ()
    stage_widths = ()
    stage_gradients = False
    # Set only inside ``reading_prefix_store``, for the time of a fit.
    _prefix_store = None

    def __init__(
        self,
        preprocess,
        backbone,
        head,
        *,
        precision="float32",
        stages=(),
        stage_gradients=False,
    ):
        super().__init__()
        self.preprocess = preprocess
        self.backbone = backbone
        self.head = head
        self.precision = precision
        self.stages = tuple(resolve_stage(backbone, name) for name in stages)
        self.stage_gradients = stage_gradients

    def features(self, x):
        """The head's input for raw input ``x``: pooled stages, then the
        flattened backbone output.

        Inside :meth:`reading_prefix_store` the backbone's output (and the
        stages computed before it) come from the store's lookup, unless the
        lookup returns None.
        """
        parts = self._parts(x)
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def _parts(self, x):
        # The pooled stages, in order, and the flattened backbone output.
        pooled = {}
        handles = [
            self.backbone.get_submodule(name).register_forward_hook(
                partial(_record_stage, pooled, name, self.stage_gradients)
            )
            for name in self.stages
        ]
        try:
            h = self._backbone_output(x, pooled)
        finally:
            for handle in handles:
                handle.remove()
        return [*(pooled[name] for name in self.stages), torch.flatten(h, 1)]

    def _backbone_output(self, x, pooled):
        if self._prefix_store is not None:
            found = self._prefix_store(x)
            if found is not None:
                h, stored = found
                pooled.update(stored)
                return h
        x = self.preprocess(x)
        if self.precision != "bfloat16":
            return self.backbone(x)
        if x.ndim == 4:
            # channels-last alone slowed the CPU step; with bf16 it paid
            # (the levers benchmark).
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            h = self.backbone(x)
        return h.float()

    def forward(self, x, sample_weight=None):
        # ``sample_weight`` arrives with weighted rows (skorch passes a dict
        # input as keyword arguments); the loss reads it, the model does not.
        return self.head(self.features(x))

    @contextmanager
    def reading_prefix_store(self, lookup):
        """Within the block, take the backbone's output from ``lookup``.

        ``lookup(x)`` returns ``(output, stages)`` for raw input ``x``: the
        backbone's output computed from a store of a frozen prefix's
        outputs, and a dict of the pooled outputs of the stages inside the
        prefix (the stages after it are recorded as they run), or None when
        the store no longer applies (then the backbone runs). Used by
        :class:`PrefixCache` for the time of a fit; the module is unchanged
        after the block, and a pickle never holds the lookup.

        Parameters
        ----------
        lookup : callable
            Maps a batch of raw inputs to ``(output, stages)``, or None.
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


def _record_stage(pooled, name, gradients, module, args, output):
    value = pool_stage(output)
    pooled[name] = value if gradients else value.detach()


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
    backbone,
    spec,
    X,
    n_classes,
    *,
    input_size=None,
    hidden=(),
    reinit_layers=0,
    stages=None,
):
    """Strip the backbone's classifier and attach a fresh ``n_classes`` head.

    ``X`` (a few samples in model layout) drives one dry forward pass that
    finds the head's input width and checks that the backbone takes the data.
    ``stages`` is None (the head reads the backbone's output alone), a rule
    of :func:`find_stages` or a sequence of submodule names.
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
            sample = torch.as_tensor(X[:2])
            if isinstance(stages, str):
                stages = find_stages(backbone, preprocess(sample), rule=stages)
            model.stages = tuple(resolve_stage(backbone, n) for n in stages or ())
            widths = tuple(part.shape[1] for part in model._parts(sample))
    except RuntimeError as exc:
        raise ValueError(
            f"The backbone failed on input of shape {tuple(X.shape[1:])} "
            f"(after preprocessing): {exc}"
        ) from exc
    model.train(was_training)
    model.stage_widths = widths
    width = sum(widths)
    model.head = make_head(width, n_classes, hidden)
    return model
