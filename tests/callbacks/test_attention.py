import copy

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from torch import nn

from skfastretrain import (
    DeltaRegularizer,
    FastRetrainClassifier,
    RidgeHead,
    RidgeHeadSolver,
)
from skfastretrain.callbacks._attention import channel_attention

LAYERS = ["1", "3"]


@pytest.fixture
def net_and_data(digits):
    X, y = digits
    X, y = X[:128].reshape(-1, 1, 8, 8), y[:128].astype(np.int64)
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 10),
    )
    net = NeuralNetClassifier(module, batch_size=32, train_split=None, verbose=0)
    net.initialize()
    return net, net.get_dataset(X, y)


def _attention(net, dataset, **kwargs):
    # 4 batches of 32: every row of the 128.
    return channel_attention(net, dataset, LAYERS, n_batches=4, **kwargs)


def test_fit_head_measures_with_a_solved_head_and_restores_it(net_and_data):
    net, dataset = net_and_data
    before = copy.deepcopy(net.module_.state_dict())
    with_fit = _attention(net, dataset, fit_head=True)
    for name, tensor in net.module_.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0)

    untrained = _attention(net, dataset)
    solver = RidgeHeadSolver("auto", random_state=0).initialize()
    solver.solve(net, dataset, blend=1.0, residual=False)
    solved = _attention(net, dataset)
    for name in LAYERS:
        np.testing.assert_allclose(with_fit[name], solved[name], rtol=1e-6)
        # The random head's loss rises say nothing about the task.
        assert not np.allclose(with_fit[name], untrained[name], rtol=1e-3)


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 5.0])
def test_weights_sum_to_one_per_layer(net_and_data, weighted, temperature):
    net, dataset = net_and_data
    attention = _attention(net, dataset, weighted=weighted, temperature=temperature)
    for name, n_channels in zip(LAYERS, (4, 6), strict=True):
        w = attention[name]
        assert w.shape == (n_channels,) and w.sum() == pytest.approx(1.0)
        assert (np.ptp(w) > 0) == weighted


@pytest.mark.parametrize(
    "ridge_lambda, init_head, fit_head",
    [("auto", "ridge", False), ("auto", "random", True), (None, "random", True)],
)
def test_estimator_fits_a_head_for_attention_unless_solved(
    digit_images, ridge_lambda, init_head, fit_head
):
    X, y = digit_images[:2]
    cnn = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
    )
    clf = FastRetrainClassifier(
        cnn,
        regularizer=DeltaRegularizer(layers=["1"]),
        ridge_lambda=ridge_lambda,
        head=RidgeHead(init=init_head),
        max_epochs=1,
        random_state=0,
    ).fit(X[:96], y[:96])
    assert dict(clf.net_.callbacks_)["regularizer"].fit_head is fit_head
    assert clf.attention_["backbone.1"].shape == (4,)
