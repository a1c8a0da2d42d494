"""The transfer regularizers through FastRetrainClassifier (regularizer=...)."""

import numpy as np
import pytest
import torch

from skfastretrain import L2SP, DeltaRegularizer, FastRetrainClassifier


def _distance_to_start(clf, start):
    current = clf.module_.backbone.state_dict()
    return sum(
        float((current[k].double() - v.double()).pow(2).sum())
        for k, v in start.items()
        if v.is_floating_point() and "running" not in k
    )


def test_estimator_l2sp_stays_closer_to_pretrained(digit_images):
    from conftest import make_tiny_cnn

    X, y, _, _ = digit_images
    torch.manual_seed(0)
    module = make_tiny_cnn()
    start = {k: v.clone() for k, v in module.state_dict().items()}
    distances = {}
    for name, regularizer in ((None, None), ("l2sp", L2SP(alpha=1.0))):
        clf = FastRetrainClassifier(
            module,
            regularizer=regularizer,
            max_epochs=3,
            lr=0.05,
            random_state=0,
        ).fit(X[:300], y[:300])
        distances[name] = _distance_to_start(clf, start)
    assert distances["l2sp"] < distances[None]


@pytest.mark.parametrize("regularizer", ["delta", "feature_map"])
def test_estimator_delta_exposes_attention(digit_images, regularizer):
    from conftest import make_tiny_cnn

    X, y, _, _ = digit_images
    # "feature_map" is DeltaRegularizer(weighted=False): equal weights.
    weighted = regularizer == "delta"
    clf = FastRetrainClassifier(
        make_tiny_cnn,
        regularizer=DeltaRegularizer(layers=["2", "5"], weighted=weighted),
        max_epochs=1,
        random_state=0,
    ).fit(X[:200], y[:200])
    assert set(clf.attention_) == {"backbone.2", "backbone.5"}
    weights = clf.attention_["backbone.5"]
    assert weights.shape == (16,)
    assert (np.ptp(weights) > 0) == (regularizer == "delta")
    assert clf.predict(X[:10]).shape == (10,)
