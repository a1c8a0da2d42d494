"""Data-parallel fit under torchrun (gloo on loopback) and searches on Dask."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from conftest import make_mlp
from skorch import NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import Callback
from torch import nn

import skfastretrain
from skfastretrain import FastRetrainClassifier, RidgeHeadSolver
from skfastretrain._distributed import is_distributed, setup_distributed

TIMEOUT = 120  # seconds for one torchrun launch of two CPU processes

# Run by each of the two ranks: a fit that initializes the process group
# from env://, then a bare head solve on the group it left initialized. On
# the CPU (gloo): the ranks' models are compared bit for bit, and on a host
# with one GPU, "auto" would put both ranks on cuda:LOCAL_RANK.
SCRIPT = """
import json, sys
from pathlib import Path

import joblib, numpy as np, torch
import torch.distributed as dist

from conftest import make_tiny_cnn
from skfastretrain import (
    EarlyStopping, FastRetrainClassifier, FastRetrainRegressor, RidgeHead,
    TrainingCheckpoint,
)
from test_distributed import (
    RecordFrozen, head_solve, regression_targets, solve_data, train_images,
)

out = Path(sys.argv[1])

X, y = train_images()
clf = FastRetrainClassifier(
    make_tiny_cnn, max_epochs=2, freeze_prob=0.5, ridge_lambda="auto",
    batch_size=32, lr=0.05, distributed=True, callbacks=[RecordFrozen()],
    device="cpu",
)
clf.fit(X, y)
rank = dist.get_rank()
torch.save(clf.module_.state_dict(), out / f"state{rank}.pt")
solver = dict(clf.net_.callbacks_)["ridge_head"]
record = {
    "frozen": clf.history_[:, "frozen"],
    "n_solved": solver.stats_.n_samples,
    "n_trained": sum(b["train_batch_size"] for b in clf.history_[-1, "batches"]),
    "module_type": type(clf.module_).__name__,
}
(out / f"record{rank}.json").write_text(json.dumps(record))
if rank == 0:
    joblib.dump(clf, out / "model.joblib")

# The group is up now, so "auto" trains data-parallel; no feature pass
# re-estimates BatchNorm statistics here.
params = dict(
    head=RidgeHead(reuse_features=True),
    freeze_mode="prefix",
    batch_size=32,
    lr=0.05,
    device="cpu",
    callbacks=[TrainingCheckpoint(out / "run.pt")],
)
clf = FastRetrainClassifier(make_tiny_cnn, max_epochs=2, **params).fit(X, y)
torch.save(clf.module_.state_dict(), out / f"sgd_state{rank}.pt")
# Rank 0 wrote the checkpoint; every rank resumes from it for one more epoch.
clf = FastRetrainClassifier(make_tiny_cnn, max_epochs=3, **params).fit(
    X, y, resume=True
)
torch.save(clf.module_.state_dict(), out / f"resumed_state{rank}.pt")

# Early stopping: every rank holds out the same rows and stops alike.
clf = FastRetrainClassifier(
    make_tiny_cnn, max_epochs=3, early_stopping=EarlyStopping(tol=1.0),
    batch_size=32, lr=0.05, device="cpu",
).fit(X, y)
torch.save(clf.module_.state_dict(), out / f"es_state{rank}.pt")
(out / f"es{rank}.json").write_text(json.dumps(
    {"losses": clf.history_[:, "valid_loss"], "best": clf.best_epoch_}
))

# A regressor: the same data-parallel path with two real targets.
reg = FastRetrainRegressor(
    make_tiny_cnn, max_epochs=2, batch_size=32, lr=0.003, device="cpu",
).fit(X, regression_targets(X, y))
torch.save(reg.module_.state_dict(), out / f"reg_state{rank}.pt")
(out / f"reg{rank}.json").write_text(
    json.dumps({"r2": reg.history_[:, "train_r2_before_solve"]})
)

coef, intercept = head_solve(*solve_data(), distributed=True)
np.savez(out / f"head{rank}.npz", coef=coef, intercept=intercept)
X_solve, y_solve = solve_data()
coef, intercept = head_solve(
    X_solve, regression_targets(X_solve, y_solve), distributed=True
)
np.savez(out / f"reg_head{rank}.npz", coef=coef, intercept=intercept)
dist.destroy_process_group()
"""


class RecordFrozen(Callback):
    """Record the names of the layers frozen in each epoch."""

    def on_epoch_end(self, net, **kwargs):
        frozen = dict(net.callbacks_)["freezer"].frozen_
        net.history.record("frozen", list(frozen))


def train_images():
    """300 digits as uint8 8x8 images, and their labels."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X[:300].reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8), y[:300]


def solve_data():
    """203 rows (odd, so the two shards differ in size) of 8 features."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(203, 8)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)


def regression_targets(X, y):
    """Two real targets of the rows: the label and the mean of X."""
    return np.c_[y, X.reshape(len(X), -1).mean(1)].astype(np.float32)


def head_solve(X, y, *, distributed):
    """One head solve of a fixed module; returns the head's weight and bias.
    Integer ``y`` are classes (3), real ``y`` regression targets (2)."""
    torch.manual_seed(0)
    regression = y.dtype.kind == "f"
    module = nn.Sequential(
        nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2 if regression else 3)
    )
    net_class = NeuralNetRegressor if regression else NeuralNetClassifier
    criterion = nn.MSELoss if regression else nn.CrossEntropyLoss
    net = net_class(module, criterion=criterion, batch_size=16, verbose=0).initialize()
    solver = RidgeHeadSolver(0.5, calibrate=False, distributed=distributed)
    solver.initialize().solve(net, net.get_dataset(X, y), blend=1.0)
    head = module[-1]
    return head.weight.detach().numpy(), head.bias.detach().numpy()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    """Run SCRIPT on two CPU ranks; return the folder of their outputs."""
    out = tmp_path_factory.mktemp("torchrun")
    script = out / "script.py"
    script.write_text(SCRIPT)
    repo = Path(skfastretrain.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(repo), str(Path(__file__).parent)]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(script),
        str(out),
    ]
    # A new session, so that a hang can be ended with the ranks torchrun
    # started, and no process outlives the test.
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT} s:\n{log[-3000:]}")
    assert proc.returncode == 0, log[-3000:]
    return out


@pytest.mark.parametrize("task", ["", "reg_"])
def test_head_solve_matches_single_process(torchrun_run, task):
    X, y = solve_data()
    if task:
        y = regression_targets(X, y)
    expected = head_solve(X, y, distributed=False)
    for rank in range(2):
        got = np.load(torchrun_run / f"{task}head{rank}.npz")
        np.testing.assert_allclose(got["coef"], expected[0], atol=1e-5)
        np.testing.assert_allclose(got["intercept"], expected[1], atol=1e-5)


@pytest.mark.parametrize("prefix", ["", "sgd_", "resumed_", "es_", "reg_"])
def test_fit_gives_every_rank_the_same_model(torchrun_run, prefix):
    states = [torch.load(torchrun_run / f"{prefix}state{r}.pt") for r in range(2)]
    assert states[0].keys() == states[1].keys()
    for name, value in states[0].items():
        torch.testing.assert_close(value, states[1][name], rtol=0, atol=0, msg=name)


def test_ranks_score_the_same_validation_rows(torchrun_run):
    first, second = (
        json.loads((torchrun_run / f"es{r}.json").read_text()) for r in range(2)
    )
    # tol=1.0: neither epoch gains that much on the start, so both ranks
    # stop after n_iter_no_change=2 epochs.
    assert first == second and len(first["losses"]) == 2


def test_a_regressor_scores_all_rows_on_every_rank(torchrun_run):
    first, second = (
        json.loads((torchrun_run / f"reg{r}.json").read_text()) for r in range(2)
    )
    # R² before each solve, from the score's sums added over the ranks.
    assert first == second and all(np.isfinite(first["r2"]))


def test_rank0_alone_writes_the_checkpoint(torchrun_run):
    from skfastretrain.callbacks._checkpoint import read_checkpoint

    state = read_checkpoint(torchrun_run / "run.pt")
    assert state["epoch"] == 3  # the resumed fit's last epoch
    # One writer: no temporary file is left behind by a race.
    assert not list(torchrun_run.glob(".run.pt.*"))


def test_ranks_freeze_alike_and_solve_on_all_rows(torchrun_run):
    records = [json.loads((torchrun_run / f"record{r}.json").read_text()) for r in "01"]
    # Rank 0's seed on both ranks: the same layers frozen in every epoch.
    assert records[0]["frozen"] == records[1]["frozen"]
    assert any(records[0]["frozen"])
    # The last solve summed both shards' statistics.
    assert records[0]["n_solved"] == records[1]["n_solved"] == 300
    # Each rank ran SGD on its half of the rows only.
    assert records[0]["n_trained"] == records[1]["n_trained"] == 150
    assert records[0]["module_type"] == "FastRetrainModule"


def test_rank0_model_loads_and_predicts(torchrun_run):
    clf = joblib.load(torchrun_run / "model.joblib")
    X, _ = train_images()
    state = torch.load(torchrun_run / "state0.pt")
    for name, value in clf.module_.state_dict().items():
        torch.testing.assert_close(value, state[name])
    # predict is the argmax of the trained rank's module, run by hand.
    module = clf.module_.eval()
    with torch.no_grad():
        logits = module(torch.as_tensor(X[:, None]))
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[logits.argmax(1)])


def test_not_distributed_without_a_process_group():
    assert not is_distributed()
    assert setup_distributed("auto", "cpu") == (False, "cpu")
    assert setup_distributed(False, "cpu") == (False, "cpu")


def test_distributed_true_outside_torchrun_says_how(monkeypatch, digits):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    X, y = digits
    clf = FastRetrainClassifier(make_mlp, max_epochs=1, distributed=True)
    with pytest.raises(RuntimeError, match="torchrun"):
        clf.fit(X[:50], y[:50])


@pytest.mark.parametrize("value", [1, "yes", None])
def test_distributed_is_validated(value, digits):
    X, y = digits
    clf = FastRetrainClassifier(make_mlp, max_epochs=1, distributed=value)
    with pytest.raises(
        ValueError, match=r"'distributed' parameter .*'bool'.* among \{'auto'\}"
    ):
        clf.fit(X[:50], y[:50])


def test_grid_search_on_dask_equals_sequential(digits):
    pytest.importorskip("distributed")
    from dask.distributed import Client, LocalCluster
    from sklearn.model_selection import GridSearchCV

    X, y = digits[0][:300], digits[1][:300]
    search = GridSearchCV(
        FastRetrainClassifier(make_mlp, max_epochs=2, random_state=0, device="cpu"),
        {"lr": [0.003, 0.01], "freeze_prob": [0.0, 0.5]},
        cv=2,
    )
    sequential = search.fit(X, y).cv_results_
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster),
        joblib.parallel_backend("dask"),
    ):
        search.fit(X, y)
    on_dask = search.cv_results_
    np.testing.assert_allclose(
        on_dask["mean_test_score"], sequential["mean_test_score"], atol=1e-12
    )
    for split in ("split0_test_score", "split1_test_score"):
        np.testing.assert_allclose(on_dask[split], sequential[split], atol=1e-12)
    assert on_dask["params"] == sequential["params"]
    assert (
        search.best_params_
        == sequential["params"][np.argmax(sequential["mean_test_score"])]
    )
