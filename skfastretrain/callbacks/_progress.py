"""The per-epoch table a fit prints."""

import re
import sys

from skorch.callbacks import PrintLog

from ._history_keys import (
    SOLVE_DUR,
    SOLVE_LAMBDA,
    TRAIN_LOSS,
    VALID_LOSS,
    score_keys,
)

__all__ = ["EpochTable", "table_columns"]


def table_columns(*, solves, validates, regression=False):
    """The per-epoch table's columns for a fit of the estimators.

    What a reader needs each epoch, where the fit records it: the SGD loss,
    the epoch's model on training rows and on the validation rows (accuracy,
    or R² for a regression), the ridge strength chosen and the solve's time
    (``dur``, the SGD epoch's, comes last).
    """
    keys = score_keys(regression)
    columns = [TRAIN_LOSS]
    if solves:
        columns.append(keys.train)
    if validates:
        columns += [VALID_LOSS, keys.valid]
    if solves:
        columns += [SOLVE_LAMBDA, SOLVE_DUR]
    return columns


class EpochTable(PrintLog):
    """skorch's per-epoch table with the same columns on every row.

    skorch's :class:`~skorch.callbacks.PrintLog` takes each row's columns
    from that row's keys, so a row with keys the first one lacks (or
    without some of them) shifts under the wrong headers. Here the columns
    are fixed when the first row is printed: ``columns`` (those the fit
    will record) or else the first row's keys; a missing value is blank,
    and every column is at least ``min_width`` characters wide so that
    later values line up. In a plain skorch net it replaces the default
    table as ``callbacks__print_log=EpochTable(...)``.

    Parameters
    ----------
    columns : sequence of str or None, default=None
        Keys shown, in this order, after ``epoch`` and before ``dur``; None
        shows the first row's keys (sorted, as skorch does) but those that
        start with ``init_`` (records of the start of the fit).
    min_width : int, default=9
        The narrowest column.
    **kwargs
        Those of :class:`~skorch.callbacks.PrintLog` (``keys_ignored``,
        ``sink``, ``floatfmt``).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skorch import NeuralNetClassifier
    >>> from skfastretrain.callbacks import EpochTable
    >>> lines = []
    >>> X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> net = NeuralNetClassifier(
    ...     torch.nn.Linear(4, 2), max_epochs=2, train_split=None,
    ...     callbacks__print_log=EpochTable(["train_loss"], sink=lines.append),
    ... ).fit(X, (X[:, 0] > 0).astype("int64"))
    >>> len({len(line) for line in lines})
    1
    """

    def __init__(self, columns=None, *, min_width=9, **kwargs):
        super().__init__(**kwargs)
        self.columns = columns
        self.min_width = min_width

    def initialize(self):
        super().initialize()
        self.columns_ = None
        return self

    def _fix_columns(self, row):
        if self.columns is None:
            shown = [
                k
                for k in self._sorted_keys(row.keys())
                if k not in ("epoch", "dur") and not k.startswith("init_")
            ]
        else:
            shown = [k for k in self.columns if k not in self.keys_ignored_]
        head = ["epoch"] if "epoch" not in self.keys_ignored_ else []
        tail = ["dur"] if "dur" not in self.keys_ignored_ else []
        return head + shown + tail

    def _cell(self, row, key):
        if key not in row or isinstance(row[key], (list, tuple, dict)):
            return ""  # not recorded, or no room in a column (layer_lambdas)
        # format_row colours a value only where its <key>_best is True.
        return str(self.format_row(row, key, color="\033[92m"))

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        if self.columns_ is None:
            self.columns_ = self._fix_columns(row)
            self.widths_ = [max(self.min_width, len(k)) for k in self.columns_]
            header = "  ".join(
                k.rjust(w) for k, w in zip(self.columns_, self.widths_, strict=True)
            )
            self._sink(header, net.verbose)
            self._sink("  ".join("-" * w for w in self.widths_), net.verbose)
        cells = []
        for key, width in zip(self.columns_, self.widths_, strict=True):
            text = self._cell(row, key)
            # Colour codes take no room on screen: pad by the visible text.
            visible = len(_strip_ansi(text))
            cells.append(" " * max(0, width - visible) + text)
        self._sink("  ".join(cells), net.verbose)
        if self.sink is print:
            sys.stdout.flush()


def _strip_ansi(text):
    return _ANSI.sub("", text)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
