"""Backbone names and weights: hints that point at the intended value."""

import pytest
import torch

from skfastretrain import FastRetrainClassifier
from skfastretrain.backbones._registry import backbone_spec, resolve_backbone


@pytest.mark.parametrize(
    ("name", "meant"),
    [("resnet81", "'resnet18'"), ("efficientnet_lite3", "'efficientnet_lite2'")],
)
def test_a_misspelt_name_suggests_the_closest(name, meant):
    with pytest.raises(ValueError, match=rf"Did you mean {meant}.* Valid names: "):
        resolve_backbone(name)


def test_a_name_far_from_all_suggests_nothing():
    with pytest.raises(ValueError) as info:
        resolve_backbone("xyzzy")
    assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize("name", ["ResNet18", "EfficientNet_Lite0"])
def test_names_are_case_insensitive(name):
    model, _ = resolve_backbone(name, weights=None)
    reference, _ = resolve_backbone(name.lower(), weights=None)
    assert type(model) is type(reference)
    assert [n for n, _ in model.named_parameters()] == [
        n for n, _ in reference.named_parameters()
    ]


def test_lower_case_default_weights_point_at_default():
    with pytest.raises(ValueError, match=r"Did you mean 'DEFAULT'\?"):
        resolve_backbone("resnet18", weights="default")
    with pytest.raises(FileNotFoundError, match=r"pass 'DEFAULT'"):
        resolve_backbone("efficientnet_lite0", weights="default")


def test_the_estimator_passes_the_hint_on(small_images):
    clf = FastRetrainClassifier("resnet81", weights=None, max_epochs=1)
    with pytest.raises(ValueError, match="Did you mean 'resnet18'"):
        clf.fit(*small_images)


@pytest.mark.parametrize(
    ("backbone", "weights"),
    [
        ("efficientnet_lite0", "DEFAULT"),
        ("efficientnet_lite0", None),
        ("EfficientNet_Lite1", "DEFAULT"),
        ("resnet18", None),
        ("timm:resnet18", None),
        (torch.nn.Conv2d(1, 4, 3), "DEFAULT"),
    ],
)
def test_backbone_spec_is_the_built_backbones_without_building(backbone, weights):
    if str(backbone).startswith("timm:"):
        pytest.importorskip("timm")
    _, built = resolve_backbone(backbone, weights)
    assert backbone_spec(backbone, weights) == built


def test_backbone_spec_of_torchvision_weights_needs_no_download():
    # The preset of the weights, not the file: resolved offline.
    spec = backbone_spec("resnet18", "IMAGENET1K_V1")
    assert spec.input_size == (224, 224)
    assert spec.mean == (0.485, 0.456, 0.406)
    with pytest.raises(ValueError, match="Unknown weights 'IMAGENET_V9'"):
        backbone_spec("resnet18", "IMAGENET_V9")
    with pytest.raises(ValueError, match="Unknown backbone 'resnet19'"):
        backbone_spec("resnet19")
