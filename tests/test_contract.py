"""The contract every registered model keeps (COURSE.md, 'The library contract')."""

import pytest
import torch

import minibones
from minibones.backbone import ModelConfig

ALL_MODELS = minibones.list_models()


def test_list_models_filters_by_pattern():
    assert minibones.list_models("resnet1*") == ["resnet101", "resnet152", "resnet18"]
    assert minibones.list_models("no_such_*") == []


def test_unknown_name_suggests_the_closest_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet5'.*'resnet50'"):
        minibones.create_model("resnet5")


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_keeps_the_contract(name):
    model = minibones.create_model(name, num_classes=7).eval()
    config = model.config
    assert isinstance(config, ModelConfig) and config.name == name and config.paper and config.reference
    assert len(config.mean) == len(config.std) == 3 and config.input_size[0] == 3
    size = min(config.input_size[1], 64) if not getattr(model, "fixed_input_size", False) else config.input_size[1]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = model(x)
        stages = model.forward_stages(x)
        features = model.forward_features(x)
    assert logits.shape == (2, 7)
    assert len(stages) == len(model.feature_info)
    for feature, info in zip(stages, model.feature_info):
        assert feature.shape[1] == info.channels, info
        assert model.get_submodule(info.module) is not None
    strides = [info.stride for info in model.feature_info]
    assert strides == sorted(strides)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_reset_classifier_replaces_the_head(name):
    model = minibones.create_model(name).eval()
    size = model.config.input_size[1] if getattr(model, "fixed_input_size", False) else 64
    x = torch.randn(1, 3, size, size)
    model.reset_classifier(5)
    with torch.no_grad():
        assert model(x).shape == (1, 5)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (1, model.num_features)
    assert model.num_classes == 0


@pytest.mark.parametrize("name", ALL_MODELS)
def test_wrong_number_of_channels_says_three_are_expected(name):
    model = minibones.create_model(name)
    with pytest.raises(ValueError, match="expects 3 channels"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"batch of images shaped \(B, 3, H, W\)"):
        model(torch.randn(3, 64, 64))
