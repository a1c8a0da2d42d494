"""Deployment: DeployedModel, export_onnx and export_torch against the
estimator's own predict_proba (a regressor's predict)."""

import json
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import make_mlp, tiny_cnn_classifier, tiny_cnn_regressor
from sklearn.exceptions import NotFittedError

from skfastretrain import (
    DeployedModel,
    FastRetrainClassifier,
    export_onnx,
    export_torch,
)
from skfastretrain.datasets import load_fashion_mnist


def _onnx_proba(path, X):
    session = onnxruntime.InferenceSession(str(path))
    return session.run(None, {"images": X})[0]


def _torch_proba(path, X):
    return torch.export.load(path).module()(torch.from_numpy(X)).numpy()


@pytest.fixture(scope="module")
def lite0_fashion():
    """Pretrained Lite0 fitted on the bundled Fashion-MNIST subset, and its
    bundled test images."""
    X, y = load_fashion_mnist(source="bundled", return_X_y=True)
    X_test, _ = load_fashion_mnist(source="bundled", split="test", return_X_y=True)
    clf = FastRetrainClassifier(
        input_size=32, max_epochs=1, random_state=0, verbose=0, device="cpu"
    ).fit(X[:200], y[:200])
    return clf, X_test[:64]


@pytest.mark.parametrize("export", ["onnx", "torch"])
def test_lite0_export_equals_predict_proba_on_bundled_test_images(
    lite0_fashion, tmp_path, export
):
    clf, X = lite0_fashion
    write, run = {
        "onnx": (export_onnx, _onnx_proba),
        "torch": (export_torch, _torch_proba),
    }[export]
    path = write(clf, tmp_path / "model")
    expected = clf.predict_proba(X)
    # Batch sizes other than the one traced: the batch axis is dynamic.
    for rows in (slice(0, 1), slice(1, 64)):
        np.testing.assert_allclose(
            run(path, X[rows]), expected[rows], rtol=0, atol=1e-5
        )


@pytest.fixture(scope="module")
def color_cnn():
    """A small CNN fitted on 3-channel 8x8 images, channels-last uint8."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(60, 8, 8, 3), dtype=np.uint8)
    y = np.repeat(["a", "b", "c"], 20)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)
    )
    return FastRetrainClassifier(cnn, max_epochs=1, random_state=0).fit(X, y), X


def _in_layout(X_nhwc, layout):
    return {
        "NHWC": X_nhwc,
        "NCHW": X_nhwc.transpose(0, 3, 1, 2),
    }[layout]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_deployed_model_takes_each_layout_and_dtype(color_cnn, layout, dtype):
    clf, X = color_cnn
    X = np.ascontiguousarray(_in_layout(X, layout))
    if dtype == "float32":
        X = X.astype(np.float32) / 255
    model = DeployedModel(clf, layout=layout, dtype=dtype)
    proba = model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=0, atol=1e-6)
    assert model.classes == ["a", "b", "c"]


def test_auto_layout_is_channels_last_for_color_and_nhw_for_gray(color_cnn, gray_cnn):
    assert DeployedModel(color_cnn[0]).input_layout == "NHWC"
    assert DeployedModel(gray_cnn).input_layout == "NHW"
    with pytest.raises(ValueError, match="layout='NHW' has no channel axis"):
        DeployedModel(color_cnn[0], layout="NHW")


@pytest.fixture(scope="module")
def gray_cnn(digit_images):
    X, y, _, _ = digit_images
    return tiny_cnn_classifier().fit(X[:200], y[:200])


@pytest.mark.parametrize("export", ["onnx", "torch"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("size", [(5, 7), (12, 12)])
def test_images_of_another_size_are_resized_as_predict_does(
    gray_cnn, tmp_path, export, dtype, size
):
    rng = np.random.default_rng(1)
    other = rng.integers(0, 256, size=(10, *size), dtype=np.uint8)
    if dtype == "float32":
        other = other.astype(np.float32) / 255
    write, run = {
        "onnx": (export_onnx, _onnx_proba),
        "torch": (export_torch, _torch_proba),
    }[export]
    proba = run(write(gray_cnn, tmp_path / "model", dtype=dtype), other)
    # uint8 pixels are rounded after the resize, as predict_proba rounds
    # them. Resizing integers lands on many exact halves, and onnxruntime's
    # Resize differs from torch's by ~1e-7 (measured), enough to round a
    # few such pixels the other way: one intensity level, which moved a
    # probability by up to 7.3e-4 here.
    atol = 2e-3 if (export, dtype) == ("onnx", "uint8") else 1e-5
    np.testing.assert_allclose(proba, gray_cnn.predict_proba(other), rtol=0, atol=atol)


def test_feature_vectors(digits, tmp_path):
    X, y = digits
    X = (X / 16).astype(np.float32)
    clf = FastRetrainClassifier(make_mlp, max_epochs=1, random_state=0).fit(X, y)
    model = DeployedModel(clf)
    assert model.input_layout == "NF"
    path = export_torch(clf, tmp_path / "model.pt2")
    np.testing.assert_allclose(
        _torch_proba(path, X[:9]), clf.predict_proba(X[:9]), rtol=0, atol=1e-5
    )


def test_files_carry_the_classes_and_the_input(color_cnn, tmp_path):
    clf, _ = color_cnn
    meta = {
        p.key: p.value
        for p in onnx.load(export_onnx(clf, tmp_path / "m.onnx")).metadata_props
    }
    assert json.loads(meta["classes"]) == ["a", "b", "c"]
    assert (meta["input_layout"], meta["input_dtype"]) == ("NHWC", "uint8")
    extra = {"classes.json": "", "input.json": ""}
    torch.export.load(export_torch(clf, tmp_path / "m.pt2"), extra_files=extra)
    assert json.loads(extra["classes.json"]) == ["a", "b", "c"]
    assert json.loads(extra["input.json"]) == {"layout": "NHWC", "dtype": "uint8"}


def test_the_estimator_is_left_unchanged(color_cnn):
    clf, X = color_cnn
    before = clf.predict_proba(X)
    model = DeployedModel(clf)
    assert model.module is not clf.module_
    assert clf.module_.head.weight.requires_grad
    np.testing.assert_array_equal(clf.predict_proba(X), before)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"layout": "HWC"}, r"layout must be one of \['auto', 'NHW', 'NHWC', 'NCHW'\]"),
        ({"dtype": "float64"}, r"dtype must be one of \['uint8', 'float32'\]"),
    ],
)
def test_bad_options_name_the_choices(color_cnn, params, match):
    with pytest.raises(ValueError, match=match):
        DeployedModel(color_cnn[0], **params)


def test_an_unfitted_estimator_is_refused(tmp_path):
    with pytest.raises(NotFittedError):
        export_onnx(FastRetrainClassifier(), tmp_path / "m.onnx")


def test_onnx_export_without_onnxscript_says_what_to_install(
    color_cnn, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=r"pip install skfastretrain\[onnx\]"):
        export_onnx(color_cnn[0], tmp_path / "m.onnx")


def test_a_bfloat16_fit_is_deployed_in_float32(small_images):
    X, y = small_images
    clf = tiny_cnn_classifier(precision="bfloat16").fit(X, y)
    model = DeployedModel(clf)
    proba = model(torch.from_numpy(X[:20]))
    assert proba.dtype == torch.float32
    # The same module run in float32 by the estimator itself.
    clf.module_.precision = "float32"
    np.testing.assert_allclose(proba.numpy(), clf.predict_proba(X[:20]), atol=1e-6)


@pytest.mark.parametrize("columns", [None, 2])
@pytest.mark.parametrize("export", ["onnx", "torch"])
def test_a_regressor_exports_its_predictions(digit_images, tmp_path, export, columns):
    X, digit, X_test, _ = digit_images
    Y = np.c_[digit / 9.0, X.reshape(len(X), -1).mean(1)]
    y = Y[:, 0] if columns is None else Y
    reg = tiny_cnn_regressor().fit(X[:200], y[:200])
    write, run = {
        "onnx": (export_onnx, _onnx_proba),
        "torch": (export_torch, _torch_proba),
    }[export]
    path = write(reg, tmp_path / "model")
    # Always (n, n_outputs): a 1-D y gives a column.
    expected = reg.predict(X_test[:50]).reshape(50, -1)
    np.testing.assert_allclose(run(path, X_test[:50]), expected, rtol=1e-5, atol=1e-5)
    if export == "onnx":
        meta = {p.key: p.value for p in onnx.load(path).metadata_props}
        assert meta["task"] == "regression"
        assert json.loads(meta["classes"]) is None
        session = onnxruntime.InferenceSession(path)
        assert session.get_outputs()[0].name == "predictions"
