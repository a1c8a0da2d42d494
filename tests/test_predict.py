from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import make_tiny_cnn

from skfastretrain import FastRetrainClassifier, SGDEpoch

# cpu explicitly: the default device="auto" would pick a GPU where there is
# one, and the exact comparison below was set for the CPU.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ),
]
# On the CPU a batch gives the same bits whichever thread runs it. On CUDA,
# NVIDIA promises bitwise-reproducible cuBLAS results only while one stream is
# active; exactness there is untested (no GPU was at hand), so scores are
# checked to float32 rounding, and labels exactly on every device.
TOLERANCE = {"cpu": {"rtol": 0, "atol": 0}, "cuda": {"rtol": 1e-5, "atol": 1e-6}}


@pytest.fixture(scope="module", params=DEVICES)
def fitted(request, digit_images):
    X, y, _, _ = digit_images
    clf = FastRetrainClassifier(
        make_tiny_cnn,
        max_epochs=1,
        batch_size=16,
        random_state=0,
        sgd=SGDEpoch(bn_mode="train"),
        device=request.param,
    )
    return clf.fit(X[:200], y[:200])


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function"])
@pytest.mark.parametrize("n_threads", [2, 8])
def test_concurrent_predict_equals_sequential(fitted, digit_images, method, n_threads):
    _, _, X_test, _ = digit_images
    tolerance = TOLERANCE["cpu" if method == "predict" else fitted.device]
    # Chunks of different lengths, so threads are at different batches.
    chunks = [X_test[i : i + 37 + 11 * (i % 5)] for i in range(0, 400, 23)]
    sequential = [getattr(fitted, method)(chunk) for chunk in chunks]
    with ThreadPoolExecutor(n_threads) as pool:
        for _ in range(3):
            concurrent = list(pool.map(getattr(fitted, method), chunks))
            for got, expected in zip(concurrent, sequential, strict=True):
                torch.testing.assert_close(got, expected, **tolerance)
    assert not fitted.module_.training
