"""Plots of a fitted estimator's training history (needs matplotlib)."""

import math
import numbers

__all__ = ["plot_history"]

_INSTALL_HINT = (
    "plot_history needs matplotlib, which is not installed. Install it with "
    "`pip install skfastretrain[plot]` (or `pip install matplotlib`)."
)


def _history_of(estimator):
    """The skorch History of a fitted estimator or skorch net.

    Raises NotFittedError (from the estimator) when it is not fitted.
    """
    from skorch import NeuralNet

    if isinstance(estimator, NeuralNet):
        estimator.check_is_fitted()
        return estimator.history
    if not hasattr(type(estimator), "history_") and not hasattr(estimator, "history_"):
        raise TypeError(
            "plot_history expects a fitted FastRetrainClassifier (or any "
            "estimator with a skorch History in `history_`) or a skorch "
            f"NeuralNet; got {type(estimator).__name__}."
        )
    # FastRetrainClassifier.history_ raises NotFittedError when not fitted.
    return estimator.history_


def _as_float(value):
    """A history value as a float, NaN for a missing or non-numeric value."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value)  # 0-d numpy arrays and torch scalars
    except (TypeError, ValueError):
        return math.nan


def plot_history(estimator, *, keys=("train_loss",), ax=None):
    """Plot per-epoch values of a fitted estimator's training history.

    Draws one line per key against the epoch number, from the skorch History
    in ``estimator.history_``. The records of a :class:`FastRetrainClassifier`
    hold ``train_loss``, ``dur`` (SGD epoch seconds), ``frozen_fraction``,
    and, in epochs with a head solve, ``solve_dur``, ``train_acc`` (the
    epoch's model on training rows), ``train_acc_before_solve`` and (with
    ``ridge_lambda="auto"``) the chosen ``ridge_lambda``; with early
    stopping, ``valid_loss`` and ``valid_acc``; values recorded by
    extra callbacks can be plotted too. Epochs in which a key was not recorded
    are left as gaps in its line.

    Needs matplotlib (``pip install skfastretrain[plot]``).

    Parameters
    ----------
    estimator : FastRetrainClassifier or skorch.NeuralNet
        A fitted estimator (its ``history_`` is read) or a fitted skorch net
        (its ``history``).
    keys : str or sequence of str, default=("train_loss",)
        The history keys to plot, one line each, labeled with the key.
    ax : matplotlib.axes.Axes, default=None
        The axes to draw on. None creates a new figure.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes drawn on, with the epoch on the x axis and a legend.

    Raises
    ------
    ImportError
        When matplotlib is not installed.
    sklearn.exceptions.NotFittedError
        When ``estimator`` is not fitted.
    KeyError
        When a key is recorded in no epoch of the history; the message lists
        the keys that are.
    ValueError
        When ``keys`` is empty.

    See Also
    --------
    FastRetrainClassifier : Its ``history_`` holds the records plotted here.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> import torch
    >>> from sklearn.datasets import load_digits
    >>> from skfastretrain import FastRetrainClassifier, plot_history
    >>> X, y = load_digits(return_X_y=True)
    >>> mlp = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU())
    >>> clf = FastRetrainClassifier(mlp, max_epochs=2, random_state=0)
    >>> clf = clf.fit(X / 16, y)
    >>> ax = plot_history(clf, keys=["train_loss", "train_acc"])
    >>> [line.get_label() for line in ax.get_lines()]
    ['train_loss', 'train_acc']
    >>> ax.get_xlabel()
    'epoch'
    >>> plt.close(ax.figure)
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc

    if isinstance(keys, str):
        keys = (keys,)
    keys = list(keys)
    if not keys:
        raise ValueError("keys is empty: give at least one history key to plot.")
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(
                f"keys must be strings, got {key!r} of type {type(key).__name__}."
            )

    history = _history_of(estimator)
    recorded = []
    for row in history:
        for key in row:
            if key != "batches" and key not in recorded:
                recorded.append(key)
    missing = [key for key in keys if key not in recorded]
    if missing:
        raise KeyError(
            f"{', '.join(map(repr, missing))} not recorded in any epoch of the "
            f"history; recorded keys: {', '.join(sorted(recorded)) or 'none'}."
        )

    if ax is None:
        _, ax = plt.subplots()
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    for key in keys:
        values = [_as_float(row.get(key)) for row in history]
        ax.plot(epochs, values, marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel(keys[0] if len(keys) == 1 else "value")
    if epochs:
        # Whole epochs only: integer ticks.
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return ax
