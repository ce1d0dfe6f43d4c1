"""The checkers of notebooks 09 and 10 accept the right answer, reject a wrong one, and refuse malformed input."""

import pytest
import torch

from minibones.course.exercises.neck import check_fpn_parameters, check_mean_iou, check_pyramid_shape, check_pyramid_strides
from minibones.course.exercises.pretrained import (
    check_gmacs,
    check_linear_probe_parameters,
    check_reference_module,
    check_stage_learning_rate,
)


def said(capsys) -> str:
    return capsys.readouterr().out.strip()


# --- notebook 09 -------------------------------------------------------------------


def test_linear_probe_trains_the_new_classifier_only(capsys):
    check_linear_probe_parameters(512 * 5 + 5, model="resnet18", num_classes=5)  # fc: 512 features -> 5 classes
    assert said(capsys) == "correct"
    check_linear_probe_parameters(0, model="resnet18", num_classes=5)
    assert said(capsys).startswith("not yet:")
    with pytest.raises(ValueError, match="number"):
        check_linear_probe_parameters("2565")


def test_stage_learning_rate_halves_per_stage(capsys):
    # resnet18 stages conv1 .. conv5_x: conv5_x gets lr/2, conv4_x lr/4, conv3_x lr/8, conv2_x lr/16
    check_stage_learning_rate(0.01 / 16, model="resnet18", stage="conv2_x", lr=0.01, decay=0.5)
    assert said(capsys) == "correct"
    check_stage_learning_rate(0.01 / 2, model="resnet18", stage="conv2_x", lr=0.01, decay=0.5)
    assert said(capsys).startswith("not yet:")
    with pytest.raises(ValueError, match="no stage"):
        check_stage_learning_rate(0.1, model="resnet18", stage="layer1")


def test_gmacs_scale_with_the_number_of_positions(capsys):
    # torchvision publishes 1.814 GMACs for resnet18 at 224; 160 x 160 has (160/224)^2 as many positions
    # at every stage (160 is a multiple of the network's stride, 32, so no map is rounded up)
    check_gmacs(1.814 * (160 / 224) ** 2, model="resnet18", image_size=160)
    assert said(capsys) == "correct"
    check_gmacs(1.814 * 160 / 224, model="resnet18", image_size=160)
    assert said(capsys).startswith("not yet:")
    with pytest.raises(ValueError):
        check_gmacs(None)


def test_reference_module_of_a_stage(capsys):
    check_reference_module("layer3", model="resnet50", stage="conv4_x")
    assert said(capsys) == "correct"
    check_reference_module("layer4", model="resnet50", stage="conv4_x")
    assert said(capsys).startswith("not yet:")
    with pytest.raises(ValueError, match="no stage"):
        check_reference_module("layer3", model="resnet50", stage="conv9_x")
    with pytest.raises(ValueError, match="string"):
        check_reference_module(3)


# --- notebook 10 -------------------------------------------------------------------


def test_pyramid_shape(capsys):
    check_pyramid_shape((256, 80, 120), backbone="resnet50", level=0, image_size=(320, 480), out_channels=256)
    assert said(capsys) == "correct"
    check_pyramid_shape((2048, 10, 15), backbone="resnet50", level=0, image_size=(320, 480))
    assert "out_channels" in said(capsys)
    check_pyramid_shape((256, 10, 15), backbone="resnet50", level=0, image_size=(320, 480))
    assert said(capsys).startswith("not yet:")
    with pytest.raises(ValueError):
        check_pyramid_shape((256, 80), backbone="resnet50")
    with pytest.raises(ValueError, match="levels"):
        check_pyramid_shape((256, 80, 120), backbone="resnet50", level=7)


def test_fpn_parameters(capsys):
    d = 64
    truth = sum(c * d + d + 9 * d * d + d for c in (64, 128, 256, 512))
    check_fpn_parameters(truth, in_channels=(64, 128, 256, 512), out_channels=d)
    assert said(capsys) == "correct"
    check_fpn_parameters(truth - 4 * d, in_channels=(64, 128, 256, 512), out_channels=d)
    assert said(capsys).startswith("not yet:")
    with pytest.raises(ValueError):
        check_fpn_parameters(1.5)


def test_pyramid_strides(capsys):
    check_pyramid_strides([8, 16, 32, 64], backbone="vit_b_32")
    assert said(capsys) == "correct"
    check_pyramid_strides([4, 8, 16, 32], backbone="resnet18")
    assert said(capsys) == "correct"
    check_pyramid_strides([4, 8, 16, 32], backbone="vit_b_32")
    assert said(capsys).startswith("not yet:")
    with pytest.raises(ValueError):
        check_pyramid_strides("4, 8, 16, 32")
    with pytest.raises(ValueError):
        check_pyramid_strides([4, 8], backbone=None)


def test_mean_iou(capsys):
    predicted = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 1], [0, 0, 2, 2]])
    truth = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 2, 2]])
    # class 0: both say it at 5 pixels, either at 6; class 1: 2 of 3; class 2: 3 of 5
    answer = (5 / 6 + 2 / 3 + 3 / 5) / 3
    check_mean_iou(answer, predicted, truth, num_classes=3)
    assert said(capsys) == "correct"
    check_mean_iou(100 * answer, predicted, truth, num_classes=3)
    assert "fraction" in said(capsys)
    check_mean_iou(10 / 12, predicted, truth, num_classes=3)  # pixel accuracy, not mean IoU
    assert said(capsys).startswith("not yet:")
    with pytest.raises(ValueError):
        check_mean_iou(0.5, predicted, truth[:2], num_classes=3)


# --- notebook 09: the code exercises ------------------------------------------------


def reference_port(state_dict, name_map):
    import re

    ported = {}
    for name, tensor in state_dict.items():
        for pattern, replacement in name_map:
            if replacement is None:
                if re.search(pattern, name):
                    name = None
                    break
            else:
                name = re.sub(pattern, replacement, name)
        if name is not None:
            ported[name] = tensor
    return ported


def test_port_checker_accepts_a_correct_port_and_says_what_is_wrong(capsys):
    import re

    from minibones.course.exercises.pretrained import check_port

    check_port(reference_port)
    assert said(capsys) == "correct"
    check_port(lambda state_dict, name_map: {})
    assert "'conv1.weight' should become 'stem.conv.weight'" in said(capsys)

    def first_rule_only(state_dict, name_map):  # each rule applied to the original name, not in sequence
        ported = {}
        for name, tensor in state_dict.items():
            new = name
            for pattern, replacement in name_map:
                if replacement is not None and re.search(pattern, name):
                    new = re.sub(pattern, replacement, name)
            ported[new] = tensor
        return ported

    check_port(first_rule_only)
    assert said(capsys).startswith("not yet:")

    def keeps_dropped(state_dict, name_map):
        return reference_port(state_dict, [(p, r) for p, r in name_map if r is not None])

    check_port(keeps_dropped)
    assert "must be dropped" in said(capsys)
    check_port(lambda state_dict, name_map: {k: v + 1 for k, v in reference_port(state_dict, name_map).items()})
    assert "holds another tensor" in said(capsys)
    with pytest.raises(ValueError, match="function itself"):
        check_port("port")


def probe_problem():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator) * 1.5
    labels, test_labels = torch.arange(4).repeat(20), torch.arange(4).repeat(10)
    features = centres[labels] + torch.randn(80, 16, generator=generator)
    test_features = centres[test_labels] + torch.randn(40, 16, generator=generator)
    return features, labels, test_features, test_labels


def test_linear_probe_checker_compares_with_the_librarys_probe(capsys):
    from minibones.course.exercises.pretrained import check_linear_probe
    from minibones.transfer import linear_probe

    problem = probe_problem()

    def fit_with_adam(features, labels):
        mean = features.mean(0)
        layer = torch.nn.Linear(features.shape[1], 4)
        optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
        for _ in range(300):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(layer(features - mean), labels).backward()
            optimizer.step()
        return lambda test: layer(test - mean)

    check_linear_probe(fit_with_adam, *problem)
    assert said(capsys) == "correct"
    check_linear_probe(lambda f, y: linear_probe(f, y), *problem)  # logits are accepted as well as classes
    assert said(capsys) == "correct"
    check_linear_probe(lambda f, y: (lambda test: torch.zeros(len(test), dtype=torch.long)), *problem)
    assert "one class for every image" in said(capsys)
    check_linear_probe(lambda f, y: (lambda test: (torch.arange(len(test)) + 1) % 4), *problem)  # always wrong
    assert "the library's" in said(capsys)
    check_linear_probe(lambda f, y: (lambda test: torch.zeros(len(test), 7)), *problem)
    assert "one class per image" in said(capsys)


def test_linear_probe_of_a_head_with_a_hidden_layer_trains_the_last_layer_only(capsys):
    # mobilenet_v3_small's head: Linear(576, 1024), Hardswish, Linear(1024, classes); the hidden layer stays frozen
    check_linear_probe_parameters(1024 * 37 + 37, model="mobilenet_v3_small", num_classes=37)
    assert said(capsys) == "correct"
    check_linear_probe_parameters(576 * 1024 + 1024 + 1024 * 37 + 37, model="mobilenet_v3_small", num_classes=37)
    assert said(capsys).startswith("not yet:")


def test_reference_module_of_a_convnext_stage_counts_the_downsampling_layers(capsys):
    # torchvision's ConvNeXt: features.0 stem, then downsampling layers and stages alternate
    check_reference_module("features.5", model="convnext_tiny", stage="res4")
    assert said(capsys) == "correct"
    check_reference_module("features.3", model="convnext_tiny", stage="res4")
    assert "print the reference" in said(capsys)
