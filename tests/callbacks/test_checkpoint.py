import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_cnn
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, LRScheduler
from torch.optim.lr_scheduler import CosineAnnealingLR

import skfastretrain
from skfastretrain import (
    L2SP,
    DeltaRegularizer,
    FastRetrainClassifier,
    LayerFreezer,
    RidgeHead,
    RidgeHeadSolver,
    SGDEpoch,
    TrainingCheckpoint,
)
from skfastretrain.callbacks._checkpoint import read_checkpoint, write_atomic

N_KILLS = 10
REPO = Path(skfastretrain.__file__).resolve().parent.parent


# Resumed and uninterrupted runs are compared bit for bit, on the CPU: the
# default device="auto" would move them to a GPU where there is one.
pytestmark = pytest.mark.usefixtures("one_thread")
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ),
]
# cuDNN's convolution backward and AdaptiveAvgPool2d's backward sum with
# atomics in no fixed order, so no two CUDA fits agree bit for bit, resumed or
# not. On the CPU, inputs one float32 ulp apart end 3 epochs up to 1.2e-3
# apart in predict_proba (2e-4 in train_loss); a resume that loses the
# optimizer or loader state is 0.29 to 0.93 off. The CUDA tolerance sits
# between the two (not measured on a GPU: none was at hand).
TOLERANCE = {"cpu": {"rtol": 0, "atol": 0}, "cuda": {"rtol": 0, "atol": 2e-2}}


def _clf(path=None, **kwargs):
    params = {
        "device": "cpu",
        "backbone": make_tiny_cnn,
        "max_epochs": 3,
        "batch_size": 32,
        "lr": 0.05,
        "random_state": 0,
        "callbacks": None if path is None else [TrainingCheckpoint(path)],
    }
    return FastRetrainClassifier(**{**params, **kwargs})


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"freeze_mode": "prefix", "sgd": SGDEpoch(bn_mode="train")},
        # lr 0.05 and 0.01 blow this MLP head up (DivergenceGuard stops them).
        {
            "ridge_lambda": "auto",
            "head": RidgeHead(update="residual", hidden=(8,)),
            "lr": 0.001,
        },
        {"lr": "auto"},
        {"head": RidgeHead(reuse_features=True), "regularizer": "l2sp"},
        {
            "regularizer": DeltaRegularizer(layers=["2", "5"]),
            "sgd": SGDEpoch(augment="light"),
        },
    ],
)
@pytest.mark.parametrize("done", [1, 2])
@pytest.mark.parametrize("device", DEVICES)
def test_resumed_fit_equals_uninterrupted_fit(
    small_images, tmp_path, config, done, device
):
    X, y = small_images
    path = tmp_path / "fit.pt"
    config = {**config, "device": device}
    reference = _clf(**config).fit(X, y)
    _clf(path, **{**config, "max_epochs": done}).fit(X, y)
    assert read_checkpoint(path)["epoch"] == done
    resumed = _clf(path, **config).fit(X, y, resume=True)
    assert resumed.n_iter_ == 3
    # The rate the first run's probe chose (lr="auto"), not the probe's start.
    assert resumed.lr_ == reference.lr_
    torch.testing.assert_close(
        (resumed.predict_proba(X), resumed.history_[:, "train_loss"]),
        (reference.predict_proba(X), reference.history_[:, "train_loss"]),
        **TOLERANCE[device],
    )


def test_resume_without_a_file_starts_afresh(small_images, tmp_path):
    X, y = small_images
    fresh = _clf(tmp_path / "new.pt").fit(X, y, resume=True)
    np.testing.assert_array_equal(
        fresh.predict_proba(X), _clf().fit(X, y).predict_proba(X)
    )
    assert read_checkpoint(tmp_path / "new.pt")["epoch"] == 3


def test_resume_of_a_finished_fit_runs_no_epoch(small_images, tmp_path):
    X, y = small_images
    done = _clf(tmp_path / "c.pt").fit(X, y)
    again = _clf(tmp_path / "c.pt").fit(X, y, resume=True)
    assert again.n_iter_ == 3
    np.testing.assert_array_equal(again.predict_proba(X), done.predict_proba(X))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": 0.01}, "other lr"),
        ({"freeze_prob": 0.25}, "other freeze_prob"),
        ({"random_state": 1}, "other random_state"),
        ({"head": RidgeHead(blend=1.0)}, "other head"),
        ({"regularizer": L2SP(alpha=0.5)}, "other regularizer"),
        ({"max_epochs": 1}, "holds 3 epochs, more than max_epochs=1"),
        ({"n_samples": 150}, "other data shape, data labels"),
    ],
)
def test_resume_refuses_another_run(small_images, tmp_path, change, message):
    X, y = small_images
    _clf(tmp_path / "c.pt").fit(X, y)
    n = change.pop("n_samples", len(y))
    with pytest.raises(ValueError, match=message):
        _clf(tmp_path / "c.pt", **change).fit(X[:n], y[:n], resume=True)


def test_resume_needs_a_checkpoint_path(small_images):
    with pytest.raises(
        ValueError, match=r"needs a TrainingCheckpoint\(path\) in callbacks"
    ):
        _clf().fit(*small_images, resume=True)
    with pytest.raises(TypeError, match="resume must be a bool"):
        _clf().fit(*small_images, resume="yes")


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint", "truncate", "other object"],
)
def test_corrupt_checkpoint_is_a_clear_error(small_images, tmp_path, content):
    X, y = small_images
    path = tmp_path / "c.pt"
    _clf(path, max_epochs=1).fit(X, y)
    if content == "truncate":
        data = path.read_bytes()
        content = data[: len(data) // 2]
    elif content == "other object":
        torch.save({"weights": torch.zeros(3)}, path)
        content = path.read_bytes()
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"corrupt|not an skfastretrain checkpoint"):
        _clf(path).fit(X, y, resume=True)


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    write_atomic({"a": torch.ones(2)}, path)

    def broken_save(obj, f):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_atomic({"a": torch.zeros(2)}, path)
    assert os.listdir(tmp_path) == ["state.pt"]
    assert torch.load(path, weights_only=True)["a"].tolist() == [1.0, 1.0]


def _plain_net(path, max_epochs, resume):
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    return NeuralNetClassifier(
        module,
        criterion=torch.nn.CrossEntropyLoss,
        max_epochs=max_epochs,
        lr=0.1,
        train_split=None,
        verbose=0,
        iterator_train__shuffle=True,
        callbacks=[
            ("freezer", LayerFreezer(0.5, random_state=0)),
            ("ridge", RidgeHeadSolver(random_state=0)),
            ("lr", LRScheduler(CosineAnnealingLR, T_max=30, step_every="batch")),
            ("checkpoint", TrainingCheckpoint(path, resume=resume)),
        ],
    )


def test_callback_resumes_a_plain_skorch_net(digits, tmp_path):
    X, y = digits[0][:300], digits[1][:300]
    path = tmp_path / "net.pt"
    reference = _plain_net(None, 4, False).fit(X, y).predict_proba(X)
    _plain_net(path, 2, False).fit(X, y)
    resumed = _plain_net(path, 4, True).fit(X, y)
    assert len(resumed.history) == 4
    np.testing.assert_array_equal(resumed.predict_proba(X), reference)


class _Interrupt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, net, training=False, **kwargs):
        if (
            training
            and len(net.history) == self.epoch
            and len(net.history[-1, "batches"]) == 2
        ):
            raise KeyboardInterrupt


def test_keyboard_interrupt_keeps_the_last_complete_epoch(small_images):
    X, y = small_images
    one_epoch = _clf(max_epochs=1).fit(X, y)
    with pytest.warns(
        UserWarning, match="during epoch 2.*last completed epoch, 1"
    ) as record:
        clf = _clf(callbacks=[_Interrupt(2)]).fit(X, y)
    assert record[0].filename == __file__
    assert clf.n_iter_ == 1 and len(clf.history_) == 1
    np.testing.assert_array_equal(clf.predict_proba(X), one_epoch.predict_proba(X))
    assert all(p.requires_grad for p in clf.module_.parameters())


def test_keyboard_interrupt_in_the_first_epoch_is_raised(small_images):
    with pytest.raises(KeyboardInterrupt):
        _clf(callbacks=[_Interrupt(1)]).fit(*small_images)


class _Poison(Callback):
    def on_batch_begin(self, net, training=False, **kwargs):
        if training and len(net.history) == 2:
            with torch.no_grad():
                next(net.module_.parameters()).fill_(float("nan"))


def test_divergence_names_epoch_and_lr_and_keeps_the_last_good_weights(small_images):
    X, y = small_images
    good = _clf(max_epochs=1).fit(X, y).module_.state_dict()
    with pytest.raises(ValueError, match=r"diverged.*in epoch 2 \(lr=0\.05\)") as info:
        _clf(callbacks=[_Poison()]).fit(X, y)
    assert (info.value.epoch, info.value.lr) == (2, 0.05)
    for name, value in info.value.state_dict.items():
        torch.testing.assert_close(value, good[name], rtol=0, atol=0)


# A parent that imports once and forks one fitting child per kill: imports
# take seconds, forks milliseconds. Each child waits for its go file.
_SCRIPT = """
import os
import pickle
import sys
import time
import numpy as np
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from conftest import make_tiny_cnn
from skfastretrain import FastRetrainClassifier, TrainingCheckpoint
X, y = np.load({x!r}), np.load({y!r})
for i in range({n}):
    pid = os.fork()
    if pid == 0:
        while not os.path.exists(f"{tmp}/go{{i}}"):
            time.sleep(0.002)
        FastRetrainClassifier(
            make_tiny_cnn, callbacks=[TrainingCheckpoint({path!r})], **{params!r}
        ).fit(X, y, resume=True)
        os._exit(0)
    with open(f"{tmp}/pid.tmp", "w") as f:
        f.write(str(pid))
    os.replace(f"{tmp}/pid.tmp", f"{tmp}/pid{{i}}")
    os.waitpid(pid, 0)
"""


def _stamp(path):
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def _wait_for_new_checkpoint(proc, path, before, timeout=120):
    start = time.monotonic()
    while _stamp(path) == before:
        if proc.poll() is not None or time.monotonic() - start > timeout:
            return False
        time.sleep(0.005)
    return True


def _read_when_there(path, proc, timeout=60):
    start = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() - start < timeout
        time.sleep(0.002)
    return int(path.read_text())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fit_survives_kill_9_at_random_points(small_images, tmp_path):
    X, y = small_images
    params = {"max_epochs": 40, "batch_size": 16, "lr": 0.05, "random_state": 0}
    params["device"] = "cpu"  # compared bit for bit below
    path = tmp_path / "fit.pt"
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    script = tmp_path / "fit.py"
    script.write_text(
        _SCRIPT.format(
            tests=str(Path(__file__).parents[1]),
            x=str(tmp_path / "X.npy"),
            y=str(tmp_path / "y.npy"),
            tmp=str(tmp_path),
            n=N_KILLS,
            path=str(path),
            params=params,
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    rng = np.random.default_rng(0)
    epochs_at_kill = []
    try:
        for i in range(N_KILLS):
            child = _read_when_there(tmp_path / f"pid{i}", parent)
            before = _stamp(path)
            (tmp_path / f"go{i}").touch()
            # Once this child has saved an epoch, kill it at a random point of
            # the next one (SGD, head solve or checkpoint write).
            assert _wait_for_new_checkpoint(parent, path, before)
            start, before = time.monotonic(), _stamp(path)
            assert _wait_for_new_checkpoint(parent, path, before)
            epoch_seconds = time.monotonic() - start
            time.sleep(rng.uniform(0.0, epoch_seconds))
            os.kill(child, signal.SIGKILL)
            state = read_checkpoint(path)  # never corrupt
            assert state["epoch"] < params["max_epochs"], "finished before the kill"
            epochs_at_kill.append(state["epoch"])
    finally:
        parent.kill()
        parent.communicate()
    assert epochs_at_kill == sorted(epochs_at_kill)
    resumed = FastRetrainClassifier(
        make_tiny_cnn, callbacks=[TrainingCheckpoint(path)], **params
    )
    resumed.fit(X, y, resume=True)
    reference = FastRetrainClassifier(make_tiny_cnn, **params).fit(X, y)
    np.testing.assert_array_equal(resumed.predict_proba(X), reference.predict_proba(X))
    # A kill during a write leaves its temporary file, never a broken one.
    in_write = len(list(tmp_path.glob(".fit.pt.*.tmp")))
    print(
        f"\nkill -9 points survived: {len(epochs_at_kill)} (checkpointed epochs "
        f"at the kills: {epochs_at_kill} of {params['max_epochs']}; "
        f"{in_write} during a checkpoint write)"
    )


def test_checkpoints_load_without_running_code(small_images, tmp_path, monkeypatch):
    X, y = small_images
    _clf(tmp_path / "c.pt", max_epochs=1).fit(X, y)
    calls = []
    load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    _clf(tmp_path / "c.pt", max_epochs=2).fit(X, y, resume=True)
    assert calls and all(flag is True for flag in calls)


def test_checkpointed_estimator_pickles_without_a_weight_copy(small_images, tmp_path):
    X, y = small_images
    clf = _clf(tmp_path / "c.pt", max_epochs=1).fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    weights = sum(
        t.numel() * t.element_size() for t in clf.module_.state_dict().values()
    )
    callback = dict(clf.net_.callbacks_)["checkpoint"]
    assert len(pickle.dumps(callback)) < weights / 2


def test_load_changed_copies_only_what_differs():
    from skfastretrain.callbacks._checkpoint import module_copy
    from skfastretrain.callbacks._lr_probe import load_changed

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    saved = module_copy(net)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    versions = {k: v._version for k, v in net.state_dict(keep_vars=True).items()}
    load_changed(net, saved)
    # The same values as load_state_dict would give...
    reference = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    reference.load_state_dict(saved)
    for key, value in net.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key])
    # ...and only the changed tensor was written to.
    after = {k: v._version for k, v in net.state_dict(keep_vars=True).items()}
    assert after.pop("0.weight") > versions.pop("0.weight")
    assert after == versions
