"""Backbone names and weights: hints that point at the intended value."""

import pytest

from skfastretrain import FastRetrainClassifier
from skfastretrain.backbones._registry import resolve_backbone


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
