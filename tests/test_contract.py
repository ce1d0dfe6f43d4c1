"""The contract every registered model keeps (COURSE.md, 'The library contract').

Each model is built once for this module (the largest take seconds to build) and
checked in order; ``reset_classifier`` comes last because it changes the model.
"""

import pytest
import torch

import minibones
from minibones.backbone import ModelConfig
from parity import small_input_size

ALL_MODELS = minibones.list_models()


def test_list_models_filters_by_pattern():
    assert minibones.list_models("resnet1*") == ["resnet101", "resnet152", "resnet18"]
    assert minibones.list_models("no_such_*") == []


def test_unknown_name_suggests_the_closest_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet5'.*'resnet50'"):
        minibones.create_model("resnet5")


@pytest.fixture(scope="module", params=ALL_MODELS)
def model(request):
    torch.manual_seed(0)
    return minibones.create_model(request.param, num_classes=7).eval().requires_grad_(False)


def test_model_keeps_the_contract(model):
    config = model.config
    assert isinstance(config, ModelConfig) and config.paper and config.reference
    assert config.name in ALL_MODELS
    assert len(config.mean) == len(config.std) == 3 and config.input_size[0] == 3
    size = small_input_size(model)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = model(x)
        stages = model.forward_stages(x)
        features = model.forward_features(x)
    assert logits.shape == (2, 7)
    assert features.shape[0] == 2
    assert len(stages) == len(model.feature_info)
    for feature, info in zip(stages, model.feature_info):
        assert feature.shape[1] == info.channels, info
        assert model.get_submodule(info.module) is not None
    strides = [info.stride for info in model.feature_info]
    assert strides == sorted(strides)


def test_wrong_number_of_channels_says_three_are_expected(model):
    size = small_input_size(model)
    with pytest.raises(ValueError, match="expects 3 channels"):
        model(torch.randn(1, 1, size, size))
    with pytest.raises(ValueError, match=r"batch of images shaped \(B, 3, H, W\)"):
        model(torch.randn(3, size, size))


def test_reset_classifier_replaces_the_head(model):
    x = torch.randn(1, 3, small_input_size(model), small_input_size(model))
    model.reset_classifier(5)
    with torch.no_grad():
        assert model(x).shape == (1, 5)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (1, model.num_features)
    assert model.num_classes == 0
