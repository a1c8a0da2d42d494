import pickle
import warnings

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from torch import nn

from skfastretrain import FastRetrainClassifier, FastRetrainModule, PrefixCache


def _fit(X, y, backbone="efficientnet_lite0", **params):
    params = {
        # cpu: cached and uncached fits are compared to 1e-5, which float32
        # noise from CUDA's unordered atomic sums would exceed.
        "device": "cpu",
        "weights": None,
        "input_size": 32,
        "max_epochs": 2,
        "batch_size": 16,
        "random_state": 0,
        "freeze_prob": 0.5,
        "freeze_mode": "prefix",
        # Fixed rate and strength: the probe of lr="auto" would add its
        # steps to the counted rows.
        "lr": 0.01,
        "ridge_lambda": 1.0,
        **params,
    }
    return FastRetrainClassifier(backbone, **params).fit(X, y)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, size=(64, 28, 28), dtype=np.uint8)
    return X, rng.integers(0, 3, 64)


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18"])
@pytest.mark.parametrize("ridge_lambda", [None, "auto"])
def test_cached_fit_equals_the_uncached_one(images, backbone, ridge_lambda):
    X, y = images
    init = "random" if ridge_lambda is None else "ridge"
    kw = {"ridge_lambda": ridge_lambda, "init_head": init}
    plain = _fit(X, y, backbone, **kw)
    cached = _fit(X, y, backbone, cache_prefix=True, **kw)
    np.testing.assert_allclose(
        cached.predict_proba(X), plain.predict_proba(X), rtol=1e-5, atol=1e-6
    )
    # Every training row was stored in the first epoch and reused after it.
    assert cached.history_[:, "prefix_cache_rows"] == [0, len(X)]
    assert getattr(cached.module_, "_prefix_cache", None) is None


def test_the_prefix_runs_once_per_row(images):
    X, y = images
    rows = {}
    for cache in (False, True):
        clf = _fit(X, y, max_epochs=3, cache_prefix=cache, callbacks=[_CountStem()])
        rows[cache] = next(
            cb.rows for _, cb in clf.net_.callbacks_ if isinstance(cb, _CountStem)
        )
    # Counted from the first epoch on (the initial solve runs before): 3 SGD
    # epochs and 3 solves without the store; with it, the first epoch and
    # the check of the split on one batch, in eval and train mode (the
    # whole network and the prefix on 16 rows, the prefix on 8).
    assert rows[False] == 6 * len(X)
    assert rows[True] == len(X) + 2 * (16 + 16 + 8)


class _CountStem(Callback):
    # Rows that reach the first layer: the frozen prefix's work.
    def on_train_begin(self, net, **kwargs):
        self.rows = 0

        def hook(module, args):
            self.rows += len(args[0])

        net.module_.backbone._conv_stem.register_forward_pre_hook(hook)


def test_store_is_dropped_when_the_prefix_is_unfrozen(images):
    X, y = images
    # The frozen fraction falls to 0: the second epoch trains everything.
    plain = _fit(X, y, freeze_prob=[0.5, 0.0], ridge_lambda=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing frozen is no failure
        cached = _fit(X, y, freeze_prob=[0.5, 0.0], ridge_lambda=1.0, cache_prefix=True)
    np.testing.assert_allclose(
        cached.predict_proba(X), plain.predict_proba(X), rtol=1e-5, atol=1e-6
    )
    # Stored in the first epoch, dropped when nothing is frozen any more.
    assert cached.history_[:, "prefix_cache_rows"] == [0, 0]


@pytest.mark.parametrize("max_bytes", [-1, 1.5, True])
def test_bad_max_bytes(max_bytes):
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(max_bytes=max_bytes).initialize()


class _Branchy(nn.Module):
    # Control flow on the data: torch.fx cannot trace it.
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(784, 16), nn.Linear(16, 16)

    def forward(self, x):
        x = x.flatten(1)
        if x.sum() > 0:
            x = x * 1.0
        return self.b(torch.relu(self.a(x)))


def test_untraceable_backbone_warns_and_fits_without_store(images):
    X, y = images
    kw = {"max_epochs": 2, "input_size": None, "ridge_lambda": 1.0}
    backbone = _Branchy()  # deep-copied by each fit
    plain = _fit(X, y, backbone, **kw)
    with pytest.warns(RuntimeWarning, match="PrefixCache is off"):
        cached = _fit(X, y, backbone, cache_prefix=True, **kw)
    np.testing.assert_allclose(cached.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"freeze_mode": "random"}, "freeze_mode='prefix'"),
        ({"augment": "light"}, "augment=None"),
        ({"precision": "bfloat16"}, "precision='float32'"),
        ({"regularizer": "delta"}, "feature maps"),
        ({"cache_prefix": 1}, "must be a bool"),
    ],
)
def test_bad_settings_are_refused(images, params, match):
    X, y = images
    error = TypeError if params.get("cache_prefix") == 1 else ValueError
    with pytest.raises(error, match=match):
        _fit(X, y, **{"cache_prefix": True, **params})


def test_needs_a_fastretrain_module(images):
    from skorch import NeuralNetClassifier

    X, y = images
    net = NeuralNetClassifier(
        nn.Sequential(nn.Flatten(), nn.Linear(784, 3)),
        max_epochs=1,
        train_split=None,
        callbacks=[PrefixCache()],
    )
    with pytest.raises(TypeError, match="FastRetrainModule"):
        net.fit(X.astype(np.float32), y)


def test_store_is_not_pickled():
    module = FastRetrainModule(nn.Identity(), nn.Linear(3, 3), nn.Linear(3, 2))
    module._prefix_cache = PrefixCache().initialize()
    clone = pickle.loads(pickle.dumps(module))
    assert getattr(clone, "_prefix_cache", None) is None
    assert module._prefix_cache is not None


def test_max_bytes_zero_stores_nothing():
    from skorch import NeuralNetClassifier

    from skfastretrain import RandomFreezer

    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    outs = []
    for max_bytes in (0, 2**20):
        torch.manual_seed(0)
        backbone = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8))
        cache = PrefixCache(max_bytes=max_bytes)
        net = NeuralNetClassifier(
            FastRetrainModule(nn.Identity(), backbone, nn.Linear(8, 2)),
            max_epochs=2,
            train_split=None,
            verbose=0,
            iterator_train__shuffle=False,
            callbacks=[RandomFreezer(0.5, mode="prefix", head="head"), cache],
        ).fit(X, y)
        assert cache.n_stored_ == 0  # released at the end of training
        outs.append((net.predict_proba(X), net.history[:, "prefix_cache_rows"]))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-6)
    assert outs[0][1] == [0, 0] and outs[1][1] == [0, 40]
