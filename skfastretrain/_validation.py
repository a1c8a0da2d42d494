"""Checks of fit and predict input, and of parameters beyond their constraints.

The declared constraints (``_params.py``) check each parameter alone; here
are the checks between parameters. What the checked values then mean for the
run (the device, the input size, which steps apply) is decided in
``_config.py``.
"""

import dataclasses

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_array,
    check_consistent_length,
    column_or_1d,
    validate_data,
)
from skorch.callbacks import Callback

from ._data import (
    FitInput,
    ImageDataset,
    as_pixels,
    check_paths,
    dataset_labels,
    input_kind,
    resize_images,
    to_model_layout,
)
from ._settings import reads_feature_maps
from .datasets._image_folder import scan_image_folder
from .datasets._image_list import check_image_list, warn_if_above_one

__all__ = [
    "check_array_input",
    "check_fit_input",
    "check_freeze_schedule",
    "check_params",
    "check_predict_input",
    "row_weights",
]


def check_freeze_schedule(freeze_prob, max_epochs):
    """A sequence ``freeze_prob`` must give one value per epoch."""
    if np.ndim(freeze_prob) == 1 and len(freeze_prob) < max_epochs:
        raise ValueError(
            f"freeze_prob has {len(freeze_prob)} values but max_epochs="
            f"{max_epochs}: give one value per epoch."
        )


def _is_callback(cb):
    return isinstance(cb, Callback) or (
        isinstance(cb, type) and issubclass(cb, Callback)
    )


def _check_callbacks(callbacks):
    if callbacks is None:
        return
    if not isinstance(callbacks, (list, tuple)) or not all(
        _is_callback(cb)
        or (
            isinstance(cb, tuple)
            and len(cb) == 2
            and isinstance(cb[0], str)
            and _is_callback(cb[1])
        )
        for cb in callbacks
    ):
        raise TypeError(
            "callbacks must be a list of skorch callbacks or (name, callback) "
            f"pairs, or None; got {callbacks!r}."
        )


def check_params(est, head, sgd):
    """What the declared constraints of ``est`` cannot say alone.

    ``head`` and ``sgd`` are the resolved :class:`RidgeHead` and
    :class:`SGDEpoch` of ``est``.
    """
    head.hidden_widths()
    check_freeze_schedule(est.freeze_prob, est.max_epochs)
    if sgd.cache_prefix is True:
        # Random freezing has no fixed prefix; augmented images never repeat;
        # bf16 autocast is not split.
        for name, value, needed in (
            ("freeze_mode", est.freeze_mode, "prefix"),
            ("augment", sgd.augment, None),
            ("precision", est.precision, "float32"),
        ):
            if value != needed:
                raise ValueError(
                    f"SGDEpoch(cache_prefix=True) needs {name}={needed!r}, got "
                    f"{value!r}."
                )
        if reads_feature_maps(est.regularizer):
            # Their hooks read feature maps that a stored prefix no longer
            # computes.
            raise ValueError(
                "SGDEpoch(cache_prefix=True) cannot run with a DELTA or "
                f"feature-map regularizer ({est.regularizer!r}), which reads "
                "the backbone's feature maps; use 'l2sp' or None."
            )
    _check_callbacks(est.callbacks)


def _as_array(X):
    """``np.asarray(X)`` with a message for the ragged input it refuses."""
    try:
        return np.asarray(X)
    except ValueError as exc:
        raise ValueError(
            f"X cannot be read as one array ({exc}). Its rows must have one "
            "length; images of different sizes can be passed as a list of "
            "arrays, tensors or PIL images."
        ) from exc


def check_array_input(est, X, *, reset, y=None, check_features=True, regression=False):
    """validate_data for arrays of images or feature vectors.

    Images are validated flattened, so ``n_features_in_`` counts the values
    of one sample; integer images become uint8 (:func:`as_pixels`); float
    images above 1 warn; sparse input goes straight to validate_data's
    error. ``check_features=False`` leaves out the ``n_features_in_`` check,
    for images that predict resizes. ``regression`` takes ``y`` as numeric
    targets, one or several columns.
    """
    if not sp.issparse(X):
        # Before validate_data, which would turn integer images into floats
        # in [0, 255] where floats in [0, 1] are expected.
        X = as_pixels(_as_array(X))
    if X.dtype.kind in "bUS":
        # validate_data would turn booleans into 0/1 pixels (near black if
        # read as intensities, white if read as floats) and strings of digits
        # into numbers.
        raise TypeError(
            f"X has dtype {X.dtype}; pass real numbers (integer images in "
            "[0, 255], float images or float feature vectors). For a boolean "
            "mask, pass X.astype(np.float32) to get 0 and 1."
        )
    shape = X.shape
    flat = X if len(shape) <= 2 else X.reshape(shape[0], int(np.prod(shape[1:])))
    dtypes = [np.float32, np.float64, np.uint8]
    if reset:
        targets = {"multi_output": True, "y_numeric": True} if regression else {}
        flat, y = validate_data(est, flat, y, dtype=dtypes, **targets)
    elif check_features:
        flat = validate_data(est, flat, reset=False, dtype=dtypes)
    else:
        flat = check_array(flat, dtype=dtypes, input_name="X")
    if len(shape) > 2 and flat.dtype.kind == "f":
        warn_if_above_one(float(flat.max()))
    return (flat if len(shape) <= 2 else flat.reshape(shape)), y


def _image_source(X, kind):
    """Paths, image list or dataset ready for ImageDataset; a folder's
    paths and class names as labels."""
    labels = None
    if kind == "folder":
        X, target, names = scan_image_folder(X)
        kind, labels = "paths", names[target]
    if kind == "paths":
        check_paths(X)
    elif kind == "images":
        X = check_image_list(X)
    return X, labels


def check_fit_input(
    est, X, y, *, sample_weight=None, class_weight=None, regression=False
):
    """Fit's X and y, checked and classified once, as a :class:`FitInput`.

    Arrays, image paths, folders, image lists and datasets; the labels are
    checked as classification targets and encoded. ``sample_weight`` (one
    non-negative, finite weight per row, not all zero) and ``class_weight``
    (None, ``"balanced"`` or a dict, with scikit-learn's meaning) combine
    into the rows' weights; None when both are None.

    With ``regression``, ``y`` holds real targets of one or several columns
    (finite): they are standardized, each column by its (weighted) mean and
    standard deviation, so that one ridge strength and one learning rate
    suit targets of any scale. ``class_weight`` must then be None.
    """
    if regression:
        fit_input = _fit_input(est, X, y, regression=True)
        weights = row_weights(sample_weight, None, fit_input.y)
        return _standardized(fit_input, weights)
    fit_input = _fit_input(est, X, y)
    labels = fit_input.classes[fit_input.y]
    weights = row_weights(sample_weight, class_weight, labels)
    if weights is None:
        return fit_input
    return dataclasses.replace(fit_input, sample_weight=weights)


def _regression_targets(y):
    """Real targets, checked (numbers, finite, 1-D or 2-D, two rows or
    more: one row has no spread to standardize by) as float64."""
    y = check_array(
        y, ensure_2d=False, dtype=np.float64, input_name="y", ensure_min_samples=2
    )
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}.")
    if y.ndim == 2 and y.shape[1] == 0:
        raise ValueError("y has no columns: give at least one target.")
    return y


def _standardized(fit_input, weights):
    """``fit_input`` with its targets standardized and ``weights`` set."""
    y = fit_input.y
    rows = y.reshape(len(y), -1)
    mean = np.average(rows, axis=0, weights=weights)
    scale = np.sqrt(np.average((rows - mean) ** 2, axis=0, weights=weights))
    # A constant target is centred only: its scale stays 1.
    scale = np.where(scale > 0, scale, 1.0)
    shape = () if y.ndim == 1 else mean.shape
    return dataclasses.replace(
        fit_input,
        y=((rows - mean) / scale).astype(np.float32),
        sample_weight=weights,
        target_mean=mean.reshape(shape),
        target_scale=scale.reshape(shape),
    )


def row_weights(sample_weight, class_weight, labels):
    """The rows' weights, ``sample_weight`` (checked: one non-negative,
    finite weight per row) times ``class_weight``'s weight of their
    ``labels``; None when both are None. Weights summing to zero raise."""
    if sample_weight is None and class_weight is None:
        return None
    weights = np.ones(len(labels))
    if sample_weight is not None:
        weights = _check_sample_weight(
            sample_weight, labels, dtype=np.float64, ensure_non_negative=True
        )
    if class_weight is not None:
        weights = weights * compute_sample_weight(class_weight, labels)
    if not weights.sum() > 0:
        raise ValueError(
            "The rows' weights (sample_weight times class_weight) sum to zero: "
            "at least one row needs a positive weight."
        )
    return weights


def _fit_input(est, X, y, *, regression=False):
    kind = input_kind(X)
    if kind == "array":
        X, y = check_array_input(est, X, reset=True, y=y, regression=regression)
        if regression:
            return FitInput(kind, X, _regression_targets(y), None)
        return FitInput(kind, X, *_encoded(y))
    if kind == "folder" and regression:
        raise ValueError(
            "A folder's labels are the names of its class subfolders, not "
            "regression targets: pass the image paths with y."
        )
    if kind == "folder" and y is not None:
        raise ValueError(
            "y must be None when X is a folder: the labels are the names of "
            "its class subfolders. To give other labels, pass the image "
            "paths (load_image_folder(folder).filenames) with y."
        )
    X, labels = _image_source(X, kind)
    if labels is not None:
        y = labels
    elif y is None:
        if kind != "dataset":
            raise ValueError(
                "y is required unless X is a folder of class subfolders or a "
                "torch Dataset."
            )
        y = dataset_labels(X)
    kind = "paths" if kind == "folder" else kind
    if regression:
        y = _regression_targets(y)
        check_consistent_length(X, y)
        return FitInput(kind, X, y, None)
    y = column_or_1d(y, warn=True)
    check_consistent_length(X, y)
    if len(y) == 0:
        raise ValueError("Found array with 0 sample(s): X is empty.")
    return FitInput(kind, X, *_encoded(y))


_CHANNEL_NAMES = {1: "1-channel (grayscale)", 3: "3-channel (RGB)"}
_CONVERSIONS = {
    1: "grayscale, e.g. with PIL's image.convert('L')",
    3: "RGB, e.g. with PIL's image.convert('RGB') or np.repeat(X[..., None], "
    "3, axis=-1) for grayscale arrays",
}


def _check_image_array(est, X):
    """Predict's image array as at fit: same channels, resized to the fitted
    height and width as image files are."""
    X, _ = check_array_input(est, X, reset=False, check_features=False)
    fitted = est.input_shape_[0]
    if X.ndim == 4 and X.shape[1] != fitted and X.shape[3] == fitted:
        X = X.transpose(0, 3, 1, 2)  # channels-last, told by the fitted count
    X = to_model_layout(X, expects_images=True)
    if X.shape[1] != fitted:
        got = _CHANNEL_NAMES.get(X.shape[1], f"{X.shape[1]}-channel")
        raise ValueError(
            f"The estimator was fitted on {_CHANNEL_NAMES.get(fitted, fitted)} "
            f"images, got {got} images; convert them to "
            f"{_CONVERSIONS.get(fitted, f'{fitted} channels')}."
        )
    if X.shape[2:] != est.input_shape_[1:]:
        X = resize_images(X, est.input_shape_[1:])
    return X


def check_predict_input(est, X):
    """Predict's input in model layout, shaped as at fit, or a dataset.

    Image arrays of another height and width than at fit are resized to it,
    as image files and lists are; other channel counts raise, and feature
    vectors must have the features seen at fit.
    """
    kind = input_kind(X)
    if kind != "array":
        X, _ = _image_source(X, kind)
        # Files, lists and datasets are resized to the fitted size, as at fit.
        channels = est.net_.module_.preprocess.channels
        return ImageDataset(X, size=est.input_shape_[-2:], channels=channels)
    if not sp.issparse(X):
        X = _as_array(X)
        if X.ndim >= 3 and len(est.input_shape_) == 3:
            return _check_image_array(est, X)
    X, _ = check_array_input(est, X, reset=False)
    X = to_model_layout(X, expects_images=len(est.input_shape_) > 1)
    if X.shape[1:] != est.input_shape_:
        raise ValueError(
            f"X has samples of shape {X.shape[1:]} (model layout) but the "
            f"estimator was fitted on {est.input_shape_}. Resize or convert "
            "the images as at fit."
        )
    return X


def _encoded(y):
    """Labels encoded as ``0 .. k-1`` (int64) and the classes; needs 2 classes."""
    check_classification_targets(y)
    encoder = LabelEncoder().fit(y)
    if len(encoder.classes_) < 2:
        raise ValueError(
            f"y has 1 class ({encoder.classes_.tolist()[0]!r}); a classifier needs at "
            "least two classes."
        )
    return encoder.transform(y).astype(np.int64), encoder.classes_
