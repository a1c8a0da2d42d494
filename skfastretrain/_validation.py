"""Checks of FastRetrainClassifier's hyperparameters, run at fit."""

import numbers
import os

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_consistent_length,
    column_or_1d,
    validate_data,
)
from skorch.callbacks import Callback

from ._data import (
    ImageDataset,
    as_pixels,
    check_paths,
    dataset_labels,
    input_kind,
    to_model_layout,
)

__all__ = [
    "check_array_input",
    "check_fit_input",
    "check_input_size",
    "check_params",
    "check_predict_input",
    "encode_labels",
    "prefix_cache_applies",
    "resolve_device",
    "resolve_input_size",
]


def _check_fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1), got {value!r}.")
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}.")


def _check_number(name, value, *, integer=False, allow_zero=False):
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {what}, got {value!r}.")
    if not (value >= 0 if allow_zero else value > 0) or not np.isfinite(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}.")


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _check_freeze_prob(freeze_prob, max_epochs):
    if isinstance(freeze_prob, str) or np.ndim(freeze_prob) > 1:
        raise TypeError(
            f"freeze_prob must be a float or a sequence of floats, got {freeze_prob!r}."
        )
    if np.ndim(freeze_prob) == 0:
        _check_fraction("freeze_prob", freeze_prob)
        return
    if len(freeze_prob) < max_epochs:
        raise ValueError(
            f"freeze_prob has {len(freeze_prob)} values but max_epochs="
            f"{max_epochs}: give one value per epoch."
        )
    for value in freeze_prob:
        _check_fraction("every value of freeze_prob", value)


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


def _check_checkpoint(path):
    if path is None:
        return
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path or None, got {path!r}.")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or os.path.isdir(path):
        raise ValueError(
            f"checkpoint must be a file in an existing directory, got {path!r}."
        )


def resolve_device(device):
    """``"auto"`` is cuda when available, else cpu; anything else is checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"Invalid device {device!r}: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available.")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r}: there are {torch.cuda.device_count()} CUDA devices."
        )
    return str(resolved)


def check_input_size(input_size):
    """None, ``"auto"``, or (height, width) from an int or a pair of ints."""
    if input_size is None or (isinstance(input_size, str) and input_size == "auto"):
        return input_size
    if isinstance(input_size, str):
        raise ValueError(
            f"input_size must be 'auto', None, a positive int or (height, width), "
            f"got {input_size!r}."
        )
    size = np.atleast_1d(np.asarray(input_size, dtype=object))
    if (
        size.ndim != 1
        or len(size) not in (1, 2)
        or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
            for s in size
        )
    ):
        raise ValueError(
            f"input_size must be a positive int or (height, width), got {input_size!r}."
        )
    return (int(size[0]), int(size[-1]))


def check_params(est):
    """Validate ``est``'s parameters; return the resolved torch device."""
    _check_number("max_epochs", est.max_epochs, integer=True)
    _check_freeze_prob(est.freeze_prob, est.max_epochs)
    _check_choice("freeze_mode", est.freeze_mode, ("random", "prefix"))
    _check_choice("lr_schedule", est.lr_schedule, ("constant", "cosine"))
    _check_choice("precision", est.precision, ("float32", "bfloat16"))
    if isinstance(est.ridge_lambda, str) and est.ridge_lambda != "auto":
        raise TypeError(
            "ridge_lambda must be a number > 0, 'auto' or None, got "
            f"{est.ridge_lambda!r}."
        )
    if est.ridge_lambda is not None and not isinstance(est.ridge_lambda, str):
        _check_number("ridge_lambda", est.ridge_lambda)
    _check_number("head_blend", est.head_blend)
    if est.head_blend > 1:
        raise ValueError(f"head_blend must be in (0, 1], got {est.head_blend!r}.")
    _check_choice("init_head", est.init_head, ("ridge", "random"))
    _check_number("solve_every", est.solve_every, integer=True)
    _check_choice("head_update", est.head_update, ("blend", "residual"))
    _check_number("reinit_layers", est.reinit_layers, integer=True, allow_zero=True)
    if est.head_hidden is not None:
        if isinstance(est.head_hidden, (str, bytes)) or np.ndim(est.head_hidden) != 1:
            raise TypeError(
                f"head_hidden must be a sequence of ints, got {est.head_hidden!r}."
            )
        for units in est.head_hidden:
            _check_number("every value of head_hidden", units, integer=True)
    if not isinstance(est.reuse_features, bool):
        raise TypeError(f"reuse_features must be a bool, got {est.reuse_features!r}.")
    if not isinstance(est.cache_prefix, bool) and est.cache_prefix != "auto":
        raise TypeError(
            f"cache_prefix must be a bool or 'auto', got {est.cache_prefix!r}."
        )
    if est.cache_prefix is True:
        # Random freezing has no fixed prefix; augmented images never repeat;
        # bf16 autocast is not split.
        for name, value, needed in (
            ("freeze_mode", est.freeze_mode, "prefix"),
            ("augment", est.augment, None),
            ("precision", est.precision, "float32"),
        ):
            if value != needed:
                raise ValueError(
                    f"cache_prefix=True needs {name}={needed!r}, got {value!r}."
                )
        if est.regularizer in ("delta", "feature_map"):
            # Their hooks read feature maps that a stored prefix no longer
            # computes.
            raise ValueError(
                f"cache_prefix=True cannot run with regularizer={est.regularizer!r}, "
                "which reads the backbone's feature maps; use 'l2sp' or None."
            )
    if est.regularizer is not None:
        _check_choice("regularizer", est.regularizer, ("l2sp", "delta", "feature_map"))
    _check_number("reg_alpha", est.reg_alpha, allow_zero=True)
    _check_number("reg_beta", est.reg_beta, allow_zero=True)
    if est.reg_layers is not None and (
        isinstance(est.reg_layers, str)
        or not all(isinstance(name, str) for name in est.reg_layers)
    ):
        raise TypeError(
            f"reg_layers must be a sequence of layer names, got {est.reg_layers!r}."
        )
    if isinstance(est.lr, str):
        if est.lr != "auto":
            raise ValueError(f"lr must be a number > 0 or 'auto', got {est.lr!r}.")
    else:
        _check_number("lr", est.lr)
    _check_number("momentum", est.momentum, allow_zero=True)
    _check_number("weight_decay", est.weight_decay, allow_zero=True)
    _check_number("batch_size", est.batch_size, integer=True)
    _check_choice("bn_mode", est.bn_mode, ("auto", "eval", "train"))
    if est.bn_momentum is not None:
        _check_fraction("bn_momentum", est.bn_momentum)
    check_input_size(est.input_size)
    _check_number("num_workers", est.num_workers, integer=True, allow_zero=True)
    if est.pin_memory != "auto" and not isinstance(est.pin_memory, bool):
        raise ValueError(
            f"pin_memory must be 'auto' or a bool, got {est.pin_memory!r}."
        )
    if not isinstance(est.distributed, bool) and not (
        isinstance(est.distributed, str) and est.distributed == "auto"
    ):
        raise ValueError(
            f"distributed must be True, False or 'auto', got {est.distributed!r}."
        )
    _check_number("verbose", est.verbose, integer=True, allow_zero=True)
    _check_callbacks(est.callbacks)
    _check_checkpoint(est.checkpoint)
    return resolve_device(est.device)


def prefix_cache_applies(est):
    """Whether ``est`` stores its frozen prefix's output (``cache_prefix``).

    ``"auto"`` stores it wherever ``cache_prefix=True`` would be accepted,
    since the stored prefix computes the same function for less time.
    """
    if isinstance(est.cache_prefix, bool):
        return est.cache_prefix
    return (
        est.freeze_mode == "prefix"
        and est.augment is None
        and est.precision == "float32"
        and est.regularizer not in ("delta", "feature_map")
    )


def resolve_input_size(input_size, pretrained_size, native_size, device):
    """The (height, width) images are resized to inside the model, or None.

    ``"auto"`` resizes only for a backbone with a pretrained input size: on a
    GPU to that size; on a CPU to the images' own size, raised to at least
    64 px (smaller inputs leave too little of the image after the backbone's
    downsampling) and capped at the pretrained size, because every doubling
    of the side costs four times the compute. ``native_size`` is None when
    it is unknown (image files, datasets): the pretrained size is used then.
    """
    if input_size is None:
        return pretrained_size
    if not isinstance(input_size, str):
        return check_input_size(input_size)
    if pretrained_size is None:
        return None
    if str(device).startswith("cuda") or native_size is None:
        return tuple(pretrained_size)
    return tuple(
        int(min(cap, max(_CPU_MIN_SIDE, side)))
        for side, cap in zip(native_size, pretrained_size, strict=True)
    )


#: The smallest side "auto" resizes to on a CPU (see resolve_input_size).
_CPU_MIN_SIDE = 64


def check_array_input(est, X, *, reset, y=None):
    """validate_data for arrays of images or feature vectors.

    Images are validated flattened, so ``n_features_in_`` counts the values
    of one sample; integer images become uint8 (:func:`as_pixels`); sparse
    input goes straight to validate_data's error.
    """
    if not sp.issparse(X):
        # Before validate_data, which would turn integer images into floats
        # in [0, 255] where floats in [0, 1] are expected.
        X = as_pixels(np.asarray(X))
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
        flat, y = validate_data(est, flat, y, dtype=dtypes)
    else:
        flat = validate_data(est, flat, reset=False, dtype=dtypes)
    return (flat if len(shape) <= 2 else flat.reshape(shape)), y


def check_fit_input(est, X, y):
    """Validate fit's X and y for arrays, image paths and datasets."""
    kind = input_kind(X)
    if kind == "array":
        return check_array_input(est, X, reset=True, y=y)
    if kind == "paths":
        check_paths(X)
    if y is None:
        if kind != "dataset":
            raise ValueError("y is required unless X is a torch Dataset.")
        y = dataset_labels(X)
    y = column_or_1d(y, warn=True)
    check_consistent_length(X, y)
    if len(y) == 0:
        raise ValueError("Found array with 0 sample(s): X is empty.")
    return X, y


def check_predict_input(est, X):
    """Predict's input in model layout, shaped as at fit, or a dataset.

    Images of another channel count or size than at fit raise rather than
    being resized silently: the features would not be the ones trained on.
    """
    if input_kind(X) != "array":
        if input_kind(X) == "paths":
            check_paths(X)
        # Files and datasets are resized to the fitted size, as at fit.
        channels = est.net_.module_.preprocess.channels
        return ImageDataset(X, size=est.input_shape_[-2:], channels=channels)
    X, _ = check_array_input(est, X, reset=False)
    X = to_model_layout(X, expects_images=len(est.input_shape_) > 1)
    if X.shape[1:] != est.input_shape_:
        raise ValueError(
            f"X has samples of shape {X.shape[1:]} (model layout) but the "
            f"estimator was fitted on {est.input_shape_}. Resize or convert "
            "the images as at fit."
        )
    return X


def encode_labels(y):
    """Classes and labels encoded as ``0 .. k-1`` (int64); needs 2 classes."""
    check_classification_targets(y)
    encoder = LabelEncoder().fit(y)
    if len(encoder.classes_) < 2:
        raise ValueError(
            f"y has 1 class ({encoder.classes_[0]!r}); a classifier needs at "
            "least two classes."
        )
    return encoder.classes_, encoder.transform(y).astype(np.int64)
