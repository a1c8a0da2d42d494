import pickle
import warnings
from functools import partial

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from torch import nn

from skfastretrain import (
    FastRetrainClassifier,
    FastRetrainModule,
    PrefixCache,
    RidgeHead,
    SGDEpoch,
    efficientnet_lite,
)
from skfastretrain.callbacks import _prefix_cache

# The prefix stored, and not: the default cache_prefix="auto" would store it
# in every fit here (freeze_mode="prefix", no augmentation, float32).
CACHED = SGDEpoch(cache_prefix=True)
UNCACHED = SGDEpoch(cache_prefix=False)


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
@pytest.mark.parametrize("stages", [None, "blocks"])
def test_cached_fit_equals_the_uncached_one(
    images, exact_store, backbone, ridge_lambda, stages
):
    # With stages, some are inside the frozen prefix (stored pooled) and
    # some after it (recorded as the rest runs).
    X, y = images
    init = "random" if ridge_lambda is None else "ridge"
    kw = {
        "ridge_lambda": ridge_lambda,
        "head": RidgeHead(init=init, stages=stages),
    }
    plain = _fit(X, y, backbone, sgd=UNCACHED, **kw)
    cached = _fit(X, y, backbone, sgd=CACHED, **kw)
    np.testing.assert_allclose(
        cached.predict_proba(X), plain.predict_proba(X), rtol=1e-5, atol=1e-6
    )
    # Every training row was stored in the first epoch and reused after it
    # (the prefix's BatchNorm, at its initial statistics, is re-estimated by
    # the first head solve's pass, so the prefix is frozen after it).
    assert cached.history_[:, "prefix_cache_rows"] == [0, len(X)]
    # The store's routing ended with the fit.
    assert cached.module_._prefix_store is None


def test_the_prefix_runs_once_per_row(images, exact_store):
    X, y = images
    rows = {}
    for cache in (False, True):
        backbone = efficientnet_lite("efficientnet_lite0", weights=None)
        for block in backbone._blocks:
            # What the estimator does to a Lite0 it names: a random prefix
            # cannot be stored.
            block.drop_connect = 0.0
        counter = {"rows": 0}

        def hook(module, args, counter=counter):
            counter["rows"] += len(args[0])

        # On the first layer before the fit: the fit's deep copy of the
        # backbone, and the store's inference copy of the prefix, keep it.
        backbone._conv_stem.register_forward_pre_hook(hook)
        _fit(X, y, backbone, max_epochs=3, sgd=SGDEpoch(cache_prefix=cache))
        rows[cache] = counter["rows"]
    # Both fits run the first solve, and setup steps that look at a batch.
    # Then, without the store: 3 SGD epochs and 3 solves. With it: the check
    # of the split on one batch in eval and train mode (the whole network
    # and the prefix on 16 rows, the prefix on 8) and every row once, in the
    # first epoch.
    # The rest, the same in both, is the setup's look at the data.
    setup = rows[False] - 7 * len(X)
    assert 16 <= setup < len(X)
    assert rows[True] == setup + len(X) + 2 * (16 + 16 + 8) + len(X)


class _StoreSize(Callback):
    # The bytes held by the estimator's store at the end of each epoch.
    def initialize(self):
        self.sizes = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.sizes.append(dict(net.callbacks_)["prefix_cache"]._bytes)


def test_pretrained_stored_fit_is_close_to_the_unstored_one(small_images):
    # The default store: the folded inference copy of the prefix fills it.
    # On pretrained weights (features that differ between images) the fit
    # moves by rounding only; float16 rows take half the bytes (and a fit on
    # them differs by more than rounding: the head is solved and trained on
    # rounded features).
    X, y = small_images
    kw = {"weights": "DEFAULT", "lr": 0.001, "ridge_lambda": "auto", "max_epochs": 1}
    plain = _fit(X, y, sgd=UNCACHED, **kw)
    fits = {}
    for dtype in ("float32", "float16"):
        sgd = SGDEpoch(cache_prefix=True, cache_dtype=dtype)
        fits[dtype] = _fit(X, y, sgd=sgd, callbacks=[("size", _StoreSize())], **kw)
    cached = fits["float32"]
    assert cached.history_[:, "prefix_cache_rows"] == [len(X)]
    np.testing.assert_allclose(
        cached.predict_proba(X), plain.predict_proba(X), rtol=0, atol=1e-4
    )
    sizes = {k: dict(f.net_.callbacks_)["size"].sizes[0] for k, f in fits.items()}
    assert sizes["float16"] * 2 == sizes["float32"] > 0


def test_store_is_dropped_when_the_prefix_is_unfrozen(images, exact_store):
    X, y = images
    # The frozen fraction falls to 0: the second epoch trains everything.
    kw = {"freeze_prob": [0.5, 0.0], "ridge_lambda": 1.0}
    plain = _fit(X, y, sgd=UNCACHED, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing frozen is no failure
        cached = _fit(X, y, sgd=CACHED, **kw)
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
    plain = _fit(X, y, backbone, sgd=UNCACHED, **kw)
    with pytest.warns(RuntimeWarning, match="PrefixCache is off"):
        cached = _fit(X, y, backbone, sgd=CACHED, **kw)
    np.testing.assert_allclose(cached.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize(
    "params, match",
    [
        (
            {"freeze_mode": "random"},
            r"SGDEpoch\(cache_prefix=True\) needs freeze_mode='prefix', got 'random'",
        ),
        (
            {"sgd": SGDEpoch(cache_prefix=True, augment="light")},
            r"SGDEpoch\(cache_prefix=True\) needs augment=None",
        ),
        (
            {"precision": "bfloat16"},
            r"SGDEpoch\(cache_prefix=True\) needs precision='float32'",
        ),
        (
            {"regularizer": "delta"},
            r"SGDEpoch\(cache_prefix=True\) cannot run with a DELTA .*feature maps",
        ),
        (
            {"sgd": SGDEpoch(cache_prefix=1)},
            r"The 'cache_prefix' parameter of SGDEpoch must be an instance of "
            r"'bool'.* or a str among \{'auto'\}. Got 1 instead",
        ),
    ],
)
def test_bad_settings_are_refused(images, params, match):
    X, y = images
    error = TypeError if "must be an instance" in match else ValueError
    with pytest.raises(error, match=match):
        _fit(X, y, **{"sgd": CACHED, **params})


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
    # As PrefixCache installs itself during a fit.
    cache = PrefixCache().initialize()
    lookup = partial(cache.backbone_output, module)
    with module.reading_prefix_store(lookup):
        clone = pickle.loads(pickle.dumps(module))
        assert module._prefix_store is lookup
    assert clone._prefix_store is None
    assert module._prefix_store is None


def test_max_bytes_zero_stores_nothing():
    from skorch import NeuralNetClassifier

    from skfastretrain import LayerFreezer

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
            callbacks=[LayerFreezer(0.5, mode="prefix", head="head"), cache],
        ).fit(X, y)
        assert cache.n_stored_ == 0  # released at the end of training
        outs.append((net.predict_proba(X), net.history[:, "prefix_cache_rows"]))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-6)
    assert outs[0][1] == [0, 0] and outs[1][1] == [0, 40]


@pytest.mark.parametrize(
    "row, dtype, stored",
    [
        (torch.tensor([0.5, -3.0, 6.0]), "float16", torch.float16),
        (torch.tensor([0.5, 7e4]), "float16", torch.float32),  # beyond float16
        (torch.tensor([0.5, float("nan")]), "float16", torch.float32),
        (torch.tensor([0.5, -3.0]), "float32", torch.float32),
        (torch.tensor([1, 2]), "float16", torch.int64),
    ],
)
def test_rows_are_stored_compactly_where_they_fit(row, dtype, stored):
    kept = _prefix_cache._compact(row, _prefix_cache._STORAGE[dtype])
    assert kept.dtype == stored
    # float16 keeps 11 significant bits; the rest comes back as it was.
    rtol = 2**-11 if stored == torch.float16 else 0.0
    torch.testing.assert_close(
        kept.to(row.dtype), row, rtol=rtol, atol=0.0, equal_nan=True
    )
    assert kept.data_ptr() != row.data_ptr()  # a copy, not a view of the batch


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype must be one of"):
        PrefixCache(dtype="bfloat16").initialize()


class _PrefixAndBatch(Callback):
    # The estimator's stored prefix and a batch of its own inputs to it.
    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        if len(net.history) == 1:
            self.prefix = dict(net.callbacks_)["prefix_cache"]._split.prefix
            Xi = next(iter(net.get_iterator(dataset_train, training=False)))[0]
            self.x = net.module_.preprocess(torch.as_tensor(Xi))


@pytest.mark.parametrize("size", [64, 224])
def test_the_estimators_prefix_folds(images, size):
    # Lite0's pretrained prefix as the estimator stores it, on the
    # estimator's own images (many outputs near zero): every BatchNorm
    # folds into its convolution, as PrefixCache(fold=True) fills the store.
    X, y = images
    kw = {"weights": "DEFAULT", "input_size": size, "max_epochs": 1}
    est = _fit(X[:32], y[:32], callbacks=[("peek", _PrefixAndBatch())], **kw)
    peek = dict(est.net_.callbacks_)["peek"]
    copy = _prefix_cache.inference_copy(peek.prefix, peek.x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    peek.prefix.eval()  # after the fit the backbone is in train mode
    with torch.no_grad():
        (out,), (ref,) = copy(peek.x), peek.prefix(peek.x)
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_fold_fills_the_store_with_the_folded_copy():
    from skorch import NeuralNetClassifier

    from skfastretrain import LayerFreezer

    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 1, 6, 6)).astype(np.float32)
    y = (X[:, 0, 0, 0] > 0).astype(np.int64)
    fills = []
    for fold in (False, True):
        torch.manual_seed(0)
        backbone = nn.Sequential(
            nn.Conv2d(1, 4, 3),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3),
            nn.Flatten(),
        )
        cache = PrefixCache(fold=fold)

        class Peek(Callback):
            def on_epoch_end(self, net, **kwargs):
                fills.append(dict(net.callbacks_)["PrefixCache"]._split.fill)

        NeuralNetClassifier(
            FastRetrainModule(nn.Identity(), backbone, nn.Linear(16, 2)),
            max_epochs=1,
            train_split=None,
            verbose=0,
            callbacks=[LayerFreezer(0.5, mode="prefix", head="head"), cache, Peek()],
        ).fit(X, y)
    assert any(isinstance(m, nn.BatchNorm2d) for m in fills[0].modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fills[1].modules())


def test_a_stage_inside_a_frozen_block_turns_the_store_off(images):
    # A stage the traced graph does not call (a layer inside a block) cannot
    # be stored: the fit warns and runs without the store, as the unstored fit.
    X, y = images
    head = RidgeHead(stages=["_blocks.1._bn2"])
    with pytest.warns(RuntimeWarning, match=r"stage '_blocks\.1\._bn2' runs inside"):
        cached = _fit(X, y, sgd=CACHED, head=head, max_epochs=1)
    plain = _fit(X, y, sgd=UNCACHED, head=head, max_epochs=1)
    np.testing.assert_allclose(
        cached.predict_proba(X), plain.predict_proba(X), rtol=1e-5, atol=1e-6
    )


def test_the_split_is_compared_at_the_scale_of_its_outputs():
    # On one thread, Lite0's prefix on half a batch differed from the whole
    # batch by up to 8.4e-7 of its largest output, in outputs near zero that
    # an elementwise rtol=1e-4, atol=1e-5 test refused; a batch-dependent
    # layer moves the outputs by their own size.
    ref = torch.tensor([[40.0, 1e-6, -20.0]])
    near_zero = ref + torch.tensor([[0.0, 3e-5, 0.0]])
    assert not torch.allclose(near_zero, ref, rtol=1e-4, atol=1e-5)
    assert _prefix_cache._close(near_zero, ref)
    assert not _prefix_cache._close(ref * 1.01, ref)
