"""Tests for plot_history (matplotlib's Agg backend, tiny fits)."""

import builtins
import math

import numpy as np
import pytest
from conftest import make_mlp
from sklearn.exceptions import NotFittedError

from skfastretrain import FastRetrainClassifier, RidgeHead
from skfastretrain._plotting import plot_history

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    clf = FastRetrainClassifier(make_mlp(), max_epochs=3, random_state=0)
    return clf.fit(X[:300], y[:300])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_default_plots_train_loss_per_epoch(fitted):
    ax = plot_history(fitted)
    (line,) = ax.get_lines()
    assert line.get_label() == "train_loss"
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(line.get_ydata(), fitted.history_[:, "train_loss"])
    assert ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "train_loss"
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["train_loss"]


def test_several_keys_one_line_each(fitted):
    keys = [
        "train_loss",
        "train_acc_before_solve",
        "frozen_fraction",
        "dur",
        "solve_dur",
    ]
    ax = plot_history(fitted, keys=keys)
    assert [line.get_label() for line in ax.get_lines()] == keys
    for line, key in zip(ax.get_lines(), keys, strict=True):
        np.testing.assert_allclose(line.get_ydata(), fitted.history_[:, key])
    assert ax.get_ylabel() == "value"


def test_single_string_key(fitted):
    ax = plot_history(fitted, keys="frozen_fraction")
    assert [line.get_label() for line in ax.get_lines()] == ["frozen_fraction"]


def test_draws_on_given_axes(fitted):
    _, (ax1, ax2) = plt.subplots(1, 2)
    out = plot_history(fitted, keys=["train_acc_before_solve"], ax=ax2)
    assert out is ax2
    assert len(ax1.get_lines()) == 0
    assert len(ax2.get_lines()) == 1


def test_key_missing_in_some_epochs_leaves_gaps(digits):
    X, y = digits
    clf = FastRetrainClassifier(
        make_mlp(), max_epochs=3, head=RidgeHead(solve_every=2), random_state=0
    ).fit(X[:200], y[:200])
    ax = plot_history(clf, keys=["solve_dur"])
    values = ax.get_lines()[0].get_ydata()
    assert len(values) == 3
    assert any(math.isnan(v) for v in values)
    assert not all(math.isnan(v) for v in values)


def test_ridge_lambda_auto_is_plottable(digits):
    X, y = digits
    clf = FastRetrainClassifier(
        make_mlp(), max_epochs=2, ridge_lambda="auto", random_state=0
    ).fit(X[:300], y[:300])
    values = plot_history(clf, keys="ridge_lambda").get_lines()[0].get_ydata()
    assert np.all(np.asarray(values) > 0)


def test_unknown_key_raises_with_recorded_keys(fitted):
    with pytest.raises(KeyError, match=r"'no_such_key'.*recorded keys:.*train_loss"):
        plot_history(fitted, keys=["train_loss", "no_such_key"])


def test_empty_keys_raise(fitted):
    with pytest.raises(ValueError, match="keys is empty"):
        plot_history(fitted, keys=[])


def test_non_string_key_raises(fitted):
    with pytest.raises(TypeError, match="keys must be strings"):
        plot_history(fitted, keys=[1])


def test_not_fitted_raises():
    clf = FastRetrainClassifier(make_mlp())
    with pytest.raises(NotFittedError):
        plot_history(clf)


def test_object_without_history_raises_type_error():
    with pytest.raises(TypeError, match="fitted FastRetrainClassifier"):
        plot_history(object())


def test_skorch_net_history(fitted):
    ax = plot_history(fitted.net_, keys="train_loss")
    np.testing.assert_allclose(
        ax.get_lines()[0].get_ydata(), fitted.history_[:, "train_loss"]
    )


def test_missing_matplotlib_gives_install_hint(fitted, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install skfastretrain\[plot\]"):
        plot_history(fitted)


def test_public_reexport():
    import skfastretrain

    assert skfastretrain.plot_history is plot_history
    assert "plot_history" in skfastretrain.__all__
