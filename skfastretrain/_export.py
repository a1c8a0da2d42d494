"""Deployment: a fitted estimator's model as one self-contained file.

The last step of the path. :class:`DeployedModel` wraps the fitted torch
module with what ``predict_proba`` does around it (the input layout, the
resize of images of another size to the fitted one, the scaling of uint8
pixels, the softmax), so that the exported graph takes the images a user has
and returns probabilities (a regressor's predictions), with no Python,
scikit-learn or skorch behind it.
"""

import copy
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_is_fitted
from torch import nn

__all__ = ["DeployedModel", "export_onnx", "export_torch"]

_LAYOUTS = ("auto", "NHW", "NHWC", "NCHW")
_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


class DeployedModel(nn.Module):
    """A fitted estimator's model as deployed: raw images in, probabilities out.

    It holds a float32 CPU copy of the estimator's ``module_`` in eval mode
    (without gradients) and does
    around it what :meth:`FastRetrainClassifier.predict_proba` does for an
    array: it puts the images in the model's (n, C, H, W) layout, resizes
    images of another height and width to those seen at fit (bilinear,
    antialiased, uint8 pixels rounded as :meth:`predict_proba` rounds them),
    scales uint8 pixels by 1/255, and returns the softmax of the logits. For
    a :class:`FastRetrainRegressor` it returns what its ``predict`` does,
    always as (n, n_outputs): the head's outputs times ``y_scale_`` plus
    ``y_mean_``.
    The batch size, height and width may vary from call to call.

    Parameters
    ----------
    estimator : FastRetrainClassifier or FastRetrainRegressor
        A fitted estimator. Its module is copied; the estimator is unchanged.
    layout : {"auto", "NHW", "NHWC", "NCHW"}, default="auto"
        The layout of the images the model takes: ``"NHW"`` for grayscale
        images without a channel axis, ``"NHWC"`` channels-last (as NumPy and
        PIL hold images), ``"NCHW"`` channels-first. ``"auto"`` is ``"NHW"``
        for an estimator fitted on one channel and ``"NHWC"`` otherwise.
        Ignored for an estimator fitted on feature vectors, whose model takes
        (n, n_features).
    dtype : {"uint8", "float32"}, default="uint8"
        The dtype of the pixels: uint8 in [0, 255] or float32 in [0, 1], as
        :meth:`FastRetrainClassifier.fit` reads them. Feature vectors are
        float32.

    Attributes
    ----------
    classes : list or None
        The estimator's ``classes_``, the labels of the output's columns;
        None for a regressor.
    input_layout : str
        The resolved layout (``"NF"`` for feature vectors).
    input_dtype : torch.dtype
        The dtype the model takes.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skfastretrain import DeployedModel, FastRetrainClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
    >>> y = np.repeat([0, 1], 20)
    >>> cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1))
    >>> clf = FastRetrainClassifier(cnn, max_epochs=1, random_state=0).fit(X, y)
    >>> deployed = DeployedModel(clf)
    >>> proba = deployed(torch.from_numpy(X[:5])).numpy()
    >>> bool(np.allclose(proba, clf.predict_proba(X[:5]), atol=1e-6))
    True
    """

    def __init__(self, estimator, *, layout="auto", dtype="uint8"):
        super().__init__()
        check_is_fitted(estimator)
        _check_choice("layout", layout, _LAYOUTS)
        _check_choice("dtype", dtype, _DTYPES)
        shape = tuple(estimator.input_shape_)
        # On the CPU, whatever device fitted it: the exported graph takes
        # the example input there, and runtimes place it themselves.
        self.module = copy.deepcopy(estimator.module_).float().cpu()
        # bfloat16 autocast is a training-speed setting; ONNX and CPU
        # runtimes take the float32 graph.
        self.module.precision = "float32"
        classes = getattr(estimator, "classes_", None)
        self.classes = None if classes is None else classes.tolist()
        # A regressor's head outputs standardized targets: the model maps
        # them back, as predict does.
        mean, scale = (
            (None, None)
            if classes is not None
            else (
                torch.as_tensor(np.atleast_1d(estimator.y_mean_), dtype=torch.float32),
                torch.as_tensor(np.atleast_1d(estimator.y_scale_), dtype=torch.float32),
            )
        )
        self.register_buffer("target_mean", mean)
        self.register_buffer("target_scale", scale)
        self._shape = shape
        # An inference graph: no gradients, BatchNorm on its running statistics.
        self.requires_grad_(False).eval()
        if len(shape) == 1:
            self.input_layout, self.input_dtype, self.size = "NF", torch.float32, None
            return
        channels = shape[0]
        if layout == "auto":
            layout = "NHW" if channels == 1 else "NHWC"
        if layout == "NHW" and channels != 1:
            raise ValueError(
                f"layout='NHW' has no channel axis, but the estimator was fitted "
                f"on {channels}-channel images; use 'NHWC' or 'NCHW'."
            )
        self.input_layout, self.input_dtype = layout, _DTYPES[dtype]
        self.size = shape[1:]

    @property
    def output_name(self):
        """``"probabilities"`` (a classifier's) or ``"predictions"``."""
        return "probabilities" if self.classes is not None else "predictions"

    def _output(self, x):
        outputs = self.module(x)
        if self.classes is None:
            return outputs * self.target_scale + self.target_mean
        return torch.softmax(outputs, dim=1)

    def forward(self, x):
        if self.size is None:
            return self._output(x.float())
        if self.input_layout == "NHW":
            x = x.unsqueeze(1)
        elif self.input_layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        # predict_proba resizes arrays of another size to the fitted size
        # first, as it does image files (a resize to the same size is the
        # identity), and keeps uint8 pixels uint8: rounded, then scaled.
        x = F.interpolate(
            x.float(),
            size=self.size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        if self.input_dtype == torch.uint8:
            x = x.round().clamp(0, 255) / 255.0
        return self._output(x)

    def example_input(self, batch_size=2):
        """A zero input of the layout, dtype and fitted size the model takes."""
        if self.size is None:
            return torch.zeros(batch_size, *self._shape)
        channels, height, width = self._shape
        shape = {
            "NHW": (batch_size, height, width),
            "NHWC": (batch_size, height, width, channels),
            "NCHW": (batch_size, channels, height, width),
        }[self.input_layout]
        return torch.zeros(shape, dtype=self.input_dtype)

    def dynamic_shapes(self):
        """torch.export's dynamic dimensions: the batch, and the height and
        width of images."""
        batch = torch.export.Dim("batch", min=1)
        if self.size is None:
            return ({0: batch},)
        height, width = (
            torch.export.Dim("height", min=2),
            torch.export.Dim("width", min=2),
        )
        axes = {"NHW": (1, 2), "NHWC": (1, 2), "NCHW": (2, 3)}[self.input_layout]
        return ({0: batch, axes[0]: height, axes[1]: width},)

    def metadata(self):
        """What a deployment needs besides the graph, as strings."""
        return {
            "task": "classification" if self.classes is not None else "regression",
            "classes": json.dumps(self.classes),
            "input_layout": self.input_layout,
            "input_dtype": str(self.input_dtype).removeprefix("torch."),
        }


def export_onnx(estimator, path, *, layout="auto", dtype="uint8", opset_version=18):
    """Write a fitted estimator's model as an ONNX file.

    The graph is :class:`DeployedModel`'s: the images a user has in, the
    class probabilities out (input ``"images"``, output ``"probabilities"``;
    a regressor's predictions as output ``"predictions"``),
    preprocessing inside, with a dynamic batch size, height and width. The
    labels of the output's columns are in the model's metadata
    (``"classes"``, a JSON list, null for a regressor), with ``"task"``,
    ``"input_layout"`` and
    ``"input_dtype"``. Needs the optional ``onnx`` extra
    (``pip install skfastretrain[onnx]``: onnx and onnxscript to export,
    onnxruntime to run the file).

    Parameters
    ----------
    estimator : FastRetrainClassifier or FastRetrainRegressor
        A fitted estimator.
    path : str or os.PathLike
        The file to write (``.onnx``).
    layout : {"auto", "NHW", "NHWC", "NCHW"}, default="auto"
        The layout of the input images (see :class:`DeployedModel`).
    dtype : {"uint8", "float32"}, default="uint8"
        The dtype of the input pixels (see :class:`DeployedModel`).
    opset_version : int, default=18
        The ONNX opset; 18 is the first whose ``Resize`` antialiases, as
        the model's resizes do.

    Returns
    -------
    path : str
        The file written.

    See Also
    --------
    export_torch : The same model as a ``torch.export`` program.

    Examples
    --------
    >>> import numpy as np, onnxruntime, torch
    >>> from skfastretrain import FastRetrainClassifier, export_onnx
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
    >>> y = np.repeat(["ok", "defect"], 20)
    >>> cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1))
    >>> clf = FastRetrainClassifier(cnn, max_epochs=1, random_state=0).fit(X, y)
    >>> path = export_onnx(clf, getfixture("tmp_path") / "model.onnx")
    >>> session = onnxruntime.InferenceSession(path)
    >>> proba = session.run(None, {"images": X[:3]})[0]
    >>> bool(np.allclose(proba, clf.predict_proba(X[:3]), atol=1e-5))
    True
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "export_onnx needs onnx and onnxscript: pip install skfastretrain[onnx]"
        ) from exc
    model = DeployedModel(estimator, layout=layout, dtype=dtype)
    path = os.fspath(path)
    program = torch.onnx.export(
        model,
        (model.example_input(),),
        dynamo=True,
        input_names=["images"],
        output_names=[model.output_name],
        dynamic_shapes=model.dynamic_shapes(),
        opset_version=opset_version,
        verbose=False,
    )
    for key, value in model.metadata().items():
        program.model.metadata_props[key] = value
    program.save(path)
    return path


def export_torch(estimator, path, *, layout="auto", dtype="uint8"):
    """Write a fitted estimator's model as a ``torch.export`` program.

    The program is :class:`DeployedModel`'s graph (the images a user has
    in, the class probabilities or a regressor's predictions out,
    preprocessing inside, a dynamic batch
    size, height and width), saved with :func:`torch.export.save`; load it
    with :func:`torch.export.load` and call ``.module()`` on the result. It
    needs torch, but not skfastretrain, scikit-learn or skorch. The labels
    of the output's columns are in the file's ``extra_files``
    (``"classes.json"``, null for a regressor), with the task
    (``"task.txt"``: classification or regression) and the input layout and
    dtype (``"input.json"``).

    Parameters
    ----------
    estimator : FastRetrainClassifier or FastRetrainRegressor
        A fitted estimator.
    path : str or os.PathLike
        The file to write (``.pt2``).
    layout : {"auto", "NHW", "NHWC", "NCHW"}, default="auto"
        The layout of the input images (see :class:`DeployedModel`).
    dtype : {"uint8", "float32"}, default="uint8"
        The dtype of the input pixels (see :class:`DeployedModel`).

    Returns
    -------
    path : str
        The file written.

    See Also
    --------
    export_onnx : The same model as an ONNX file.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skfastretrain import FastRetrainClassifier, export_torch
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
    >>> y = np.repeat([0, 1], 20)
    >>> cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1))
    >>> clf = FastRetrainClassifier(cnn, max_epochs=1, random_state=0).fit(X, y)
    >>> path = export_torch(clf, getfixture("tmp_path") / "model.pt2")
    >>> model = torch.export.load(path).module()
    >>> proba = model(torch.from_numpy(X[:3])).numpy()
    >>> bool(np.allclose(proba, clf.predict_proba(X[:3]), atol=1e-5))
    True
    """
    model = DeployedModel(estimator, layout=layout, dtype=dtype)
    path = os.fspath(path)
    program = torch.export.export(
        model, (model.example_input(),), dynamic_shapes=model.dynamic_shapes()
    )
    meta = model.metadata()
    extra = {
        "task.txt": meta["task"],
        "classes.json": meta["classes"],
        "input.json": json.dumps(
            {"layout": meta["input_layout"], "dtype": meta["input_dtype"]}
        ),
    }
    torch.export.save(program, path, extra_files=extra)
    return path
