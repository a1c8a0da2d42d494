"""Parameter constraints, declared once for the estimator and the callbacks.

scikit-learn's ``_parameter_constraints`` vocabulary (``Interval``,
``StrOptions``, types, None): the estimator checks them in ``fit`` through
:meth:`~sklearn.base.BaseEstimator._validate_params`, the callbacks through
:func:`validate_constraints` when they initialize, so a value is accepted or
refused alike in both, and the message names the valid options. Every
interval here refuses booleans, which Python counts as integers.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
    validate_parameter_constraints,
)

__all__ = [
    "FRACTION",
    "NON_NEGATIVE",
    "NON_NEGATIVE_INT",
    "POSITIVE",
    "POSITIVE_INT",
    "RIDGE_LAMBDA",
    "UNIT_INTERVAL",
    "FractionSchedule",
    "InputSize",
    "LayerNames",
    "Number",
    "validate_constraints",
]


class Number(Interval):
    """An :class:`~sklearn.utils._param_validation.Interval` without booleans.

    ``True`` is an int to Python and would pass as ``max_epochs=1`` or
    ``lr=1.0``; numpy scalars pass like Python numbers.
    """

    def is_satisfied_by(self, val):
        if isinstance(val, (bool, np.bool_)):
            return False
        return super().is_satisfied_by(val)


#: Fractions of layers or of a momentum: [0, 1).
FRACTION = Number(Real, 0, 1, closed="left")
#: Strengths and rates that may be 0.
NON_NEGATIVE = Number(Real, 0, np.inf, closed="left")
#: Strengths and rates that must be positive and finite.
POSITIVE = Number(Real, 0, np.inf, closed="neither")
POSITIVE_INT = Number(Integral, 1, None, closed="left")
NON_NEGATIVE_INT = Number(Integral, 0, None, closed="left")
#: Steps of a blend: (0, 1].
UNIT_INTERVAL = Number(Real, 0, 1, closed="right")
#: The head solve's ridge strength, shared by the estimator and
#: :class:`~skfastretrain.callbacks.RidgeHeadSolver`.
RIDGE_LAMBDA = [POSITIVE, StrOptions({"auto"})]


class _Constraint(HasMethods):
    # scikit-learn's make_constraint takes instances of its own constraint
    # classes only; a HasMethods that asks for no method is the neutral base.
    def __init__(self):
        super().__init__([])


class FractionSchedule(_Constraint):
    """A fraction in [0, 1), or a sequence of them (one per epoch)."""

    def is_satisfied_by(self, val):
        if isinstance(val, (str, bytes)) or np.ndim(val) > 1:
            return False
        values = [val] if np.ndim(val) == 0 else list(val)
        return bool(values) and all(FRACTION.is_satisfied_by(v) for v in values)

    def __str__(self):
        return "a float in [0, 1) or a sequence of such floats"


class InputSize(_Constraint):
    """``"auto"``, None, a positive int or a (height, width) pair of them."""

    def is_satisfied_by(self, val):
        if val is None or (isinstance(val, str) and val == "auto"):
            return True
        if isinstance(val, str):
            return False
        size = np.atleast_1d(np.asarray(val, dtype=object))
        return (
            size.ndim == 1
            and len(size) in (1, 2)
            and all(POSITIVE_INT.is_satisfied_by(s) for s in size)
        )

    def __str__(self):
        return "'auto', None, a positive int or a (height, width) pair of them"


class LayerNames(_Constraint):
    """A list or tuple of submodule names (str)."""

    def is_satisfied_by(self, val):
        return isinstance(val, (list, tuple)) and all(isinstance(v, str) for v in val)

    def __str__(self):
        return "a list of submodule names (str)"


def validate_constraints(obj):
    """Check ``obj``'s parameters against its class's ``_parameter_constraints``.

    For skorch callbacks, which are not scikit-learn estimators but share
    their ``get_params``.
    """
    validate_parameter_constraints(
        type(obj)._parameter_constraints,
        obj.get_params(deep=False),
        caller_name=type(obj).__name__,
    )
