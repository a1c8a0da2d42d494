"""The shared constraints of _params.py, against the values they must take."""

from numbers import Real

import numpy as np
import pytest
from sklearn.utils._param_validation import Interval

from skfastretrain._params import (
    FRACTION,
    POSITIVE,
    POSITIVE_INT,
    FractionSchedule,
    InputSize,
    LayerNames,
)


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_numbers_refuse_booleans(value):
    # scikit-learn's own Interval takes True as 1; ours refuses it.
    assert Interval(Real, 0, None, closed="neither").is_satisfied_by(True)
    assert not POSITIVE.is_satisfied_by(value)
    assert not POSITIVE_INT.is_satisfied_by(value)


@pytest.mark.parametrize(
    "value", [0.5, np.float32(0.5), np.float16(0.5), np.float64(1e-9), 3, np.int8(3)]
)
def test_numpy_scalars_pass_like_python_numbers(value):
    assert POSITIVE.is_satisfied_by(value)


@pytest.mark.parametrize("value", [0.0, -1.0, np.inf, np.nan, "1"])
def test_positive_is_finite_and_above_zero(value):
    assert not POSITIVE.is_satisfied_by(value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0.0, True),
        (np.float32(0.99), True),
        (1.0, False),
        ([0.5, 0.25, 0.0], True),
        ((0.5, np.float32(0.1)), True),
        ([0.5, 1.0], False),
        ([], False),
        ("0.5", False),
        ([[0.5]], False),
        (True, False),
    ],
)
def test_fraction_schedule(value, ok):
    assert FractionSchedule().is_satisfied_by(value) is ok
    assert FRACTION.is_satisfied_by(value) is (ok and np.ndim(value) == 0)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("auto", True),
        (None, True),
        (64, True),
        (np.int64(64), True),
        ((32, 48), True),
        ([32], True),
        ("Auto", False),
        (0, False),
        ((32, 0), False),
        ((32, 32, 3), False),
        (32.0, False),
        (True, False),
    ],
)
def test_input_size(value, ok):
    assert InputSize().is_satisfied_by(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [(["2", "5"], True), (("layer4",), True), ("2", False), ([2], False)],
)
def test_layer_names(value, ok):
    assert LayerNames().is_satisfied_by(value) is ok
