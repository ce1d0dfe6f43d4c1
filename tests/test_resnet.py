"""ResNet (He et al. 2016) matches torchvision, exposes its pyramid, and compiles."""

import pytest
import torch
import torchvision

import minibones
from minibones import count_parameters
from parity import TOLERANCE, assert_activations_used_once, parity_error

IMAGENET_RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@pytest.mark.parametrize("name", IMAGENET_RESNETS)
def test_resnet_matches_torchvision(name):
    # 224x224 and an odd, non-square size
    assert parity_error(name, [(224, 224), (97, 131)], batch=1) < TOLERANCE


@pytest.mark.parametrize("name", IMAGENET_RESNETS)
def test_resnet_has_as_many_parameters_as_torchvision(name):
    reference = getattr(torchvision.models, name)(weights=None)
    assert count_parameters(minibones.create_model(name)) == count_parameters(reference)


@pytest.mark.parametrize("name, widths", [("resnet18", [64, 64, 128, 256, 512]), ("resnet50", [64, 256, 512, 1024, 2048])])
def test_feature_strides_are_2_4_8_16_32(name, widths):
    model = minibones.create_model(name).eval()
    info = model.feature_info
    assert [s.name for s in info] == ["conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x"]
    assert [s.stride for s in info] == [2, 4, 8, 16, 32]
    assert [s.channels for s in info] == widths
    with torch.no_grad():
        features = model.forward_stages(torch.randn(1, 3, 128, 96))
    assert [tuple(f.shape) for f in features] == [(1, c, 128 // s, 96 // s) for c, s in zip(widths, [2, 4, 8, 16, 32])]


def test_residual_stages_are_at_strides_4_8_16_32():
    # what an FPN neck consumes: conv2_x .. conv5_x
    assert [s.stride for s in minibones.create_model("resnet34").feature_info[1:]] == [4, 8, 16, 32]


@pytest.mark.parametrize("name, n, params", [("resnet20", 3, 0.27e6), ("resnet32", 5, 0.46e6), ("resnet56", 9, 0.85e6)])
def test_cifar_resnets_match_the_papers_table_6(name, n, params):
    model = minibones.create_model(name)
    assert model.num_classes == 10
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 1 == 6 * n + 2  # 6n 3x3 convs, the stem, the classifier; option A adds none
    assert round(count_parameters(model) / 1e6, 2) == round(params / 1e6, 2)
    with torch.no_grad():
        features = model.eval().forward_stages(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in features] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert [s.stride for s in model.feature_info] == [1, 1, 2, 4]


def test_every_activation_module_is_used_once():
    model = minibones.create_model("resnet50")
    assert_activations_used_once(model, torch.randn(1, 3, 64, 64), torch.nn.ReLU)


def test_compiled_resnet18_gives_the_same_output():
    model = minibones.create_model("resnet18").eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model)(x)
    torch.testing.assert_close(compiled, expected, rtol=1e-4, atol=1e-5)


def test_a_cifar_resnet_can_be_built_narrower():
    model = minibones.create_model("resnet20", widths=(8, 16, 32))
    assert [info.channels for info in model.feature_info][-3:] == [8, 16, 32]
