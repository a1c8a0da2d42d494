"""FastRetrainRegressor against independent references: scikit-learn's Ridge
on the fitted features, a plain torch SGD step on the squared error, and
scikit-learn's metrics."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from conftest import Recorder, make_mlp, tiny_cnn_regressor
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetRegressor
from skorch.dataset import Dataset
from skorch.helper import predefined_split

from skfastretrain import (
    DivergenceWarning,
    EarlyStopping,
    FastRetrainRegressor,
    RidgeHead,
    RidgeHeadSolver,
    SGDEpoch,
    TrainingCheckpoint,
    ValidationScoring,
)
from skfastretrain._data import to_model_layout

#: BatchNorm held at its statistics and no prefix store: the last head
#: solve then sees exactly the features ``module_.features`` computes. The
#: random CNN's BatchNorm then holds its initial statistics, which leave its
#: activations unnormalized: a small rate keeps SGD from diverging.
EXACT = {"sgd": SGDEpoch(bn_mode="eval", cache_prefix=False), "lr": 3e-5}


@pytest.fixture(scope="module")
def targets(digit_images):
    """The digits' images with two real targets: the digit's value and the
    mean ink, on different scales."""
    X, digit, _, _ = digit_images
    ink = X.reshape(len(X), -1).mean(1)
    Y = np.c_[digit / 9.0, 100.0 * ink / 255.0 + 7.0]
    return X[:300], Y[:300]


def _features(est, X):
    module = est.module_.eval()
    with torch.no_grad():
        x = torch.from_numpy(to_model_layout(X, expects_images=True))
        return module.features(x).double().numpy()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("columns", [None, 1, 2])
def test_final_head_is_ridge_on_the_final_features(targets, columns, weighted):
    X, Y = targets
    y = Y[:, 0] if columns is None else Y[:, :columns]
    w = np.random.default_rng(0).integers(1, 4, size=len(y)) if weighted else None
    reg = tiny_cnn_regressor(
        ridge_lambda=1.0, head=RidgeHead(blend=1.0), max_epochs=2, **EXACT
    )
    reg.fit(X, y, sample_weight=w)
    H = _features(reg, X)
    # Ridge is linear in the targets: the solve on the standardized targets,
    # mapped back, is Ridge's on the targets themselves.
    expected = Ridge(alpha=1.0).fit(H, y, sample_weight=w).predict(H)
    pred = reg.predict(X)
    # The shape of y, as LinearRegression keeps it (Ridge ravels one column).
    assert pred.shape == y.shape
    expected = expected.reshape(y.shape)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(pred, expected, rtol=1e-5, atol=1e-5 * scale)


def test_targets_are_standardized_with_the_weights(targets):
    X, Y = targets
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=len(Y))
    reg = tiny_cnn_regressor().fit(X, Y, sample_weight=w)
    mean = np.average(Y, axis=0, weights=w)
    np.testing.assert_allclose(reg.y_mean_, mean)
    np.testing.assert_allclose(
        reg.y_scale_, np.sqrt(np.average((Y - mean) ** 2, axis=0, weights=w))
    )
    assert reg.n_outputs_ == 2


def test_predictions_follow_an_affine_change_of_the_targets(targets):
    # SGD on raw targets would take steps 100 times larger on 100 * y.
    X, Y = targets
    y = Y[:, 0]
    first = tiny_cnn_regressor(max_epochs=2).fit(X, y).predict(X)
    second = tiny_cnn_regressor(max_epochs=2).fit(X, 100 * y + 5).predict(X)
    np.testing.assert_allclose(second, 100 * first + 5, rtol=1e-4, atol=1e-3)


def test_a_constant_target_is_predicted(targets):
    X, _ = targets
    reg = tiny_cnn_regressor().fit(X, np.full(len(X), 3.5))
    np.testing.assert_allclose(reg.predict(X[:10]), 3.5, atol=1e-5)
    assert reg.y_scale_ == 1.0


def test_the_sgd_step_descends_the_weighted_squared_error(digits):
    # One full-batch SGD step with no head solve, against the same step
    # taken by hand in a plain torch loop from the fit's starting module.
    X, digit = digits
    # Two outputs: the loss is the mean over them, then over the rows.
    X, y = X[:64], np.c_[digit[:64] / 9.0, X[:64].mean(1)]
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=len(y))
    reg = FastRetrainRegressor(
        make_mlp,
        ridge_lambda=None,
        freeze_prob=0.0,
        lr=0.1,
        batch_size=len(y),
        max_epochs=1,
        random_state=0,
        device="cpu",
        callbacks=[("rec", Recorder())],
    ).fit(X, y, sample_weight=w)
    start = dict(reg.net_.callbacks_)["rec"].start
    z = torch.from_numpy((y - reg.y_mean_) / reg.y_scale_).float()
    weights = torch.from_numpy(w).float()
    loss = (weights * ((start(torch.from_numpy(X)) - z) ** 2).mean(1)).sum()
    loss = loss / weights.sum()
    loss.backward()
    for (name, before), after in zip(
        start.named_parameters(), reg.module_.parameters(), strict=True
    ):
        # The first step of SGD with momentum is lr times the gradient.
        expected = before.detach() - 0.1 * before.grad
        torch.testing.assert_close(after.detach(), expected, msg=name)


def test_a_plain_skorch_regressor_solves_and_scores_its_head():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    y = (X @ rng.normal(size=(5, 2)) + 0.1 * rng.normal(size=(200, 2))).astype(
        np.float32
    )
    valid = Dataset(X[150:], y[150:])
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
    )
    net = NeuralNetRegressor(
        module,
        lr=0.0,  # the features stay as they start: the head is Ridge's
        max_epochs=1,
        train_split=predefined_split(valid),
        verbose=0,
        callbacks=[
            RidgeHeadSolver(ridge_lambda=1.0, blend=1.0, random_state=0),
            ValidationScoring(n_iter_no_change=None),
        ],
    ).fit(X[:150], y[:150])
    with torch.no_grad():
        H = module[:2](torch.from_numpy(X)).double().numpy()
    ridge = Ridge(alpha=1.0).fit(H[:150], y[:150])
    np.testing.assert_allclose(net.predict(X), ridge.predict(H), atol=1e-4)
    row = net.history[-1]
    pred = net.predict(X[150:])
    assert row["valid_r2"] == pytest.approx(r2_score(y[150:], pred), rel=1e-5)
    assert row["valid_loss"] == pytest.approx(
        mean_squared_error(y[150:], pred), rel=1e-5
    )
    assert "train_r2" in row and "train_acc" not in row


def test_early_stopping_scores_r2_on_held_out_rows(targets):
    X, Y = targets
    reg = tiny_cnn_regressor(
        max_epochs=3, early_stopping=EarlyStopping(scoring="r2", n_iter_no_change=5)
    ).fit(X, Y)
    history = reg.history_
    assert "init_valid_r2" in history[0]
    scores = [history[0]["init_valid_r2"], *history[:, "valid_r2"]]
    assert reg.best_epoch_ == int(np.argmax(scores))


def test_a_diverging_regression_keeps_its_start(targets):
    X, Y = targets
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = tiny_cnn_regressor(lr=50.0, max_epochs=3).fit(X, Y[:, 0])
    assert any(issubclass(w.category, DivergenceWarning) for w in caught)
    assert reg.score(X, Y[:, 0]) > 0.3


def test_a_head_on_every_stage_and_a_resumed_fit(targets, tmp_path):
    X, Y = targets
    params = {"head": RidgeHead(stages="auto"), "max_epochs": 2}
    whole = tiny_cnn_regressor(**params).fit(X, Y)
    assert "stage_weight" in whole.history_[0]
    path = tmp_path / "fit.pt"
    first = tiny_cnn_regressor(
        **{**params, "max_epochs": 1}, callbacks=[TrainingCheckpoint(path)]
    ).fit(X, Y)
    assert first.n_iter_ == 1
    resumed = tiny_cnn_regressor(**params, callbacks=[TrainingCheckpoint(path)])
    resumed.fit(X, Y, resume=True)
    np.testing.assert_allclose(resumed.predict(X), whole.predict(X), rtol=1e-5)


def test_transformed_target_and_grid_search(targets):
    X, Y = targets
    y = Y[:, 1]
    ttr = TransformedTargetRegressor(
        regressor=tiny_cnn_regressor(), func=np.log, inverse_func=np.exp
    ).fit(X, y)
    assert ttr.predict(X[:5]).shape == (5,)
    search = GridSearchCV(
        tiny_cnn_regressor(), {"ridge_lambda": [0.1, 10.0]}, cv=2
    ).fit(X, y)
    assert search.best_params_["ridge_lambda"] in (0.1, 10.0)
    assert search.best_estimator_.score(X, y) == pytest.approx(
        r2_score(y, search.best_estimator_.predict(X))
    )


@pytest.mark.parametrize(
    ("params", "y", "match"),
    [
        ({"head": "residual"}, None, "residual"),
        ({"early_stopping": EarlyStopping(scoring="accuracy")}, None, "accuracy"),
        ({}, "nan", "NaN"),
        ({}, "text", "could not convert"),
    ],
)
def test_what_a_regressor_refuses(targets, params, y, match):
    X, Y = targets
    if y == "nan":
        Y = Y.copy()
        Y[3, 0] = np.nan
    elif y == "text":
        Y = np.array(["a"] * len(X))
    with pytest.raises(ValueError, match=match):
        tiny_cnn_regressor(**params).fit(X, Y)


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not regression targets"):
        tiny_cnn_regressor().fit(str(tmp_path))


def test_no_class_weight():
    with pytest.raises(TypeError):
        FastRetrainRegressor(class_weight="balanced")


def test_the_epoch_table_shows_r2(targets, capsys):
    X, Y = targets
    tiny_cnn_regressor(verbose=1, early_stopping=True).fit(X, Y)
    header = next(
        line for line in capsys.readouterr().out.splitlines() if "epoch" in line
    )
    assert header.split() == [
        "epoch",
        "train_loss",
        "train_r2",
        "valid_loss",
        "valid_r2",
        "ridge_lambda",
        "solve_dur",
        "dur",
    ]


def test_sample_weight_is_routed_through_pipeline_and_grid_search(digits):
    import sklearn

    X, y = digits[0][:300], digits[1][:300] / 9.0
    w = np.random.default_rng(0).uniform(0.2, 3.0, size=len(y))
    params = {"max_epochs": 1, "random_state": 0, "device": "cpu"}
    with sklearn.config_context(enable_metadata_routing=True):
        reg = FastRetrainRegressor(make_mlp, **params)
        reg.set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        scaler = StandardScaler().set_fit_request(sample_weight=False)
        pipe = make_pipeline(scaler, reg)
        grid = GridSearchCV(pipe, {"fastretrainregressor__ridge_lambda": [1.0]}, cv=2)
        grid.fit(X, y, sample_weight=w)
    # The refit on every row got the weights: it equals a weighted fit by hand.
    Xs = StandardScaler().fit_transform(X)
    ref = FastRetrainRegressor(make_mlp, ridge_lambda=1.0, **params)
    ref.fit(Xs, y, sample_weight=w)
    np.testing.assert_array_equal(grid.predict(X[:50]), ref.predict(Xs[:50]))
    unweighted = FastRetrainRegressor(make_mlp, ridge_lambda=1.0, **params)
    assert not np.array_equal(
        grid.predict(X[:50]), unweighted.fit(Xs, y).predict(Xs[:50])
    )


def test_a_pickled_regressor_predicts_alike(targets):
    X, Y = targets
    reg = tiny_cnn_regressor().fit(X, Y)
    loaded = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(loaded.predict(X[:20]), reg.predict(X[:20]))
    np.testing.assert_array_equal(loaded.y_mean_, reg.y_mean_)
