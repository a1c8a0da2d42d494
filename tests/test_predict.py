from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import make_tiny_cnn

from skfastretrain import FastRetrainClassifier


@pytest.fixture(scope="module")
def fitted(digit_images):
    X, y, _, _ = digit_images
    clf = FastRetrainClassifier(
        make_tiny_cnn, max_epochs=1, batch_size=16, random_state=0, bn_mode="train"
    )
    return clf.fit(X[:200], y[:200])


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function"])
@pytest.mark.parametrize("n_threads", [2, 8])
def test_concurrent_predict_equals_sequential(fitted, digit_images, method, n_threads):
    _, _, X_test, _ = digit_images
    # Chunks of different lengths, so threads are at different batches.
    chunks = [X_test[i : i + 37 + 11 * (i % 5)] for i in range(0, 400, 23)]
    sequential = [getattr(fitted, method)(chunk) for chunk in chunks]
    with ThreadPoolExecutor(n_threads) as pool:
        for _ in range(3):
            concurrent = list(pool.map(getattr(fitted, method), chunks))
            for got, expected in zip(concurrent, sequential, strict=True):
                np.testing.assert_array_equal(got, expected)
    assert not fitted.module_.training
