"""The estimator's ``regularizer`` values and the callbacks they stand for."""

from sklearn.base import clone
from torch import nn

from .._params import validate_constraints
from ._regularizers import L2SP, DeltaLoss, DeltaRegularizer

__all__ = ["REGULARIZERS", "reads_feature_maps", "regularizer_components"]


#: The ``regularizer`` strings of the estimator and what each stands for.
REGULARIZERS = {
    "l2sp": (L2SP, {}),
    "delta": (DeltaRegularizer, {}),
    "feature_map": (DeltaRegularizer, {"weighted": False}),
}


def reads_feature_maps(regularizer):
    """Whether ``regularizer`` (a name or a callback) hooks feature maps."""
    if isinstance(regularizer, str):
        return REGULARIZERS[regularizer][0] is DeltaRegularizer
    return isinstance(regularizer, DeltaRegularizer)


def regularizer_components(regularizer, *, head="head", prefix="", fit_head=False):
    """Callbacks and criterion adding ``regularizer`` to a skorch net.

    ``regularizer`` is None, a name of :data:`REGULARIZERS` or an
    :class:`L2SP` or :class:`DeltaRegularizer`, copied with its parameters.
    ``head`` names the head when the regularizer names none, ``prefix`` is
    put before the names of a DELTA's ``layers`` (the backbone's place in
    the module), and ``fit_head=True`` makes a DELTA fit its own head.
    Returns ``[(name, callback)]``, to add after the head-fitting callback,
    and ``nn.CrossEntropyLoss`` or a :class:`DeltaLoss` instance.
    """
    if regularizer is None:
        return [], nn.CrossEntropyLoss
    if isinstance(regularizer, str):
        if regularizer not in REGULARIZERS:
            raise ValueError(
                f"Unknown regularizer {regularizer!r}; valid names: "
                f"{', '.join(map(repr, REGULARIZERS))}."
            )
        cls, params = REGULARIZERS[regularizer]
        reg = cls(**params)
    else:
        reg = clone(regularizer)
    # Before the layer names get their prefix: the given ones are checked.
    validate_constraints(reg)
    if reg.head is None:
        reg.set_params(head=head)
    if isinstance(reg, L2SP):
        return [("regularizer", reg)], nn.CrossEntropyLoss
    if reg.layers is not None:
        reg.set_params(layers=[f"{prefix}{name}" for name in reg.layers])
    reg.set_params(fit_head=reg.fit_head or fit_head)
    return [("regularizer", reg)], DeltaLoss(nn.CrossEntropyLoss())
