import pickle

import numpy as np
import pytest
import torch
from conftest import make_mlp
from sklearn.exceptions import NotFittedError
from torch import nn

import skfastretrain.pruning._prune as pruning
from skfastretrain import FastRetrainClassifier, RidgeHead
from skfastretrain.backbones._module import build_module
from skfastretrain.backbones._registry import BackboneSpec
from skfastretrain.pruning._prune import (
    PruningReport,
    count_flops,
    count_params,
    find_prunable,
    prune_filters,
    remove_filters,
)

PRUNE = {
    "pair_fraction": 0.1,
    "min_filters": 32,
    "max_rounds": 2,
    "history_epochs": 1,
    "random_state": 0,
}


def make_cnn():
    """Only the middle conv (48 filters) has more than 32 filters."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 48, 3, padding=1),
        nn.BatchNorm2d(48),
        nn.ReLU(),
        nn.Conv2d(48, 24, 3, padding=1),
        nn.BatchNorm2d(24),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
    )


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # On a few shared cores, torch's intra-op threads spin against each
    # other: one thread runs these small models many times faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted(digit_images):
    X, y, _, _ = digit_images
    torch.manual_seed(0)
    # cpu: the round trips below compare predictions exactly.
    clf = FastRetrainClassifier(
        make_cnn(), max_epochs=3, lr=0.02, freeze_prob=0.0, random_state=0
    )
    return clf.set_params(device="cpu").fit(X, y)


@pytest.fixture(scope="module")
def pruned(fitted, digit_images):
    X, y, X_test, y_test = digit_images
    state = {k: v.clone() for k, v in fitted.module_.state_dict().items()}
    # Validation rows the input model was not fitted on; X_test[300:] stays
    # unseen by both models.
    valid = (X_test[:300], y_test[:300])
    result = prune_filters(fitted, X, y, validation_data=valid, **PRUNE)
    return result, state


def test_pruning_shrinks_model_and_keeps_accuracy(fitted, pruned, digit_images):
    _, _, X_test, y_test = digit_images
    small, _ = pruned
    report = small.pruning_report_
    assert isinstance(report, PruningReport)
    assert report.params_after < report.params_before
    assert report.flops_after < report.flops_before
    assert report.params_after == count_params(small.module_)
    assert report.flops_after == count_flops(small.module_, small.input_shape_)
    assert report.n_rounds >= 1
    # Only the 48-filter conv is prunable; 10 % of its filters go per round.
    kept = [r for r in report.rounds if r["accepted"]]
    assert kept[0]["removed"] == {"backbone.3": 5}
    # The pull term made the selected pairs more alike.
    assert (
        kept[0]["pull_cosine"]["backbone.3"] > kept[0]["pair_similarity"]["backbone.3"]
    )
    assert report.filters_removed == {
        "backbone.3": sum(r["removed"]["backbone.3"] for r in kept)
    }
    assert len(report.val_accuracy) == len(report.rounds) + 1
    best = max(report.val_accuracy[: report.n_rounds + 1])
    assert report.val_accuracy[report.n_rounds] >= best - 0.02
    X_test, y_test = X_test[300:], y_test[300:]
    assert small.score(X_test, y_test) >= fitted.score(X_test, y_test) - 0.02


def test_input_estimator_is_unchanged(fitted, pruned):
    small, state = pruned
    assert small is not fitted and small.net_ is not fitted.net_
    after = fitted.module_.state_dict()
    assert after.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(after[key], value), key
    assert fitted.module_.backbone[3].out_channels == 48
    assert not hasattr(fitted, "pruning_report_")
    assert len(fitted.history_) == 3


def test_dependent_layers_match(pruned, digit_images):
    _, _, X_test, _ = digit_images
    small, _ = pruned
    bb = small.module_.backbone
    n = bb[3].out_channels
    assert n < 48
    assert bb[3].weight.shape == (n, 16, 3, 3) and bb[3].bias.shape == (n,)
    assert bb[4].num_features == n
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert getattr(bb[4], name).shape == (n,)
    assert bb[6].in_channels == n and bb[6].weight.shape == (24, n, 3, 3)
    assert bb[7].num_features == 24
    assert small.predict(X_test).shape == (len(X_test),)
    assert small.predict_proba(X_test[:5]).shape == (5, 10)
    # The optimizer holds the new parameters.
    held = {id(p) for g in small.net_.optimizer_.param_groups for p in g["params"]}
    assert id(bb[3].weight) in held


def test_pruned_estimator_pickles(pruned, digit_images):
    _, _, X_test, _ = digit_images
    small, _ = pruned
    loaded = pickle.loads(pickle.dumps(small))
    np.testing.assert_array_equal(loaded.predict(X_test), small.predict(X_test))
    assert (
        loaded.pruning_report_.filters_removed == small.pruning_report_.filters_removed
    )


def test_rejected_round_returns_last_kept_model(fitted, digit_images, monkeypatch):
    X, y, _, _ = digit_images
    scores = iter([0.9, 0.5])
    monkeypatch.setattr(pruning, "_accuracy", lambda est, X, y: next(scores))
    small = prune_filters(fitted, X[:300], y[:300], **{**PRUNE, "max_rounds": 3})
    report = small.pruning_report_
    assert [r["accepted"] for r in report.rounds] == [False]
    assert report.val_accuracy == [0.9, 0.5]
    assert report.filters_removed == {}
    assert report.params_after == report.params_before
    assert "max_accuracy_drop" in report.stop_reason
    assert small.module_.backbone[3].out_channels == 48


def test_merge_and_no_prunable_layer(fitted, digit_images):
    X, y, _, _ = digit_images
    params = {**PRUNE, "max_rounds": 1, "max_accuracy_drop": 1.0}
    merged = prune_filters(
        fitted, X[:300], y[:300], merge=True, pull_terms="pair", **params
    )
    assert merged.module_.backbone[3].out_channels == 43
    (record,) = merged.pruning_report_.rounds
    assert record["pull_cosine"]["backbone.3"] > record["pair_similarity"]["backbone.3"]
    assert merged.predict(X[:10]).shape == (10,)
    same = prune_filters(fitted, X[:300], y[:300], **{**params, "min_filters": 48})
    assert same.pruning_report_.stop_reason == "no prunable layer left"
    assert same.pruning_report_.params_after == same.pruning_report_.params_before


def test_invalid_input(fitted, digit_images):
    X, y, _, _ = digit_images
    with pytest.raises(ValueError, match="pair_fraction"):
        prune_filters(fitted, X, y, pair_fraction=0.6)
    with pytest.raises(ValueError, match="validation_fraction"):
        prune_filters(fitted, X, y, validation_fraction=1.0)
    with pytest.raises(ValueError, match="labels"):
        prune_filters(fitted, X, y + 20)
    with pytest.raises(NotFittedError):
        prune_filters(FastRetrainClassifier(make_cnn()), X, y)
    with pytest.raises(TypeError, match="FastRetrainClassifier"):
        prune_filters(make_cnn(), X, y)


def test_a_head_on_stages_is_refused(digit_images):
    X, y, _, _ = digit_images
    clf = FastRetrainClassifier(
        make_cnn(), max_epochs=1, head=RidgeHead(stages="resolution"), random_state=0
    ).fit(X[:100], y[:100])
    with pytest.raises(ValueError, match=r"reads the stages \['8'\]"):
        prune_filters(clf, X, y)


def _random_bn(bn):
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return bn


def _check_removal_keeps_output(model, x, plan_index=0, drop=(3, 7)):
    plans, _ = find_prunable(model)
    plan = plans[plan_index]
    consumer = model.get_submodule(plan.consumer)
    conv = model.get_submodule(plan.conv)
    n = conv.out_channels
    with torch.no_grad():  # the next layer ignores the dropped channels
        if isinstance(consumer, nn.Linear):
            mult = consumer.in_features // n
            for c in drop:
                consumer.weight[:, c * mult : (c + 1) * mult] = 0
        else:
            consumer.weight[:, list(drop)] = 0
        before = model(x)
    keep = remove_filters(model, plan, list(drop))
    assert conv.out_channels == len(keep) == n - len(drop)
    assert not np.isin(drop, keep).any()
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    return plan


def test_surgery_conv_bn_relu_conv():
    model = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1),
        _random_bn(nn.BatchNorm2d(12)),
        nn.ReLU(),
        nn.Conv2d(12, 5, 3),
    ).eval()
    plan = _check_removal_keeps_output(model, torch.randn(2, 3, 8, 8))
    assert (plan.conv, plan.channelwise, plan.consumer) == ("0", ("1",), "3")
    assert model[1].running_mean.shape == (10,) and model[3].weight.shape[1] == 10


def test_surgery_through_depthwise_conv():
    model = nn.Sequential(
        nn.Conv2d(3, 12, 1),
        _random_bn(nn.BatchNorm2d(12)),
        nn.ReLU6(),
        nn.Conv2d(12, 12, 3, padding=1, groups=12),
        _random_bn(nn.BatchNorm2d(12)),
        nn.ReLU6(),
        nn.Conv2d(12, 4, 1),
    ).eval()
    plan = _check_removal_keeps_output(model, torch.randn(2, 3, 8, 8))
    assert plan.channelwise == ("1", "3", "4") and plan.consumer == "6"
    assert model[3].groups == model[3].in_channels == 10
    assert model[3].weight.shape == (10, 1, 3, 3)


def test_surgery_into_flattened_linear_and_head():
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(),
        nn.Linear(32, 3),
    ).eval()
    _check_removal_keeps_output(model, torch.randn(2, 1, 8, 8))
    assert model[5].in_features == 24
    backbone = nn.Sequential(
        nn.Conv2d(1, 8, 3), _random_bn(nn.BatchNorm2d(8)), nn.AdaptiveMaxPool2d(2)
    )
    x = torch.randn(4, 1, 8, 8)
    module = build_module(backbone, BackboneSpec(), x.numpy(), 3).eval()
    plan = _check_removal_keeps_output(module, x)
    assert plan.consumer == "head" and module.head.in_features == 24


def test_merge_of_identical_filters_is_exact():
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3), _random_bn(nn.BatchNorm2d(6)), nn.ReLU(), nn.Conv2d(6, 2, 1)
    ).eval()
    with torch.no_grad():  # make filter 4 a copy of filter 1
        for t in (model[0].weight, model[0].bias, model[1].weight, model[1].bias):
            t[4] = t[1]
        for t in (model[1].running_mean, model[1].running_var):
            t[4] = t[1]
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        before = model(x)
    plan = find_prunable(model)[0][0]
    remove_filters(model, plan, [4], merge_into=[1])
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 8, 1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c = nn.Conv2d(8, 8, 1)
        self.d = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.a(x)
        y = torch.relu(self.bn(self.b(x))) + x
        return self.d(torch.cat([self.c(y), y], dim=1))


def test_residual_and_concatenated_convs_are_skipped():
    plans, skipped = find_prunable(_Residual())
    assert plans == []
    assert set(skipped) == {"a", "b", "c", "d"}
    assert "used by 2 operations" in skipped["a"]
    assert "add" in skipped["b"] and "concatenation" in skipped["c"]
    assert "network's output" in skipped["d"]
    assert find_prunable(_Residual(), min_filters=8) == ([], {})


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else self.conv(-x)


def test_untraceable_backbone_raises():
    with pytest.raises(ValueError, match=r"torch\.fx"):
        find_prunable(_DataDependent())


def test_tabular_model_has_nothing_to_prune(digits):
    X, y = digits
    clf = FastRetrainClassifier(make_mlp(), max_epochs=1, random_state=0, device="cpu")
    clf.fit(X[:200], y[:200])
    small = prune_filters(clf, X[:200], y[:200], random_state=0)
    assert small.pruning_report_.stop_reason == "no prunable layer left"
    assert small.pruning_report_.rounds == []
    np.testing.assert_array_equal(small.predict(X[:50]), clf.predict(X[:50]))


def test_count_flops_and_params_by_hand():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
        nn.Flatten(),
        nn.Linear(96, 3),
    )
    # 8*8 * 4 * 1 * 9 + 4*4 * 6 * (4 / 2) * 9 + 96 * 3
    assert count_flops(model, (1, 8, 8)) == 2304 + 1728 + 288
    assert count_params(model) == (36 + 4) + (6 * 2 * 9 + 6) + (96 * 3 + 3)
    model.train()
    count_flops(model, (1, 8, 8))
    assert model.training and model[0].training
