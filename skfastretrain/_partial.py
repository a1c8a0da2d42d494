"""partial_fit's steps: the rows and labels of a call, checked and encoded,
and a head that grows with new classes.

The head solve itself is :meth:`RidgeHeadSolver.partial_solve`; the first
call on an unfitted estimator builds the model as ``fit`` does (resolve,
build, pipeline, net) and trains nothing.
"""

import dataclasses

import numpy as np
import torch
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_consistent_length, column_or_1d
from skorch.dataset import Dataset as SkorchDataset
from torch import nn

from ._data import ImageDataset, WeightedRows, input_kind
from ._validation import (
    _image_source,
    check_fit_input,
    check_predict_input,
    row_weights,
)
from .callbacks import RidgeHeadSolver

__all__ = [
    "add_classes",
    "encode_new_rows",
    "first_call_input",
    "head_solver",
    "new_rows_data",
]


def _labels(y):
    y = column_or_1d(y, warn=True)
    check_classification_targets(y)
    return y


def _codes(y, classes):
    """``y``'s positions in ``classes``; every label must be one of them."""
    missing = np.setdiff1d(np.unique(y), classes)
    if len(missing):
        raise ValueError(
            f"y holds the labels {missing.tolist()}, which are not in classes "
            f"{np.asarray(classes).tolist()}: pass every label a call may hold "
            "in classes (on the first call, or with the call that adds it)."
        )
    index = {label: i for i, label in enumerate(classes.tolist())}
    return np.array([index[label] for label in y.tolist()], dtype=np.int64)


def first_call_input(est, X, y, classes, sample_weight=None):
    """The :class:`FitInput` of a first ``partial_fit`` call: labels coded
    by their position in ``unique_labels(classes)``, as scikit-learn's
    ``partial_fit`` convention has it, whatever the call's ``y`` holds, and
    the rows' weights (``sample_weight`` times ``class_weight``)."""
    if classes is None:
        raise ValueError(
            "classes must be passed on the first call to partial_fit: the "
            "head needs one output per class before it sees every class."
        )
    classes = unique_labels(classes)
    if len(classes) < 2:
        raise ValueError(
            f"classes holds {len(classes)} label; a classifier needs at least two."
        )
    y = _labels(y)
    fit_input = check_fit_input(
        est, X, y, sample_weight=sample_weight, class_weight=est.class_weight
    )
    seen = fit_input.classes[fit_input.y]
    return dataclasses.replace(fit_input, y=_codes(seen, classes), classes=classes)


def head_solver(net):
    """The net's :class:`RidgeHeadSolver`, or an error saying why none."""
    for _, callback in net.callbacks_:
        if isinstance(callback, RidgeHeadSolver):
            return callback
    raise ValueError(
        "partial_fit solves the head in closed form, but this estimator has "
        "no head solve (ridge_lambda=None)."
    )


def encode_new_rows(est, y, classes):
    """A later call's labels as codes, and the labels it adds.

    New labels of ``classes`` (those not in ``classes_``) follow the known
    ones, sorted, so that every known class keeps its output. Returns
    ``(codes, new)``; :func:`add_classes` then gives the new labels their
    outputs.
    """
    y = _labels(y)
    known = est.classes_
    new = np.empty(0, dtype=known.dtype)
    if classes is not None:
        new = np.setdiff1d(unique_labels(classes), known)
    allowed = np.concatenate([known, new]) if len(new) else known
    return _codes(y, allowed), new


def add_classes(est, new):
    """Append ``new`` labels to ``classes_``, each with a head output whose
    weights are zero until the solve sets them."""
    if len(new):
        _grow_head(est.net_.module_, len(new))
        est.classes_ = np.concatenate([est.classes_, new])


def _grow_head(module, n_new):
    old = module.head
    head = nn.Linear(
        old.in_features,
        old.out_features + n_new,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        head.weight.zero_()
        head.weight[: old.out_features] = old.weight
        if old.bias is not None:
            head.bias.zero_()
            head.bias[: old.out_features] = old.bias
    module.head = head


def new_rows_data(est, X, y, codes, sample_weight=None):
    """A later call's images as ``predict`` reads them, with their codes:
    arrays in model layout (resized to the fitted size), other inputs as an
    :class:`ImageDataset` carrying the codes, and either as
    :class:`WeightedRows` with the rows' weights (``sample_weight`` times
    ``class_weight`` of their labels ``y``) when there are any. Returns
    ``(data, targets)``."""
    kind = input_kind(X)
    if kind == "array":
        data, targets = check_predict_input(est, X), codes
        check_consistent_length(data, codes)
    else:
        source, _ = _image_source(X, kind)
        check_consistent_length(source, codes)
        channels = est.net_.module_.preprocess.channels
        size = est.input_shape_[-2:]
        data, targets = ImageDataset(source, codes, size=size, channels=channels), None
    weights = row_weights(sample_weight, est.class_weight, _labels(y))
    if weights is None:
        return data, targets
    rows = data if targets is None else SkorchDataset(data, targets)
    return WeightedRows(rows, weights), None
