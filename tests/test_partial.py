"""partial_fit: rows and classes added to the head's statistics, against
scikit-learn's Ridge on the features of every row under the fitted backbone."""

import pickle

import numpy as np
import pytest
import torch
from conftest import tiny_cnn_classifier
from sklearn.linear_model import Ridge

from skfastretrain import GramAccumulator, RidgeHead, SGDEpoch, stage_scale
from skfastretrain._data import to_model_layout

#: BatchNorm held at its statistics and no prefix store: the fit's last
#: head solve then sees exactly the features ``module_.features`` computes.
EXACT = {"sgd": SGDEpoch(bn_mode="eval", cache_prefix=False), "device": "cpu"}


def _features(est, X):
    module = est.module_.eval()
    with torch.no_grad():
        x = torch.from_numpy(to_model_layout(X, expects_images=True))
        return module.features(x).double().numpy()


def _ridge(est, X, y, alpha):
    """scikit-learn's Ridge on the features, targets one-hot in {-1, +1}
    over ``est.classes_``."""
    codes = np.searchsorted(est.classes_, y)
    T = -np.ones((len(y), len(est.classes_)))
    T[np.arange(len(y)), codes] = 1.0
    return Ridge(alpha=alpha).fit(_features(est, X), T)


def _assert_close(actual, desired, rtol=1e-6):
    # Relative to the largest coefficient: the features are float32, and
    # the feature pass batches them differently from _features.
    scale = np.abs(desired).max()
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


def _head(est):
    """The head's solved weights, without the fitted temperature."""
    solver = dict(est.net_.callbacks_)["ridge_head"]
    head = est.module_.head
    w = head.weight.detach().double().numpy() / solver.scale_
    b = head.bias.detach().double().numpy() / solver.scale_
    return w, b, solver


@pytest.fixture
def halves(digit_images):
    """Digits 0-4, then rows of every digit."""
    X, y, _, _ = digit_images
    first = np.flatnonzero(y < 5)[:150]
    second = np.setdiff1d(np.arange(400), first)[:150]
    return X[first], y[first], X[second], y[second]


def test_fit_then_partial_fit_equals_ridge_on_all_rows_new_classes_included(halves):
    XA, yA, XB, yB = halves
    est = tiny_cnn_classifier(ridge_lambda=1.0, **EXACT).fit(XA, yA)
    before = est.predict_proba(XA)
    est.partial_fit(XB, yB, classes=np.arange(10))
    assert est.classes_.tolist() == list(range(10))
    assert est.module_.head.out_features == 10
    w, b, solver = _head(est)
    ridge = _ridge(est, np.concatenate([XA, XB]), np.concatenate([yA, yB]), 1.0)
    _assert_close(w, ridge.coef_)
    _assert_close(b, ridge.intercept_)
    assert solver.stats_.n_samples == len(yA) + len(yB)
    # The backbone is the fitted one: only the head moved.
    assert est.predict_proba(XA).shape == (len(yA), 10)
    assert not np.allclose(est.predict_proba(XA)[:, :5], before)


def test_ten_chunks_equal_one_call(halves):
    XA, yA, XB, yB = halves
    X, y = np.concatenate([XA, XB]), np.concatenate([yA, yB])
    whole = tiny_cnn_classifier(ridge_lambda=1.0, **EXACT)
    whole.partial_fit(X, y, classes=np.arange(10))
    chunked = tiny_cnn_classifier(ridge_lambda=1.0, **EXACT)
    for rows in np.array_split(np.arange(len(y)), 10):
        chunked.partial_fit(X[rows], y[rows], classes=np.arange(10))
    _assert_close(_head(chunked)[0], _head(whole)[0])
    _assert_close(_head(chunked)[1], _head(whole)[1])
    # An unfitted estimator's model is the untrained, built one.
    assert chunked.n_iter_ == 0
    ridge = _ridge(chunked, X, y, 1.0)
    _assert_close(_head(chunked)[0], ridge.coef_)


def test_auto_strength_is_kept_relative_to_the_features_scale(halves):
    XA, yA, XB, yB = halves
    # The head solved with the strength chosen (near 2e-4) fits these rows
    # exactly; lr=1e-4 keeps SGD from diverging on it (0.001 diverged).
    est = tiny_cnn_classifier(lr=1e-4, **EXACT).fit(XA, yA)
    solver = dict(est.net_.callbacks_)["ridge_head"]
    before = solver.ridge_lambda_
    est.partial_fit(XB, yB, classes=np.arange(10))

    def unit(H):
        # The mean eigenvalue of the centered Gram matrix.
        Hc = H - H.mean(0)
        return np.trace(Hc.T @ Hc) / H.shape[1]

    HA, HAB = _features(est, XA), _features(est, np.concatenate([XA, XB]))
    expected = before / unit(HA) * unit(HAB)
    assert solver.ridge_lambda_ == pytest.approx(expected, rel=1e-6)
    ridge = _ridge(est, np.concatenate([XA, XB]), np.concatenate([yA, yB]), expected)
    _assert_close(_head(est)[0], ridge.coef_)


def test_labels_outside_classes_are_refused(halves):
    XA, yA, XB, yB = halves
    est = tiny_cnn_classifier(**EXACT).fit(XA, yA)
    with pytest.raises(ValueError, match=r"labels \[5, 6, 7, 8, 9\].*not in classes"):
        est.partial_fit(XB, yB)


def test_the_first_call_needs_classes(halves):
    XA, yA, _, _ = halves
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        tiny_cnn_classifier().partial_fit(XA, yA)


@pytest.mark.parametrize(
    "params",
    [
        {"head": RidgeHead(reuse_features=True)},
        # BatchNorm layers that train: the solve's pass re-estimates them.
        {"sgd": SGDEpoch(bn_mode="train", cache_prefix=False)},
    ],
)
def test_a_fit_whose_statistics_are_not_its_models_is_extended_with_a_warning(
    halves, params
):
    XA, yA, XB, yB = halves
    est = tiny_cnn_classifier(**{**EXACT, **params}).fit(XA, yA)
    with pytest.warns(UserWarning, match="not those of the model's features"):
        est.partial_fit(XB, yB, classes=np.arange(10))
    assert est.classes_.tolist() == list(range(10))


def test_without_head_solves_there_is_nothing_to_extend(halves):
    XA, yA, XB, yB = halves
    est = tiny_cnn_classifier(ridge_lambda=None, **EXACT).fit(XA, yA)
    with pytest.raises(ValueError, match="no head solve"):
        est.partial_fit(XB, yB)


def test_a_pickle_keeps_the_statistics_only_when_asked(halves):
    XA, yA, XB, yB = halves
    fitted = {
        keep: tiny_cnn_classifier(
            ridge_lambda=1.0, head=RidgeHead(keep_statistics=keep), **EXACT
        ).fit(XA, yA)
        for keep in (False, True)
    }
    sizes = {keep: len(pickle.dumps(est)) for keep, est in fitted.items()}
    d = fitted[True].module_.head.in_features
    # The Gram matrix alone is d x d float64.
    assert sizes[True] - sizes[False] >= 8 * d * d
    with pytest.raises(ValueError, match="statistics were not kept"):
        pickle.loads(pickle.dumps(fitted[False])).partial_fit(
            XB, yB, classes=np.arange(10)
        )
    loaded = pickle.loads(pickle.dumps(fitted[True]))
    loaded.partial_fit(XB, yB, classes=np.arange(10))
    fitted[True].partial_fit(XB, yB, classes=np.arange(10))
    np.testing.assert_array_equal(_head(loaded)[0], _head(fitted[True])[0])


def test_a_head_on_every_stage_is_extended_with_its_column_scaling(halves):
    XA, yA, XB, yB = halves
    est = tiny_cnn_classifier(
        ridge_lambda=1.0, head=RidgeHead(stages="auto"), **EXACT
    ).fit(XA, yA)
    widths = est.module_.stage_widths
    assert len(widths) == 2  # make_tiny_cnn's block, then its last layer
    est.partial_fit(XB, yB, classes=np.arange(10))
    X, y = np.concatenate([XA, XB]), np.concatenate([yA, yB])
    H = _features(est, X)
    T = -np.ones((len(y), 10))
    T[np.arange(len(y)), y] = 1.0
    stats = GramAccumulator(H.shape[1], 10)
    stats.update(torch.from_numpy(H), torch.from_numpy(T))
    # The solve's scaling of the columns, on the statistics of every row.
    scale = stage_scale(stats, widths, 1.0).numpy()
    ridge = Ridge(alpha=1.0).fit(H * scale, T)
    _assert_close(_head(est)[0], ridge.coef_ * scale)


def test_a_refused_call_leaves_the_classes_and_head_as_they_were(halves):
    XA, yA, XB, yB = halves
    est = tiny_cnn_classifier(ridge_lambda=1.0, **EXACT).fit(XA, yA)
    rgb = np.repeat(XB[..., None], 3, axis=-1)
    with pytest.raises(ValueError, match="1-channel"):
        est.partial_fit(rgb, yB, classes=np.arange(10))
    assert est.classes_.tolist() == [0, 1, 2, 3, 4]
    assert est.module_.head.out_features == 5


def test_a_list_of_images_is_added_as_the_array_is(halves):
    XA, yA, XB, yB = halves
    heads = []
    for new_rows in (XB, list(XB)):
        est = tiny_cnn_classifier(ridge_lambda=1.0, **EXACT).fit(XA, yA)
        est.partial_fit(new_rows, yB, classes=np.arange(10))
        heads.append(_head(est)[0])
    _assert_close(heads[1], heads[0])


def test_weighted_calls_equal_ridge_with_sample_weight(halves):
    XA, yA, XB, yB = halves
    rng = np.random.default_rng(2)
    wA, wB = rng.uniform(0.2, 3.0, len(yA)), rng.uniform(0.2, 3.0, len(yB))
    est = tiny_cnn_classifier(ridge_lambda=1.0, **EXACT)
    est.partial_fit(XA, yA, classes=np.arange(10), sample_weight=wA)
    est.partial_fit(XB, yB, sample_weight=wB)
    X, y, w = np.concatenate([XA, XB]), np.concatenate([yA, yB]), np.r_[wA, wB]
    T = -np.ones((len(y), 10))
    T[np.arange(len(y)), y] = 1.0
    ridge = Ridge(alpha=1.0).fit(_features(est, X), T, sample_weight=w)
    _assert_close(_head(est)[0], ridge.coef_)
