"""Every constructor parameter of FastRetrainClassifier changes what it says.

One check per parameter: a fit with a non-default value against a fit with
the base settings, looking at what the parameter should change (the history,
the model's structure, the optimizer, the predictions or files written).
``tests/test_net.py`` holds the numerical references for the head solve
and plain SGDM; the checks here see that each value gets where it is used.
"""

import inspect
import math
import pickle

import numpy as np
import pytest
import torch
from conftest import Recorder, make_tiny_cnn, tiny_cnn_classifier
from skorch.callbacks import Callback
from torch import nn

from skfastretrain import (
    L2SP,
    DeltaRegularizer,
    EarlyStopping,
    FastRetrainClassifier,
    RidgeHead,
    SGDEpoch,
    TrainingCheckpoint,
)

N_ROWS = 200
BASE = {"max_epochs": 2, "device": "cpu"}
# A check of a fit that DivergenceGuard stopped would compare a start model.
pytestmark = pytest.mark.filterwarnings("error::skfastretrain.DivergenceWarning")


@pytest.fixture(scope="module")
def data(digit_images):
    X, y, _, _ = digit_images
    return X[:N_ROWS], y[:N_ROWS]


@pytest.fixture(scope="module")
def base(data):
    return tiny_cnn_classifier(**BASE).fit(*data)


class Case:
    """What a check gets: the data, the base fit, and a fit with changes."""

    def __init__(self, data, base, tmp_path, capsys):
        self.X, self.y = data
        self.base, self.tmp_path, self.capsys = base, tmp_path, capsys

    def fit(self, **params):
        return tiny_cnn_classifier(**{**BASE, **params}).fit(self.X, self.y)

    def proba(self, est):
        return est.predict_proba(self.X[:50])


def callback(est, name):
    return dict(est.net_.callbacks_).get(name)


def conv_weights(module):
    return [m.weight for m in module.modules() if isinstance(m, nn.Conv2d)]


def check_backbone(c):
    narrow = c.fit(backbone=lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()))
    assert narrow.module_.head.in_features == 4 * 6 * 6
    assert c.base.module_.head.in_features == 16 * 2 * 2


def check_weights(c):
    torch.manual_seed(123)
    path = c.tmp_path / "weights.pt"
    torch.save(make_tiny_cnn().state_dict(), path)
    est = c.fit(weights=path, callbacks=[("rec", Recorder())])
    start = dict(callback(est, "rec").start.backbone.named_parameters())
    saved = torch.load(path)
    # Parameters only: the first head solve re-estimates BatchNorm statistics.
    for name, value in start.items():
        torch.testing.assert_close(value, saved[name])


def check_freeze_prob(c):
    est = c.fit(freeze_prob=0.0, callbacks=[("rec", Recorder())])
    assert est.history_[:, "frozen_fraction"] == [0.0, 0.0]
    assert c.base.history_[:, "frozen_fraction"] == [0.5, 0.5]
    start = conv_weights(callback(est, "rec").start)
    assert not torch.equal(start[0], conv_weights(est.module_)[0])


def check_freeze_mode(c):
    est = c.fit(freeze_mode="random", freeze_prob=0.5)
    assert callback(est, "freezer").mode == "random"
    # A random draw leaves no fixed prefix to store.
    assert callback(est, "prefix_cache") is None
    assert callback(c.base, "prefix_cache").status_ == "on"


def check_sgd__cache_prefix(c):
    assert callback(c.fit(sgd=SGDEpoch(cache_prefix=False)), "prefix_cache") is None
    est = c.fit(sgd=SGDEpoch(cache_prefix=True))
    assert callback(est, "prefix_cache").status_ == "on"


def check_sgd__cache_dtype(c):
    est = c.fit(sgd=SGDEpoch(cache_dtype="float16"), callbacks=[("size", _StoreSize())])
    assert callback(est, "prefix_cache").dtype == "float16"
    base = c.fit(callbacks=[("size", _StoreSize())])
    # The same rows, in half the bytes.
    assert 2 * callback(est, "size").bytes == callback(base, "size").bytes > 0


class _StoreSize(Callback):
    # The bytes the store holds when the first epoch ends.
    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == 1:
            self.bytes = dict(net.callbacks_)["prefix_cache"]._bytes


def check_ridge_lambda(c):
    assert "solve_dur" not in c.fit(ridge_lambda=None).history_[-1]
    assert c.fit(ridge_lambda=5.0).history_[:, "ridge_lambda"] == [5.0, 5.0]
    assert c.base.history_[-1, "ridge_lambda"] != 5.0


def check_head(c):
    est = c.fit(head="residual", ridge_lambda=0.3)
    # The dense recomputation solves every head layer at the given strength.
    assert est.history_[-1, "layer_lambdas"] == [0.3]
    assert "layer_lambdas" not in c.base.history_[-1]
    same = c.fit(head=RidgeHead(update="residual"), ridge_lambda=0.3)
    np.testing.assert_array_equal(c.proba(same), c.proba(est))


def check_head__blend(c):
    assert not np.allclose(c.proba(c.fit(head=RidgeHead(blend=1.0))), c.proba(c.base))


def check_head__init(c):
    assert "init_solve_dur" in c.base.history_[0]
    assert "init_solve_dur" not in c.fit(head=RidgeHead(init="random")).history_[0]


def check_head__solve_every(c):
    est = c.fit(head=RidgeHead(solve_every=2))
    assert ["solve_dur" in row for row in est.history_] == [False, True]


def check_head__reuse_features(c):
    est = c.fit(head=RidgeHead(reuse_features=True))
    assert callback(est, "ridge_head").feature_source == "sgd"
    assert not np.allclose(c.proba(est), c.proba(c.base))


def check_head__update(c):
    est = c.fit(head=RidgeHead(update="residual"), ridge_lambda=0.3)
    assert callback(est, "ridge_head").update == "residual"
    assert callback(c.base, "ridge_head").update == "blend"


def check_head__hidden(c):
    # SGD through the random hidden layer under a ridge-solved top layer
    # blows the loss up (even at lr=0.01).
    head = c.fit(head=RidgeHead(hidden=(8,)), ridge_lambda=None).module_.head
    assert [m.out_features for m in head if isinstance(m, nn.Linear)] == [8, 10]


def check_head__stages(c):
    est = c.fit(head=RidgeHead(stages="resolution"))
    # make_tiny_cnn's second ReLU (16 channels, before the 2 x 2 pooling).
    assert est.module_.stages == ("5",)
    assert est.module_.head.in_features == 16 + 64
    assert callback(est, "ridge_head").stage_widths == (16, 64)
    assert c.base.module_.head.in_features == 64
    assert callback(c.base, "ridge_head").stage_widths is None


def check_head__keep_statistics(c):
    est = c.fit(head=RidgeHead(keep_statistics=True))
    kept = pickle.loads(pickle.dumps(est))
    assert callback(kept, "ridge_head").stats_ is not None
    assert callback(pickle.loads(pickle.dumps(c.base)), "ridge_head").stats_ is None


def check_head__reinit_layers(c):
    torch.manual_seed(7)
    module = make_tiny_cnn()
    est = c.fit(
        backbone=module,
        head=RidgeHead(reinit_layers=1),
        callbacks=[("rec", Recorder())],
    )
    first, last = conv_weights(callback(est, "rec").start)
    given_first, given_last = conv_weights(module)
    assert torch.equal(first, given_first) and not torch.equal(last, given_last)


def drift(est):
    start = conv_weights(callback(est, "rec").start)
    pairs = zip(conv_weights(est.module_), start, strict=True)
    return sum(float((a - b).norm()) for a, b in pairs)


PLAIN = {"freeze_prob": 0.0, "ridge_lambda": None}


def check_regularizer(c):
    est = c.fit(regularizer="l2sp", **PLAIN)
    assert isinstance(callback(est, "regularizer"), L2SP)
    assert callback(c.base, "regularizer") is None
    given = L2SP(alpha=0.3)
    est = c.fit(regularizer=given, **PLAIN)
    # Copied at fit with its parameters, never used in place.
    assert callback(est, "regularizer") is not given
    assert callback(est, "regularizer").alpha == 0.3
    assert not hasattr(given, "w0_")


def test_regularizer_alpha_pulls_toward_the_start(data):
    c = Case(data, None, None, None)
    weak = c.fit(regularizer=L2SP(alpha=0.0), callbacks=[("rec", Recorder())], **PLAIN)
    strong = c.fit(
        regularizer=L2SP(alpha=50.0), callbacks=[("rec", Recorder())], **PLAIN
    )
    assert drift(strong) < 0.5 * drift(weak)


def test_regularizer_beta_shrinks_the_head(data):
    c = Case(data, None, None, None)
    weak = c.fit(regularizer=L2SP(beta=0.0), **PLAIN).module_.head.weight.detach()
    strong = c.fit(regularizer=L2SP(beta=20.0), **PLAIN).module_.head.weight.detach()
    assert strong.norm() < 0.5 * weak.norm()


@pytest.mark.parametrize(
    ("ridge_lambda", "init", "fit_head"),
    [(None, "ridge", True), ("auto", "random", True), ("auto", "ridge", False)],
)
def test_delta_fits_its_own_head_without_a_ridge_start(
    data, ridge_lambda, init, fit_head
):
    # DELTA's attention needs a trained head; the ridge start gives one.
    est = tiny_cnn_classifier(
        regularizer=DeltaRegularizer(layers=["2"]),
        ridge_lambda=ridge_lambda,
        head=RidgeHead(init=init),
        max_epochs=1,
        device="cpu",
    ).fit(*data)
    assert callback(est, "regularizer").fit_head is fit_head


def test_delta_layers_name_backbone_submodules(data):
    c = Case(data, None, None, None)
    est = c.fit(regularizer=DeltaRegularizer(layers=["2"]), max_epochs=1)
    assert list(est.attention_) == ["backbone.2"]


def check_max_epochs(c):
    est = c.fit(max_epochs=3)
    assert (est.n_iter_, len(est.history_), c.base.n_iter_) == (3, 3, 2)


def _trained_rows(est):
    return sum(b["train_batch_size"] for b in est.history_[0, "batches"])


def check_early_stopping(c):
    est = c.fit(early_stopping=True, max_epochs=3)
    # A stratified tenth of the rows is held out of every SGD epoch.
    assert _trained_rows(est) == N_ROWS - math.ceil(0.1 * N_ROWS)
    losses = _valid_scores(est, "valid_loss")
    assert len(losses) == est.n_iter_ + 1
    assert est.best_epoch_ == int(np.argmin(losses))
    assert c.base.best_epoch_ is None
    assert "valid_loss" not in c.base.history_[-1]


def check_early_stopping__validation_fraction(c):
    est = c.fit(early_stopping=EarlyStopping(validation_fraction=0.25))
    assert _trained_rows(est) == N_ROWS - 50


def _valid_scores(est, key):
    """The start's score (epoch 0), then every epoch's."""
    return [est.history_[0, "init_" + key], *est.history_[:, key]]


def _epochs_run(losses, tol, n_iter_no_change):
    """scikit-learn's rule, replayed on the recorded validation losses, the
    start's (``losses[0]``) setting the first bar."""
    best, bad = losses[0], 0
    for epoch, loss in enumerate(losses[1:], start=1):
        bad = 0 if loss < best - tol else bad + 1
        best = min(best, loss)
        if bad >= n_iter_no_change:
            return epoch
    return len(losses) - 1


@pytest.mark.parametrize("tol", [0.0, 0.02, 1.0])
def test_early_stopping_follows_scikit_learns_rule(data, tol):
    est = Case(data, None, None, None).fit(
        early_stopping=EarlyStopping(n_iter_no_change=1, tol=tol), max_epochs=5
    )
    losses = _valid_scores(est, "valid_loss")
    assert est.n_iter_ == _epochs_run(losses, tol, 1)
    assert est.best_epoch_ == int(np.argmin(losses))


def check_early_stopping__n_iter_no_change(c):
    # tol=1 asks for a gain the loss can make at most once.
    runs = {
        n: c.fit(
            early_stopping=EarlyStopping(n_iter_no_change=n, tol=1.0), max_epochs=4
        )
        for n in (1, 4)
    }
    for n, est in runs.items():
        assert est.n_iter_ == _epochs_run(_valid_scores(est, "valid_loss"), 1.0, n)
    assert runs[1].n_iter_ < 4 and runs[1].history_[-1, "stopped_early"]
    assert runs[4].n_iter_ == 4 and "stopped_early" not in runs[4].history_[-1]


def check_early_stopping__tol(c):
    runs = {
        tol: c.fit(
            early_stopping=EarlyStopping(n_iter_no_change=1, tol=tol), max_epochs=4
        )
        for tol in (0.0, 1.0)
    }
    for tol, est in runs.items():
        assert est.n_iter_ == _epochs_run(_valid_scores(est, "valid_loss"), tol, 1)
    assert runs[1.0].n_iter_ < 4


def check_early_stopping__scoring(c):
    est = c.fit(early_stopping=EarlyStopping(scoring="accuracy", n_iter_no_change=None))
    accs = _valid_scores(est, "valid_acc")
    assert est.best_epoch_ == int(np.argmax(accs))
    if est.best_epoch_:
        assert est.history_[est.best_epoch_ - 1, "valid_acc_best"]


def check_lr(c):
    est = c.fit(lr=0.01)
    assert est.lr_ == est.net_.optimizer_.param_groups[0]["lr"] == 0.01
    assert c.base.lr_ == 0.05


@pytest.mark.parametrize(
    ("ridge_lambda", "init", "probes"),
    [("auto", "ridge", True), (None, "ridge", False), ("auto", "random", False)],
)
def test_auto_lr_probes_only_from_a_ridge_started_head(
    data, ridge_lambda, init, probes
):
    est = tiny_cnn_classifier(
        lr="auto", ridge_lambda=ridge_lambda, head=RidgeHead(init=init), **BASE
    ).fit(*data)
    assert ("probe_lr" in est.history_[0]) is probes
    if not probes:
        # A random head makes every rate look good to the probe: the fixed
        # starting rate is used instead.
        assert est.lr_ == est.net_.optimizer_.param_groups[0]["lr"] == 1e-3
    else:
        assert est.lr_ == est.history_[0, "probe_lr"]


def check_sgd(c):
    est = c.fit(sgd=SGDEpoch(momentum=0.5, weight_decay=0.01))
    group = est.net_.optimizer_.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.5, 0.01)
    np.testing.assert_array_equal(c.proba(c.fit(sgd=SGDEpoch())), c.proba(c.base))


def check_sgd__lr_schedule(c):
    group = c.fit(sgd=SGDEpoch(lr_schedule="cosine")).net_.optimizer_.param_groups[0]
    assert group["lr"] < 1e-3 * 0.05
    assert c.base.net_.optimizer_.param_groups[0]["lr"] == 0.05


def check_precision(c):
    est = c.fit(precision="bfloat16")
    assert est.module_.precision == "bfloat16"
    assert not np.array_equal(c.proba(est), c.proba(c.base))


def check_sgd__momentum(c):
    est = c.fit(sgd=SGDEpoch(momentum=0.0))
    assert est.net_.optimizer_.param_groups[0]["momentum"] == 0.0
    assert not np.allclose(c.proba(est), c.proba(c.base))


def check_sgd__weight_decay(c):
    est = c.fit(sgd=SGDEpoch(weight_decay=0.1))
    assert est.net_.optimizer_.param_groups[0]["weight_decay"] == 0.1
    assert not np.allclose(c.proba(est), c.proba(c.base))


def check_batch_size(c):
    est = c.fit(batch_size=64)
    n_batches = [len(row["batches"]) for row in est.history_]
    assert n_batches == [math.ceil(N_ROWS / 64)] * 2
    assert len(c.base.history_[0]["batches"]) == math.ceil(N_ROWS / 32)


def check_sgd__bn_mode(c):
    # With BatchNorm fixed at its initial statistics, SGD from the ridge
    # head blows the loss up (even at lr=0.01) on this random network.
    held = c.fit(sgd=SGDEpoch(bn_mode="eval"), ridge_lambda=None).held_batchnorm_
    assert held == ["backbone.1", "backbone.4"]
    # The tiny CNN's statistics are at their initial values: "auto" trains them.
    assert c.base.held_batchnorm_ == []


def check_sgd__bn_momentum(c):
    est = c.fit(sgd=SGDEpoch(bn_momentum=0.5))
    bns = [m for m in est.module_.modules() if hasattr(m, "momentum")]
    assert [m.momentum for m in bns if isinstance(m, nn.BatchNorm2d)] == [0.5, 0.5]


def check_input_size(c):
    est = c.fit(input_size=16)
    assert est.input_size_ == est.module_.preprocess.size == (16, 16)
    assert c.base.input_size_ is None  # a module has no pretrained size


def check_sgd__augment(c):
    est = c.fit(sgd=SGDEpoch(augment="light"), callbacks=[("rec", Recorder())])
    seen = torch.cat([xb for xb, _ in callback(est, "rec").batches])
    rows = {bytes(x) for x in c.X}
    # Light augmentation crops and flips: few batches rows are raw images.
    assert sum(bytes(x.numpy().astype(np.uint8)) in rows for x in seen) < len(seen) / 2
    # Dihedral augmentation only flips and turns: every row seen is one of
    # the eight symmetries of a raw image (by numpy), most of them not the
    # image itself.
    est = c.fit(sgd=SGDEpoch(augment="dihedral"), callbacks=[("rec", Recorder())])
    seen = torch.cat([xb for xb, _ in callback(est, "rec").batches]).numpy()
    turned = [np.rot90(x, k, axes=(-2, -1)) for x in c.X for k in range(4)]
    symmetries = {r.tobytes() for t in turned for r in (t, np.flip(t, axis=-1))}
    assert all(x.astype(np.uint8).tobytes() in symmetries for x in seen)
    assert sum(bytes(x.astype(np.uint8)) in rows for x in seen) < len(seen) / 2


def check_num_workers(c):
    est = c.fit(num_workers=1)
    assert est.net_.iterator_train__num_workers == 1
    # Workers load the same rows in the same order.
    np.testing.assert_array_equal(c.proba(est), c.proba(c.base))


def test_memory_is_pinned_for_cuda_only(data):
    c = Case(data, None, None, None)
    assert c.fit(device="cpu").net_.iterator_train__pin_memory is False
    if torch.cuda.is_available():
        assert c.fit(device="cuda").net_.iterator_train__pin_memory is True


def check_device(c):
    est = c.fit(device="auto")
    assert est.net_.device == ("cuda" if torch.cuda.is_available() else "cpu")


def check_distributed(c):
    with pytest.raises(RuntimeError, match="torchrun"):
        c.fit(distributed=True)


def check_random_state(c):
    assert not np.allclose(c.proba(c.fit(random_state=1)), c.proba(c.base))


def check_class_weight(c):
    from sklearn.utils.class_weight import compute_sample_weight

    given = {int(c.y[0]): 5.0}
    est = c.fit(class_weight=given)
    # The same fit as with those weights given per row.
    by_row = tiny_cnn_classifier(**BASE).fit(
        c.X, c.y, sample_weight=compute_sample_weight(given, c.y)
    )
    np.testing.assert_array_equal(c.proba(est), c.proba(by_row))
    assert not np.array_equal(c.proba(est), c.proba(c.base))


def check_verbose(c):
    c.capsys.readouterr()
    c.fit(verbose=1)
    assert "train_loss" in c.capsys.readouterr().out
    c.fit(verbose=0)
    assert c.capsys.readouterr().out == ""


def check_callbacks(c):
    given = Recorder()
    est = c.fit(callbacks=[("rec", given)])
    assert len(callback(est, "rec").batches) == 2 * math.ceil(N_ROWS / 32)
    assert not hasattr(given, "batches")  # copied at fit, not used in place


def test_a_checkpoint_callback_writes_its_file(data, tmp_path):
    path = tmp_path / "fit.ckpt"
    given = TrainingCheckpoint(path)
    est = Case(data, None, None, None).fit(callbacks=[given])
    assert path.stat().st_size > 0
    # The estimator's own checkpoint, at the given path, takes the given
    # one's place after the other callbacks.
    callbacks = dict(est.net_.callbacks_)
    assert given not in callbacks.values()
    assert callbacks["checkpoint"].path == path
    names = list(callbacks)
    assert names.index("checkpoint") > names.index("ridge_head")


CHECKS = {
    name[len("check_") :]: check
    for name, check in list(globals().items())
    if name.startswith("check_")
}


def test_every_parameter_has_a_check():
    # The estimator's own parameters and those of its head and SGD epoch,
    # as GridSearchCV names them.
    est = FastRetrainClassifier(
        head=RidgeHead(), sgd=SGDEpoch(), early_stopping=EarlyStopping()
    )
    assert sorted(CHECKS) == sorted(est.get_params(deep=True))
    # class_weight made it 21: scikit-learn's classifiers take it here too.
    assert len(inspect.signature(FastRetrainClassifier).parameters) <= 21


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_parameter_changes_what_it_should(name, data, base, tmp_path, capsys):
    CHECKS[name](Case(data, base, tmp_path, capsys))
