"""RidgeHead and SGDEpoch: parameter objects that GridSearchCV reaches."""

import pytest
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from skfastretrain import FastRetrainClassifier, RidgeHead, SGDEpoch
from skfastretrain._settings import resolve_head, resolve_sgd


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("ridge", RidgeHead()),
        ("residual", RidgeHead(update="residual")),
        (RidgeHead(blend=1.0), RidgeHead(blend=1.0)),
    ],
)
def test_head_shortcuts(head, expected):
    assert resolve_head(head).get_params() == expected.get_params()


def test_sgd_none_is_the_defaults():
    assert resolve_sgd(None).get_params() == SGDEpoch().get_params()


def test_nested_parameters_are_reachable():
    est = FastRetrainClassifier(head=RidgeHead(), sgd=SGDEpoch())
    est.set_params(head__blend=1.0, sgd__momentum=0.5)
    params = clone(est).get_params()
    assert (params["head__blend"], params["sgd__momentum"]) == (1.0, 0.5)
    # clone copies the components: the search never changes the given one.
    assert clone(est).head is not est.head


@pytest.mark.parametrize(
    ("component", "match"),
    [
        (RidgeHead(update="sum"), "'update' parameter of RidgeHead"),
        (SGDEpoch(bn_mode="frozen"), "'bn_mode' parameter of SGDEpoch"),
        (RidgeHead(stages="every"), "'stages' parameter of RidgeHead"),
    ],
)
def test_components_validate_themselves(component, match):
    resolve = resolve_head if isinstance(component, RidgeHead) else resolve_sgd
    with pytest.raises(InvalidParameterError, match=match):
        resolve(component)


@pytest.mark.parametrize(
    ("hidden", "widths"), [(None, ()), ([8], (8,)), ((16, 8), (16, 8))]
)
def test_hidden_widths(hidden, widths):
    assert RidgeHead(hidden=hidden).hidden_widths() == widths


@pytest.mark.parametrize("hidden", [[8, 0], ["8"], [1.5]])
def test_hidden_widths_refuse_non_positive_ints(hidden):
    with pytest.raises(TypeError, match="hidden must be a sequence of ints"):
        RidgeHead(hidden=hidden).hidden_widths()


@pytest.mark.parametrize(
    ("params", "widths", "solved"),
    [
        ({}, (16, 64), (16, 64)),
        ({}, (64,), None),  # the last layer alone: nothing to scale
        ({"hidden": [8]}, (16, 64), None),  # the solved layer reads hidden units
        ({"update": "residual"}, (16, 64), None),
    ],
)
def test_solves_stages(params, widths, solved):
    assert RidgeHead(**params).solves_stages(widths) == solved
