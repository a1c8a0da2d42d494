import sys

import pytest
import torch
import torchvision
from conftest import make_tiny_cnn
from torch import nn

from skfastretrain.backbones._module import build_module, find_head
from skfastretrain.backbones._registry import resolve_backbone


def test_named_torchvision_backbone():
    model, spec = resolve_backbone("resnet18")
    assert isinstance(model, torchvision.models.ResNet)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.input_size is None


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet17'.*resnet18"):
        resolve_backbone("resnet17")


def test_module_is_deep_copied():
    module = make_tiny_cnn()
    model, _ = resolve_backbone(module)
    assert model is not module
    assert model[0].weight is not module[0].weight


@pytest.mark.parametrize("bad", [42, lambda: "not a module"])
def test_bad_backbone_types(bad):
    with pytest.raises(TypeError, match=r"nn\.Module"):
        resolve_backbone(bad)


def test_weights_path_roundtrip(tmp_path):
    source = make_tiny_cnn()
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    model, _ = resolve_backbone(make_tiny_cnn, weights=path)
    torch.testing.assert_close(model[0].weight, source[0].weight)
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        resolve_backbone("resnet18", weights=str(tmp_path / "missing.pth"))


def test_torchvision_weights_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    enum = torchvision.models.get_model_weights("resnet18").DEFAULT
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), folder / enum.url.rsplit("/", 1)[1])
    model, spec = resolve_backbone("resnet18", weights="DEFAULT")
    torch.testing.assert_close(model.conv1.weight, reference.conv1.weight)
    assert spec.input_size == (224, 224)
    assert spec.mean == tuple(enum.transforms().mean)


def _offline(*args, **kwargs):
    raise OSError("network unreachable")


@pytest.fixture
def no_downloads(tmp_path, monkeypatch):
    """An empty torch.hub cache, and torch.hub downloads that fail."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)
    return tmp_path


def test_missing_torchvision_weights_name_file_and_folder(no_downloads):
    with pytest.raises(OSError, match=r"resnet18-.*\.pth.*checkpoints"):
        resolve_backbone("resnet18", weights="DEFAULT")


@pytest.mark.parametrize("weights", ["IMAGENET1K_V9", "NOPE"])
def test_unknown_torchvision_weights(weights):
    with pytest.raises(ValueError, match="Unknown weights"):
        resolve_backbone("resnet18", weights=weights)


def test_head_rule_replaces_last_linear():
    model, spec = resolve_backbone("resnet18")
    X = torch.zeros(2, 3, 32, 32).numpy()
    module = build_module(model, spec, X, 5)
    assert isinstance(module.backbone.fc, nn.Identity)
    assert module.head.in_features == 512 and module.head.out_features == 5
    assert find_head(module) is module.head


def test_head_rule_appends_head_to_feature_extractor():
    X = torch.zeros(2, 1, 8, 8).numpy()
    module = build_module(make_tiny_cnn(), resolve_backbone(make_tiny_cnn())[1], X, 3)
    assert module.head.in_features == 16 * 2 * 2
    assert module(torch.from_numpy(X)).shape == (2, 3)


def test_backbone_failure_is_a_value_error():
    backbone = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(10, 4), nn.ReLU()
    )
    with pytest.raises(ValueError, match="backbone failed on input"):
        build_module(
            backbone, resolve_backbone(backbone)[1], torch.zeros(2, 1, 8, 8).numpy(), 3
        )


# timm models are built with pretrained=False and weights come from files the
# tests write: nothing is downloaded.
def test_timm_backbone(tmp_path):
    timm = pytest.importorskip("timm")
    model, spec = resolve_backbone("timm:resnet18")
    assert isinstance(model, nn.Module) and spec.input_size is None
    path = tmp_path / "timm_resnet18.pth"
    reference = timm.create_model("resnet18")
    torch.save(reference.state_dict(), path)
    model, spec = resolve_backbone("timm:resnet18", weights=path)
    # Every tensor, BatchNorm statistics included, comes from the file.
    torch.testing.assert_close(model.state_dict(), reference.state_dict())
    assert spec.input_size == (224, 224)
    with pytest.raises(ValueError, match="Unknown timm model"):
        resolve_backbone("timm:not_a_model")


def test_timm_weights_that_do_not_fit_are_a_value_error(tmp_path):
    pytest.importorskip("timm")
    path = tmp_path / "tiny_cnn.pt"
    torch.save(make_tiny_cnn().state_dict(), path)
    with pytest.raises(ValueError, match="do not fit the backbone"):
        resolve_backbone("timm:test_resnet", weights=path)
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        resolve_backbone("timm:test_resnet", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="None, 'DEFAULT' or a path"):
        resolve_backbone("timm:test_resnet", weights="IMAGENET1K_V1")


def test_timm_default_weights_offline_name_the_cache(no_downloads, monkeypatch):
    pytest.importorskip("timm")
    from huggingface_hub import constants

    # Offline mode makes every Hugging Face request raise, and an empty cache
    # holds nothing to fall back on; torch.hub URLs fail the same way.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(no_downloads))
    with pytest.raises(OSError, match=r"'resnet18'.*Hugging Face cache \(HF_HOME\)"):
        resolve_backbone("timm:resnet18", weights="DEFAULT")


@pytest.mark.usefixtures("one_thread")  # a small model: threads only contend
def test_estimator_starts_a_timm_backbone_from_a_weights_file(small_images, tmp_path):
    timm = pytest.importorskip("timm")
    from skorch.callbacks import Callback

    from skfastretrain import FastRetrainClassifier

    class StartingBackbone(Callback):
        def on_train_begin(self, net, **kwargs):
            state = net.module_.backbone.state_dict()
            self.state_ = {k: v.detach().clone() for k, v in state.items()}

    path = tmp_path / "test_resnet.pth"
    reference = timm.create_model("test_resnet")
    torch.save(reference.state_dict(), path)
    clf = FastRetrainClassifier(
        "timm:test_resnet",
        weights=path,
        input_size=32,
        max_epochs=1,
        random_state=0,
        device="cpu",
        callbacks=[StartingBackbone()],
    ).fit(*small_images)
    start = dict(clf.net_.callbacks_)["StartingBackbone"].state_
    # fc became the estimator's head; every other weight came from the file.
    expected = {k: v for k, v in reference.state_dict().items() if k in start}
    assert set(start) == {k for k in expected if not k.startswith("fc.")}
    for name, value in expected.items():
        if "running" not in name and "num_batches" not in name:
            torch.testing.assert_close(start[name], value, msg=name)
    assert clf.predict(small_images[0][:5]).shape == (5,)


def test_timm_missing_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="pip install timm"):
        resolve_backbone("timm:resnet18")


@pytest.mark.parametrize("n_layers", [0, 1, 2])
def test_reinit_last_layers(n_layers):
    from skfastretrain.backbones._module import reinit_last_layers

    torch.manual_seed(0)
    module = make_tiny_cnn()
    before = [module[0].weight.clone(), module[3].weight.clone()]
    reinit_last_layers(module, n_layers)
    changed = [
        not torch.equal(b, m.weight)
        for b, m in zip(before, [module[0], module[3]], strict=True)
    ]
    assert changed == [n_layers >= 2, n_layers >= 1]
    with pytest.raises(ValueError, match="only 2"):
        reinit_last_layers(module, 3)


@pytest.mark.parametrize("train", [False, True])
def test_bfloat16_precision_computes_the_same_features(train):
    from skfastretrain._data import Preprocess
    from skfastretrain.backbones._module import FastRetrainModule

    torch.manual_seed(0)
    model = FastRetrainModule(Preprocess(), make_tiny_cnn(), nn.Linear(64, 3))
    model.train(train)
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        ref = model(x)
        model.precision = "bfloat16"
        model.backbone.to(memory_format=torch.channels_last)
        out = model(x)
    # Autocast only: the parameters stay float32, and so do the logits.
    assert out.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # bfloat16 keeps 8 bits of mantissa: agreement to about 1e-2.
    assert (out - ref).norm() / ref.norm() < 3e-2
