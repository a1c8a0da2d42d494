"""Input checks for :func:`prune_filters`: estimator, data and parameters."""

import numbers

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
)

from .._classifier import FastRetrainClassifier
from .._data import input_kind
from .._validation import check_predict_input

__all__ = []


def _encode(estimator, X, y):
    if input_kind(X) != "array":
        raise TypeError("prune_filters takes X as an array of images or features.")
    data = check_predict_input(estimator, X)
    y = column_or_1d(y, warn=True)
    check_consistent_length(data, y)
    classes = estimator.classes_
    codes = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
    if not np.array_equal(classes[codes], y):
        raise ValueError("y has labels the estimator was not fitted on.")
    return data, codes.astype(np.int64)


def _check_inputs(estimator, X, y, validation, random_state):
    """Model-layout fine-tuning and validation sets with encoded labels."""
    if not isinstance(estimator, FastRetrainClassifier):
        raise TypeError(
            "prune_filters takes a fitted FastRetrainClassifier, got "
            f"{type(estimator).__name__}."
        )
    check_is_fitted(estimator)
    if getattr(estimator.module_, "stages", ()):
        # Removing a tapped block's filters would shrink a stage the head
        # reads, which the surgery does not follow.
        raise ValueError(
            "prune_filters needs a head that reads the last layer alone; the "
            f"estimator's reads the stages {list(estimator.module_.stages)}. Fit "
            "it with head=RidgeHead(stages=None)."
        )
    data, codes = _encode(estimator, X, y)
    if not isinstance(validation, numbers.Real):
        return data, codes, *_encode(estimator, *validation)
    index = np.arange(len(codes))
    try:
        fit, val = train_test_split(
            index, test_size=validation, stratify=codes, random_state=random_state
        )
    except ValueError:  # a class too small to stratify
        fit, val = train_test_split(
            index, test_size=validation, random_state=random_state
        )
    return data[fit], codes[fit], data[val], codes[val]
