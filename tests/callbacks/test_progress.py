"""What a fit shows: the aligned per-epoch table and the progress bars."""

import io
import re
import sys

import numpy as np
import pytest
import torch
from conftest import make_tiny_cnn, tiny_cnn_classifier
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback

from skfastretrain import EarlyStopping
from skfastretrain._progress import interactive, resolve_verbose
from skfastretrain.callbacks import EpochTable

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class EveryOther(Callback):
    """Records ``sparse`` on even epochs and a long ``extra`` on odd ones."""

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        if epoch % 2 == 0:
            net.history.record("sparse", 0.5)
        else:
            net.history.record("extra", 123456.789)


def _lines(log, max_epochs=4):
    lines = []
    log.sink = lines.append
    X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    NeuralNetClassifier(
        torch.nn.Linear(4, 2),
        max_epochs=max_epochs,
        train_split=None,
        callbacks=[EveryOther()],
        callbacks__print_log=log,
    ).fit(X, (X[:, 0] > 0).astype(np.int64))
    return [ANSI.sub("", line) for line in lines]


def test_every_row_lines_up_under_the_header():
    lines = _lines(EpochTable(["train_loss", "sparse"]))
    header, _, *rows = lines
    assert header.split() == ["epoch", "train_loss", "sparse", "dur"]
    assert len({len(line) for line in lines}) == 1
    # Right-aligned: every value ends where its header ends.
    ends = {m.end() for m in re.finditer(r"\S+", header)}
    for row in rows:
        assert {m.end() for m in re.finditer(r"\S+", row)} <= ends
    # "sparse" is blank where it was not recorded; "extra" is not a column.
    assert len(rows[0].split()) == 3 and rows[1].split()[2] == "0.5000"


def test_without_columns_the_first_rows_keys_are_shown_but_init_keys():
    class Init(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 1:
                net.history.record("init_acc", 0.1)

    lines = []
    X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    NeuralNetClassifier(
        torch.nn.Linear(4, 2),
        max_epochs=2,
        train_split=None,
        callbacks=[Init()],
        callbacks__print_log=EpochTable(sink=lines.append),
    ).fit(X, (X[:, 0] > 0).astype(np.int64))
    assert lines[0].split() == ["epoch", "train_loss", "dur"]


@pytest.mark.parametrize(
    ("stream", "kernel", "expected"),
    [("tty", False, True), ("file", False, False), ("file", True, True)],
)
def test_interactive_means_a_terminal_or_a_notebook(
    monkeypatch, stream, kernel, expected
):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal() if stream == "tty" else io.StringIO())
    if kernel:
        monkeypatch.setitem(sys.modules, "ipykernel", object())
    else:
        monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert interactive() is expected
    assert resolve_verbose("auto") == int(expected)
    assert resolve_verbose(0) == 0 and resolve_verbose(2) == 2


@pytest.fixture(scope="module")
def digits(digit_images):
    X, y, _, _ = digit_images
    return X[:200], y[:200]


def test_verbose_fit_shows_every_pass_and_an_aligned_table(digits, capsys):
    X, y = digits
    est = tiny_cnn_classifier(
        max_epochs=3, lr="auto", verbose=1, early_stopping=EarlyStopping()
    ).fit(X, y)
    out, err = capsys.readouterr()
    for bar in ("head solve", "lr probe", "validation"):
        assert bar in err, bar
    lines = [ANSI.sub("", line) for line in out.splitlines() if line.strip()]
    table = lines[: 2 + est.n_iter_]
    assert table[0].split() == [
        "epoch",
        "train_loss",
        "train_acc",
        "valid_loss",
        "valid_acc",
        "ridge_lambda",
        "solve_dur",
        "dur",
    ]
    assert len({len(line) for line in table}) == 1
    est.predict(X)
    assert "predict" in capsys.readouterr().err


def test_verbose_0_and_auto_outside_a_terminal_print_nothing(digits, capsys):
    X, y = digits
    for verbose in (0, "auto"):
        tiny_cnn_classifier(verbose=verbose, early_stopping=True).fit(X, y).predict(X)
        assert capsys.readouterr() == ("", "")


def test_progress_bars_leave_the_fit_unchanged(digits, capsys):
    # Dropout draws from torch's global generator, so any extra draw (such
    # as a DataLoader iterated once more for a bar) would change the model.
    X, y = digits

    def with_dropout():
        return torch.nn.Sequential(
            make_tiny_cnn(), torch.nn.Flatten(), torch.nn.Dropout(0.5)
        )

    fits = [
        tiny_cnn_classifier(backbone=with_dropout, max_epochs=2, verbose=v).fit(X, y)
        for v in (0, 1)
    ]
    np.testing.assert_array_equal(*(f.predict_proba(X) for f in fits))
