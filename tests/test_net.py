"""The estimator's training path against independent references.

Each test fits FastRetrainClassifier through its public parameters and checks
the result against what scikit-learn, scipy or a plain torch loop computes
from the same inputs, so a parameter that is read wrongly (or not at all)
between the estimator and its callbacks makes a test fail.
"""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import Recorder, tiny_cnn_classifier
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.linear_model import RidgeClassifier, RidgeCV
from sklearn.model_selection import PredefinedSplit
from sklearn.preprocessing import LabelBinarizer

from skfastretrain import RidgeHead, SGDEpoch
from skfastretrain.linalg._solve import LAMBDA_GRID


def fit_recorded(X, y, **params):
    est = tiny_cnn_classifier(device="cpu", callbacks=[("recorder", Recorder())])
    est.set_params(**params).fit(X, y)
    return est, dict(est.net_.callbacks_)["recorder"]


def fitted_features(est, X):
    """The fitted backbone's features of raw images X, in float64."""
    module = est.module_.eval()
    with torch.no_grad():
        return module.features(torch.as_tensor(X[:, None])).double().numpy()


def reference_temperature(logits, y, max_scale=4.0):
    """argmin over s in [0.01, max_scale] of the cross-entropy of
    softmax(s * logits), searched in s itself (the package searches log s)."""

    def loss(s):
        return -log_softmax(s * logits, axis=1)[np.arange(len(y)), y].mean()

    res = minimize_scalar(
        loss, bounds=(0.01, max_scale), method="bounded", options={"xatol": 1e-9}
    )
    return res.x


def expected_head(W0, b0, coef, intercept, H, y, blend):
    """W0 + blend * (s W* - W0) with W* from scikit-learn and s the fitted
    temperature: every training row is a calibration row below 2,048 rows."""
    s = reference_temperature(H @ coef.T + intercept, y)
    W = W0 + blend * (s * coef - W0)
    b = b0 + blend * (s * intercept - b0)
    return W, b


# SGDEpoch(bn_mode="eval"): the solve's pass then computes the same eval-mode
# features that the fitted model gives afterwards (no BatchNorm re-estimation).
SOLVE = {"sgd": SGDEpoch(bn_mode="eval"), "max_epochs": 1, "lr": 0.05}


@pytest.mark.parametrize("head_blend", [0.25, 1.0])
@pytest.mark.parametrize("ridge_lambda", [0.3, 30.0])
def test_head_is_blended_sklearn_ridge_solution(small_images, ridge_lambda, head_blend):
    X, y = small_images
    est, rec = fit_recorded(
        X, y, ridge_lambda=ridge_lambda, head=RidgeHead(blend=head_blend), **SOLVE
    )
    H = fitted_features(est, X)
    # RidgeClassifier codes the classes one-hot in {-1, +1}, the documented
    # targets of the head solve, with an unpenalized intercept.
    ridge = RidgeClassifier(alpha=ridge_lambda, solver="svd").fit(H, y)
    W0, b0 = (rec.head[k].double().numpy() for k in ("weight", "bias"))
    W, b = expected_head(W0, b0, ridge.coef_, ridge.intercept_, H, y, head_blend)
    head = est.module_.head
    scale = np.abs(W).max()
    np.testing.assert_allclose(head.weight.detach(), W, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(head.bias.detach(), b, rtol=1e-4, atol=1e-5 * scale)
    assert est.history_[-1, "ridge_lambda"] == ridge_lambda


def test_auto_lambda_is_ridgecv_choice_on_the_same_folds(small_images):
    X, y = small_images
    # "auto" picks a ridge so weak that the head fits the rows almost exactly;
    # with the features of a random backbone, SGD at a usual rate then blows
    # up from it (DivergenceGuard keeps the start, with no last solve).
    params = {**SOLVE, "lr": 1e-4}
    est, rec = fit_recorded(
        X, y, ridge_lambda="auto", head=RidgeHead(blend=0.5), **params
    )
    H = fitted_features(est, X)
    T = LabelBinarizer(neg_label=-1).fit_transform(y)
    # The candidates are relative to the mean eigenvalue of the centered Gram
    # matrix; rows go to folds round-robin, in the order of the training set.
    Hc = H - H.mean(0)
    grid = LAMBDA_GRID * np.trace(Hc.T @ Hc) / H.shape[1]
    assert len(y) % 5 == 0  # equal folds: mean fold MSE ranks as pooled SSE
    cv = PredefinedSplit(np.arange(len(y)) % 5)
    ridge = RidgeCV(alphas=grid, cv=cv, scoring="neg_mean_squared_error").fit(H, T)
    chosen = est.history_[-1, "ridge_lambda"]
    # The same grid point; its scale comes from the fit's features, which
    # the prefix store computes with BatchNorm folded (another rounding).
    np.testing.assert_allclose(chosen, ridge.alpha_, rtol=1e-6)
    W0, b0 = (rec.head[k].double().numpy() for k in ("weight", "bias"))
    W, b = expected_head(W0, b0, ridge.coef_, ridge.intercept_, H, y, 0.5)
    scale = np.abs(W).max()
    head = est.module_.head
    np.testing.assert_allclose(head.weight.detach(), W, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(head.bias.detach(), b, rtol=1e-4, atol=1e-5 * scale)


def test_weighted_head_is_sklearn_ridge_with_sample_weight(small_images):
    X, y = small_images
    w = np.random.default_rng(3).integers(0, 4, size=len(y)).astype(float)
    est = tiny_cnn_classifier(
        device="cpu",
        callbacks=[("recorder", Recorder())],
        ridge_lambda=3.0,
        head=RidgeHead(blend=1.0),
        **SOLVE,
    ).fit(X, y, sample_weight=w)
    H = fitted_features(est, X)
    ridge = RidgeClassifier(alpha=3.0, solver="svd").fit(H, y, sample_weight=w)
    rec = dict(est.net_.callbacks_)["recorder"]
    W0, b0 = (rec.head[k].double().numpy() for k in ("weight", "bias"))
    # The temperature is fitted on the rows unweighted.
    W, b = expected_head(W0, b0, ridge.coef_, ridge.intercept_, H, y, 1.0)
    head = est.module_.head
    scale = np.abs(W).max()
    np.testing.assert_allclose(head.weight.detach(), W, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(head.bias.detach(), b, rtol=1e-4, atol=1e-5 * scale)


def torch_sgdm(start, batches, *, lr, momentum, weight_decay):
    """Plain fine-tuning: torch.optim.SGD over every parameter, train mode;
    a batch of weighted rows minimizes their weighted mean cross-entropy."""
    model = copy.deepcopy(start).train()
    opt = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    for xb, yb in batches:
        opt.zero_grad()
        if isinstance(xb, dict):
            w = xb["sample_weight"].to(torch.float32)
            losses = F.cross_entropy(model(xb["x"]), yb, reduction="none")
            ((w * losses).sum() / w.sum()).backward()
        else:
            F.cross_entropy(model(xb), yb).backward()
        opt.step()
    return model


def test_weighted_sgd_is_torch_sgd_on_the_weighted_mean_loss(small_images):
    X, y = small_images
    w = np.random.default_rng(4).uniform(0.1, 3.0, size=len(y))
    est = tiny_cnn_classifier(
        device="cpu",
        callbacks=[("recorder", Recorder())],
        freeze_prob=0.0,
        ridge_lambda=None,
        lr=0.05,
        max_epochs=2,
    ).fit(X, y, sample_weight=w)
    rec = dict(est.net_.callbacks_)["recorder"]
    reference = torch_sgdm(
        rec.start, rec.batches, lr=0.05, momentum=0.9, weight_decay=0
    )
    got = est.module_.state_dict()
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("lr", "momentum", "weight_decay"),
    [(0.02, 0.5, 1e-3), (0.1, 0.0, 0.0), (0.03, 0.95, 0.05)],
)
def test_plain_mode_is_torch_sgd_momentum(small_images, lr, momentum, weight_decay):
    """freeze_prob=0, ridge_lambda=None is plain SGDM, as the README says."""
    X, y = small_images
    est, rec = fit_recorded(
        X,
        y,
        freeze_prob=0.0,
        ridge_lambda=None,
        lr=lr,
        sgd=SGDEpoch(momentum=momentum, weight_decay=weight_decay),
        max_epochs=2,
    )
    assert len(rec.batches) == 2 * int(np.ceil(len(y) / 32))
    reference = torch_sgdm(
        rec.start, rec.batches, lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    got = est.module_.state_dict()
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert est.lr_ == lr
    group = est.net_.optimizer_.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (momentum, weight_decay)


def _conv_weights(module):
    convs = [m for m in module.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    return [c.weight.detach().clone() for c in convs]


def deep_cnn():
    # Four candidate layers, so that freeze_prob takes several values apart.
    layers, inputs = [], 1
    for width in (4, 8, 8, 8):
        layers += [torch.nn.Conv2d(inputs, width, 3, padding=1), torch.nn.ReLU()]
        inputs = width
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(2))


@pytest.mark.parametrize("freeze_mode", ["prefix", "random"])
@pytest.mark.parametrize("freeze_prob", [0.25, 0.5, 0.75])
def test_freeze_prob_freezes_that_share_of_layers(
    small_images, freeze_prob, freeze_mode
):
    X, y = small_images
    est, rec = fit_recorded(
        X,
        y,
        backbone=deep_cnn,
        freeze_prob=freeze_prob,
        freeze_mode=freeze_mode,
        # No head solve: from a ridge head, SGD on this BatchNorm-free
        # random network blows up, and the guard would restore the start.
        ridge_lambda=None,
        max_epochs=1,
        lr=0.01,
    )
    before, after = _conv_weights(rec.start), _conv_weights(est.module_)
    untouched = [bool(torch.equal(b, a)) for b, a in zip(before, after, strict=True)]
    n_frozen = round(freeze_prob * 4)
    assert sum(untouched) == n_frozen
    if freeze_mode == "prefix":
        assert untouched == [True] * n_frozen + [False] * (4 - n_frozen)
    assert est.history_[0, "frozen_fraction"] == n_frozen / 4


def _pickled_size(obj):
    return len(pickle.dumps(obj))


def test_a_pickle_leaves_out_the_training_state(small_images):
    X, y = small_images
    est = tiny_cnn_classifier(device="cpu", max_epochs=2).fit(X, y)
    net = est.net_
    momentum = sum(
        s["momentum_buffer"].numel() * s["momentum_buffer"].element_size()
        for s in net.optimizer_.state.values()
    )
    gram = _pickled_size(dict(net.callbacks_)["ridge_head"].stats_)
    slim = pickle.loads(pickle.dumps(est))
    # The fitted estimator in memory keeps both; its pickle has neither.
    assert momentum > 0 and dict(net.callbacks_)["ridge_head"].stats_ is not None
    assert not slim.net_.optimizer_.state
    assert dict(slim.net_.callbacks_)["ridge_head"].stats_ is None
    np.testing.assert_array_equal(slim.predict_proba(X), est.predict_proba(X))
    # Kept on request (for more SGD steps on the net itself).
    net.keep_training_state = True
    full = _pickled_size(est)
    net.keep_training_state = False
    assert _pickled_size(est) <= full - momentum - 0.9 * gram
    kept = pickle.loads(pickle.dumps(net.set_params(keep_training_state=True)))
    assert kept.optimizer_.state


def test_a_pickle_holds_the_model_once(small_images):
    X, y = small_images
    wide = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 1024), torch.nn.ReLU()
    )
    est = tiny_cnn_classifier(backbone=wide, device="cpu").fit(X, y)
    weights = sum(
        t.numel() * t.element_size() for t in est.module_.state_dict().values()
    )
    # Not twice the model (skorch keeps the module it was given as
    # ``module``, the same object as the trained module_), nor its momentum
    # buffers (as large again), nor the head's Gram statistics (4x larger);
    # the backbone parameter is the untrained module passed in.
    assert _pickled_size(est) < 1.2 * weights + _pickled_size(wide)
    again = pickle.loads(pickle.dumps(est))
    assert again.net_.module is again.net_.module_


def test_the_freezer_keeps_no_layer_references_after_fit(small_images):
    X, y = small_images
    est = tiny_cnn_classifier(device="cpu").fit(X, y)
    freezer = dict(est.net_.callbacks_)["freezer"]
    # A pickle of the net would otherwise store the layers a second time.
    assert freezer._order == []
    assert _pickled_size(freezer) < 10_000
