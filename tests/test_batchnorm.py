"""BatchNorm during the SGD epochs (_batchnorm.setup_batchnorm), via the estimator."""

import pytest
import torch
from conftest import make_tiny_cnn
from conftest import tiny_cnn_classifier as _cnn
from torch import nn

from skfastretrain import RidgeHead, SGDEpoch


def _pretrained_like_cnn():
    module = make_tiny_cnn()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(0.3)
            m.running_var.fill_(2.0)
    return module


@pytest.mark.parametrize("bn_mode", ["auto", "eval", "train"])
@pytest.mark.parametrize("pretrained", [True, False])
def test_bn_mode(small_images, bn_mode, pretrained):
    X, y = small_images
    module = _pretrained_like_cnn() if pretrained else make_tiny_cnn()
    clf = _cnn(backbone=module, sgd=SGDEpoch(bn_mode=bn_mode), max_epochs=2).fit(X, y)
    bn = clf.module_.backbone[1]
    held = bn_mode == "eval" or (bn_mode == "auto" and pretrained)
    stats = (bn.running_mean, bn.running_var)
    original = (module[1].running_mean, module[1].running_var)
    assert all(torch.equal(a, b) for a, b in zip(stats, original, strict=True)) == held
    assert bn.momentum == (0.1 if not held else module[1].momentum)
    # No hooks are left behind on the fitted module.
    assert not any(m._forward_pre_hooks for m in clf.module_.modules())


def test_reinitialized_layers_train_their_batchnorm(small_images):
    X, y = small_images
    module = _pretrained_like_cnn()
    clf = _cnn(backbone=module, head=RidgeHead(reinit_layers=1)).fit(X, y)
    # The second conv was re-initialized, so the BatchNorm after it restarted
    # and trains; the first keeps its pretrained statistics, held in eval.
    assert clf.held_batchnorm_ == ["backbone.1"]
    assert not torch.equal(clf.module_.backbone[4].running_mean, module[4].running_mean)
