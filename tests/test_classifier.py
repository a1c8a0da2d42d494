import os
import pickle
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
import torch
from conftest import make_mlp, make_tiny_cnn
from conftest import tiny_cnn_classifier as _cnn
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from torch import nn

from skfastretrain import FastRetrainClassifier, RidgeHead, SGDEpoch


def test_tiny_cnn_on_digits_beats_chance_clearly(digit_images):
    X, y, X_test, y_test = digit_images
    clf = _cnn(max_epochs=3).fit(X, y)
    assert clf.score(X_test, y_test) > 0.8  # chance is 0.1
    assert clf.n_iter_ == 3
    row = clf.history_[-1]
    for key in (
        "train_loss",
        "dur",
        "frozen_fraction",
        "solve_dur",
        "train_acc_before_solve",
    ):
        assert key in row
    assert "init_solve_dur" in clf.history_[0]


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw", "float"])
def test_image_layouts_agree(small_images, layout):
    X, y = small_images
    reference = _cnn(device="cpu").fit(X, y).decision_function(X[:20])
    if layout == "nhwc":
        X = X[..., None]
    elif layout == "nchw":
        X = X[:, None]
    elif layout == "float":
        X = X / 255.0
    np.testing.assert_allclose(
        _cnn(device="cpu").fit(X, y).decision_function(X[:20]),
        reference,
        rtol=1e-4,
        atol=1e-4,
    )


def test_string_labels_round_trip(small_images):
    X, y = small_images
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    clf = _cnn().fit(X, names[y])
    assert set(clf.predict(X)) <= set(names)
    assert clf.classes_.tolist() == sorted(names)
    assert clf.predict_proba(X).shape == (len(X), 10)


def test_binary_decision_function_sign_matches_predict(small_images):
    X, y = small_images
    mask = y < 2
    clf = _cnn().fit(X[mask], y[mask])
    scores = clf.decision_function(X[mask])
    assert scores.shape == (mask.sum(),)
    np.testing.assert_array_equal(clf.predict(X[mask]), (scores > 0).astype(int))


def test_module_passed_in_is_not_trained_in_place(small_images):
    X, y = small_images
    module = make_tiny_cnn()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    clf = _cnn(backbone=module).fit(X, y)
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key])
    assert clf.module_.backbone is not module
    assert clf.get_params()["backbone"] is module


def test_same_random_state_same_predictions(small_images):
    X, y = small_images
    a = _cnn(random_state=7, max_epochs=2, device="cpu").fit(X, y).predict_proba(X)
    b = _cnn(random_state=7, max_epochs=2, device="cpu").fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


def test_fit_leaves_global_torch_rng_alone(small_images):
    X, y = small_images
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _cnn().fit(X, y)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("ridge_lambda", [None, 1.0])
@pytest.mark.parametrize("freeze_prob", [0.0, 0.5])
def test_four_way_ablation_by_parameters(small_images, ridge_lambda, freeze_prob):
    X, y = small_images
    clf = _cnn(ridge_lambda=ridge_lambda, freeze_prob=freeze_prob, max_epochs=2)
    clf.fit(X, y)
    history = clf.history_
    assert history[:, "frozen_fraction"][-1] == (0.0 if freeze_prob == 0 else 0.5)
    solved = "solve_dur" in history[-1]
    assert solved == (ridge_lambda is not None)


def test_freeze_schedule(small_images):
    X, y = small_images
    schedule = [0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75]
    clf = _cnn(freeze_prob=schedule, max_epochs=8, ridge_lambda=None).fit(X, y)
    # The tiny CNN has two candidate convs: round(n * p) with Python's
    # round-half-to-even freezes 0, 0, 0, 0, 1, 1, 2, 2 of them.
    assert clf.history_[:, "frozen_fraction"] == [0, 0, 0, 0, 0.5, 0.5, 1, 1]


def test_clone_gives_unfitted_equal_params(small_images):
    X, y = small_images
    clf = _cnn(freeze_prob=[0.1, 0.2]).set_params(max_epochs=2).fit(X, y)
    copy = clone(clf)
    assert not hasattr(copy, "net_")
    assert copy.get_params()["freeze_prob"] == [0.1, 0.2]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_over_freeze_prob_and_lambda(digits, n_jobs):
    X, y = digits
    grid = GridSearchCV(
        FastRetrainClassifier(make_mlp, max_epochs=1, random_state=0, device="cpu"),
        {"freeze_prob": [0.0, 0.5], "ridge_lambda": [0.1, 10.0]},
        cv=2,
        n_jobs=n_jobs,
    )
    grid.fit(X[:400], y[:400])
    # The reference: each candidate fitted and scored by hand on the same
    # stratified folds, which the search must reproduce exactly.
    folds = list(StratifiedKFold(2).split(X[:400], y[:400]))
    for params, score in zip(
        grid.cv_results_["params"], grid.cv_results_["mean_test_score"], strict=True
    ):
        est = FastRetrainClassifier(
            make_mlp, max_epochs=1, random_state=0, device="cpu"
        )
        scores = [
            clone(est.set_params(**params))
            .fit(X[train], y[train])
            .score(X[test], y[test])
            for train, test in folds
        ]
        assert score == np.mean(scores), params


def test_sample_weight_is_routed_through_pipeline_and_grid_search(digits):
    import sklearn

    X, y = digits[0][:400], digits[1][:400]
    w = np.random.default_rng(0).uniform(0.2, 3.0, size=len(y))
    params = {"max_epochs": 1, "random_state": 0, "device": "cpu"}
    with sklearn.config_context(enable_metadata_routing=True):
        clf = FastRetrainClassifier(make_mlp, **params)
        clf.set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        scaler = StandardScaler().set_fit_request(sample_weight=False)
        pipe = make_pipeline(scaler, clf)
        grid = GridSearchCV(pipe, {"fastretrainclassifier__ridge_lambda": [1.0]}, cv=2)
        grid.fit(X, y, sample_weight=w)
    # The refit on every row got the weights: it equals a weighted fit by hand.
    scaler = StandardScaler().fit(X)
    ref = FastRetrainClassifier(make_mlp, ridge_lambda=1.0, **params)
    ref.fit(scaler.transform(X), y, sample_weight=w)
    np.testing.assert_array_equal(
        grid.predict_proba(X[:50]), ref.predict_proba(scaler.transform(X[:50]))
    )
    unweighted = FastRetrainClassifier(make_mlp, ridge_lambda=1.0, **params)
    unweighted.fit(scaler.transform(X), y)
    assert not np.array_equal(
        grid.predict_proba(X[:50]), unweighted.predict_proba(scaler.transform(X[:50]))
    )


def test_pipeline_with_preprocessing(digits):
    X, y = digits
    pipe = make_pipeline(
        StandardScaler(),
        FastRetrainClassifier(make_mlp, max_epochs=3, random_state=0, device="cpu"),
    )
    pipe.fit(X[:500], y[:500])
    scaler = StandardScaler().fit(X[:500])
    clf = FastRetrainClassifier(make_mlp, max_epochs=3, random_state=0, device="cpu")
    clf.fit(scaler.transform(X[:500]), y[:500])
    np.testing.assert_array_equal(
        pipe.predict_proba(X[500:800]), clf.predict_proba(scaler.transform(X[500:800]))
    )


def test_pipeline_with_image_transformer(small_images):
    X, y = small_images
    pipe = make_pipeline(
        FunctionTransformer(lambda a: a.astype(np.float32) / 255.0), _cnn(device="cpu")
    )
    pipe.fit(X, y)
    scaled = X.astype(np.float32) / 255.0
    np.testing.assert_array_equal(
        pipe.predict_proba(X), _cnn(device="cpu").fit(scaled, y).predict_proba(scaled)
    )


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_persistence_round_trip_in_new_process(small_images, tmp_path, dump):
    X, y = small_images
    clf = _cnn(device="cpu").fit(X, y)
    path = tmp_path / "model.bin"
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", clf.predict_proba(X))
    if dump == "pickle":
        path.write_bytes(pickle.dumps(clf))
        load = "pickle.loads(open(path, 'rb').read())"
    else:
        joblib.dump(clf, path)
        load = "joblib.load(path)"
    script = textwrap.dedent(f"""
        import pickle, joblib, numpy as np
        path = {str(path)!r}
        clf = {load}
        got = clf.predict_proba(np.load({str(tmp_path / "X.npy")!r}))
        np.testing.assert_array_equal(got, np.load({str(tmp_path / "expected.npy")!r}))
        print("ok")
    """)
    # The backbone factory is pickled by reference to the tests' conftest.
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fitted_model_unpickles_on_cpu(small_images, tmp_path):
    X, y = small_images
    clf = _cnn(device="cuda").fit(X, y)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(clf))
    expected = clf.predict_proba(X)
    script = textwrap.dedent(f"""
        import pickle, numpy as np, warnings
        warnings.simplefilter("ignore")
        clf = pickle.loads(open({str(path)!r}, "rb").read())
        assert str(next(clf.module_.parameters()).device) == "cpu"
        np.save({str(tmp_path / "got.npy")!r}, clf.predict_proba(
            np.load({str(tmp_path / "X.npy")!r})))
    """)
    np.save(tmp_path / "X.npy", X)
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.path.dirname(__file__),
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(np.load(tmp_path / "got.npy"), expected, atol=1e-4)


def test_bfloat16_precision_fits_and_predicts_like_float32(small_images):
    X, y = small_images
    ref = _cnn(max_epochs=2).fit(X, y)
    clf = _cnn(max_epochs=2, precision="bfloat16").fit(X, y)
    assert clf.module_.precision == "bfloat16"
    proba = clf.predict_proba(X)
    assert proba.dtype == ref.predict_proba(X).dtype
    # Same seed and data; bf16 rounding moves only a few predictions.
    assert np.mean(clf.predict(X) == ref.predict(X)) > 0.9


@pytest.mark.parametrize("lr_schedule", ["constant", "cosine"])
def test_lr_schedule(small_images, lr_schedule):
    X, y = small_images
    clf = _cnn(max_epochs=2, lr=0.05, sgd=SGDEpoch(lr_schedule=lr_schedule)).fit(X, y)
    lrs = [g["lr"] for g in clf.net_.optimizer_.param_groups]
    if lr_schedule == "constant":
        assert lrs == [0.05] * len(lrs)
    else:
        # Annealed batch by batch: the last step of the last epoch ends at 0.
        np.testing.assert_allclose(lrs, 0.0, atol=1e-12)
        n_batches = int(np.ceil(len(y) / clf.batch_size))
        assert dict(clf.net_.callbacks_)["lr_schedule"].lr_scheduler_.T_max == (
            2 * n_batches
        )


def test_user_callbacks_run_after_own_and_are_copied(small_images):
    from skorch.callbacks import Callback

    class Spy(Callback):
        def on_epoch_end(self, net, **kwargs):
            self.keys = set(net.history[-1])

    spy = Spy()
    clf = _cnn(callbacks=[spy]).fit(*small_images)
    assert not hasattr(spy, "keys")
    copied = dict(clf.net_.callbacks_)["Spy"]
    assert "solve_dur" in copied.keys


def test_head_rule_for_module_ending_in_linear(small_images):
    X, y = small_images

    def backbone():
        return nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 1000)
        )

    clf = _cnn(backbone=backbone).fit(X, y)
    assert clf.module_.head.in_features == 4 * 6 * 6
    assert clf.module_.head.out_features == 10


# -- other input forms -----------------------------------------------------------


@pytest.fixture
def digit_files(tmp_path, digit_images):
    from PIL import Image

    X, y, _, _ = digit_images
    paths = []
    for i, image in enumerate(X[:120]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return np.array(paths), y[:120]


def test_fit_predict_on_file_paths_matches_arrays(digit_files, digit_images):
    paths, y = digit_files
    X = digit_images[0][:120]
    from_files = _cnn(device="cpu").fit(paths, y)
    from_arrays = _cnn(device="cpu").fit(X, y)
    np.testing.assert_allclose(
        from_files.predict_proba(paths), from_arrays.predict_proba(X), atol=1e-5
    )
    assert not hasattr(from_files, "n_features_in_")


def test_fit_on_dataset_without_y(small_images):
    X, y = small_images
    dataset = torch.utils.data.TensorDataset(
        torch.from_numpy(X[:, None]), torch.from_numpy(y)
    )
    clf = _cnn().fit(dataset)
    assert clf.predict(dataset).shape == y.shape
    assert set(clf.classes_) == set(y)


def test_grid_search_on_slice_dataset(small_images):
    from skorch.helper import SliceDataset

    X, y = small_images
    dataset = torch.utils.data.TensorDataset(
        torch.from_numpy(X[:, None]), torch.from_numpy(y)
    )
    grid = GridSearchCV(_cnn(), {"freeze_prob": [0.0, 0.5]}, cv=2)
    grid.fit(SliceDataset(dataset), y)
    assert len(grid.cv_results_["mean_test_score"]) == 2


def test_augment_touches_sgd_epochs_only(small_images):
    X, y = small_images
    calls = []

    def spy(x):
        calls.append(tuple(x.shape))
        return x

    clf = _cnn(sgd=SGDEpoch(augment=spy), max_epochs=2, device="cpu").fit(X, y)
    assert len(calls) == 2 * len(X)  # two SGD epochs, never the feature passes
    calls.clear()
    clf.predict(X)
    assert calls == []
    # An identity augmentation changes nothing (the reference without it
    # does not store the prefix either, as augmentation does not).
    plain = _cnn(sgd=SGDEpoch(cache_prefix=False), max_epochs=2, device="cpu")
    np.testing.assert_array_equal(
        clf.predict_proba(X), plain.fit(X, y).predict_proba(X)
    )


def test_y_required_for_paths(digit_files):
    paths, _ = digit_files
    with pytest.raises(ValueError, match="y is required"):
        _cnn().fit(paths)


def test_ridge_lambda_auto_records_choice(small_images):
    clf = _cnn(ridge_lambda="auto", max_epochs=2).fit(*small_images)
    chosen = clf.history_[:, "ridge_lambda"]
    assert len(chosen) == 2 and all(c > 0 for c in chosen)
    assert clf.history_[0, "init_ridge_lambda"] > 0


@pytest.mark.parametrize("verbose", [0, 1])
def test_verbose_output(small_images, capsys, verbose):
    X, y = small_images
    clf = _cnn(verbose=verbose).fit(X, y)
    clf.predict(X)
    captured = capsys.readouterr()
    if verbose:
        assert "train_loss" in captured.out  # skorch's epoch table
        assert "predict" in captured.err  # the tqdm bar of predict
    else:
        assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("stages", [None, "resolution", ["1", "4"]])
def test_head_reads_the_stages_asked_for(small_images, stages):
    X, y = small_images
    clf = _cnn(max_epochs=1, head=RidgeHead(stages=stages)).fit(X, y)
    module = clf.net_.module_
    # make_tiny_cnn: 8 channels after the first layers, 16 after the second,
    # pooled to 2 x 2 (64 features).
    widths = {None: (64,), "resolution": (16, 64), "1": (8, 16, 64)}
    expected = widths[stages if not isinstance(stages, list) else "1"]
    assert module.stage_widths == expected
    assert module.head.in_features == sum(expected)
    row = clf.history_[0]
    assert ("stage_weight" in row) is (stages is not None)
    # The held head trains again after the fit, and the fit pickles.
    assert all(p.requires_grad for p in module.head.parameters())
    clone_ = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone_.predict_proba(X), clf.predict_proba(X))


def test_unknown_stage_is_refused(small_images):
    X, y = small_images
    with pytest.raises(ValueError, match="no submodule 'block9'"):
        _cnn(max_epochs=1, head=RidgeHead(stages=["block9"])).fit(X, y)
