"""One skorch SGD step (batch 32): a tiny CNN and pretrained Lite0 at 64 px."""

import pytest
import torch
from skorch import NeuralNetClassifier
from torch import nn

from benchmarks._lib.models import Preprocess, pretrained_lite0, tiny_cnn

pytest.importorskip("pytest_benchmark")


def small():
    """The tiny CNN (trained from scratch) with a 10-way head, at 28 px."""
    prep = Preprocess(28, channels=1, mean=0.5, std=0.5)
    return nn.Sequential(prep, tiny_cnn(), nn.Flatten(), nn.Linear(64, 10))


def lite0():
    """ImageNet EfficientNet-Lite0 with a new 10-way head, at 64 px."""
    return nn.Sequential(Preprocess(64), pretrained_lite0(10))


@pytest.mark.parametrize("module", [small, lite0])
def test_sgd_step(benchmark, module):
    torch.manual_seed(0)
    net = NeuralNetClassifier(
        module(),
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        lr=1e-3,
        batch_size=32,
        train_split=None,
        device="cpu",
    ).initialize()
    X = torch.randint(0, 255, (32, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (32,))
    step = benchmark(net.train_step, (X, y))
    assert torch.isfinite(step["loss"])
