"""What a fit shows while it runs: progress bars and the per-epoch table."""

import re
import sys

from skorch.callbacks import PrintLog
from tqdm.auto import tqdm

from .._distributed import is_distributed

__all__ = [
    "EpochTable",
    "interactive",
    "progress",
    "resolve_verbose",
    "table_columns",
]


def table_columns(*, solves, validates):
    """The per-epoch table's columns for a fit of FastRetrainClassifier.

    What a reader needs each epoch, where the fit records it: the SGD loss,
    the epoch's model on training rows and on the validation rows, the
    ridge strength chosen and the solve's time (``dur``, the SGD epoch's,
    comes last).
    """
    columns = ["train_loss"]
    if solves:
        columns.append("train_acc")
    if validates:
        columns += ["valid_loss", "valid_acc"]
    if solves:
        columns += ["ridge_lambda", "solve_dur"]
    return columns


def interactive():
    """Whether a person is likely watching: a terminal or a notebook.

    Standard error is a terminal, or an IPython kernel (Jupyter) runs the
    code; scripts whose output goes to a file or a pipe and test runners
    are not interactive.
    """
    if "ipykernel" in sys.modules:
        return True
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def resolve_verbose(verbose):
    """``verbose`` as an int: ``"auto"`` is 1 when a person is watching."""
    if isinstance(verbose, str):
        return int(interactive())
    return int(verbose)


def _rank():
    if not is_distributed():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def progress(iterable, net, *, desc, total=None):
    """``iterable`` with a tqdm bar when ``net.verbose``, on rank 0 only.

    tqdm.auto draws a widget in a notebook and text in a terminal. The bar
    disappears when done (``leave=False``): the table keeps the record.
    """
    if not getattr(net, "verbose", 0) or _rank() != 0:
        return iterable
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    # A generator, not the iterable itself: tqdm.auto's bar calls iter() on
    # an iterable when it is made and again when it is looped over, and each
    # iter() of a DataLoader draws a seed from torch's global generator (and
    # starts its workers), so a bar would change the fit's random stream.
    return tqdm(
        _each(iterable), total=total, desc=desc, leave=False, dynamic_ncols=True
    )


def _each(iterable):
    yield from iterable


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
