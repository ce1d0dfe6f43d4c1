"""MobileNetV2 (Sandler et al. 2018) and MobileNetV3 large/small (Howard et al. 2019) match
torchvision, expose their pyramid, and compile."""

import pytest
import torch
import torchvision
from torch import nn

import minibones
from minibones import count_parameters
from minibones.layers import SqueezeExcite, make_divisible
from minibones.models.mobilenet import V2_ROWS, V3_LARGE, V3_SMALL
from minibones.reference import relative_error
from parity import TOLERANCE, assert_activations_used_once, assert_compiles, ported_pair

VARIANTS = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]
PUBLISHED = {
    "mobilenet_v2": torchvision.models.MobileNet_V2_Weights,
    "mobilenet_v3_large": torchvision.models.MobileNet_V3_Large_Weights,
    "mobilenet_v3_small": torchvision.models.MobileNet_V3_Small_Weights,
}


@pytest.fixture(scope="module", params=VARIANTS)
def pair(request):
    return request.param, *ported_pair(request.param, meta_init=True)


def test_mobilenet_matches_torchvision(pair):
    name, model, reference = pair
    generator = torch.Generator().manual_seed(1)
    expected = []
    with torch.no_grad():
        for height, width in [(224, 224), (97, 131)]:  # an odd, non-square size too
            x = torch.randn(1, 3, height, width, generator=generator)
            expected.append(reference(x))
            assert relative_error(model(x), expected[-1]) < TOLERANCE, (height, width)
    # the test has teeth: another image changes the logits by far more than the tolerance
    assert relative_error(expected[0], expected[1]) > 0.05


def test_mobilenet_has_as_many_parameters_as_torchvision(pair):
    name, model, reference = pair
    published = PUBLISHED[name].DEFAULT.meta["num_params"]
    assert count_parameters(model) == count_parameters(reference) == published


def test_every_layer_has_torchvisions_shape_and_batch_norm(pair):
    name, model, reference = pair

    def layers(module):
        return [(tuple(m.weight.shape), m.stride, m.groups) if isinstance(m, nn.Conv2d) else (m.eps, m.momentum)
                for m in module.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]

    assert layers(model) == layers(reference)
    bn = {(m.eps, m.momentum) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert bn == ({(1e-5, 0.1)} if name == "mobilenet_v2" else {(1e-3, 0.01)})  # V3: TensorFlow's defaults
    assert model.head.drop.p == 0.2


def test_v2_follows_table_2_of_the_paper():
    with torch.device("meta"):
        model = minibones.create_model("mobilenet_v2")
    # one stage per row of table 2: n blocks with c output channels, the first with stride s
    assert [len(stage) for stage in model.stages] == [n for _, _, n, _ in V2_ROWS]
    assert [stage[-1].project.conv.out_channels for stage in model.stages] == [c for _, c, _, _ in V2_ROWS]
    assert [stage[0].depthwise.conv.stride[0] for stage in model.stages] == [s for _, _, _, s in V2_ROWS]
    assert sum(len(stage) for stage in model.stages) == 17
    assert {type(m) for m in model.modules() if type(m).__module__ == "torch.nn.modules.activation"} == {nn.ReLU6}


@pytest.mark.parametrize("name, table", [("mobilenet_v3_large", V3_LARGE), ("mobilenet_v3_small", V3_SMALL)])
def test_v3_squeeze_excite_squeezes_the_expanded_width_by_4_and_gates_with_a_hard_sigmoid(name, table):
    with torch.device("meta"):
        model = minibones.create_model(name)
    se = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert len(se) == sum(spec.se for spec in table)
    for module, spec in zip(se, [spec for spec in table if spec.se]):
        assert module.reduce.out_channels == make_divisible(spec.expanded // 4, 8)
        assert isinstance(module.act, nn.ReLU) and isinstance(module.gate, nn.Hardsigmoid)


@pytest.mark.parametrize("name, channels, stages", [
    ("mobilenet_v2", [16, 24, 32, 96, 1280], ["stage1", "stage2", "stage3", "stage5", "conv_head"]),
    ("mobilenet_v3_large", [16, 24, 40, 112, 960], ["stage1", "stage2", "stage3", "stage5", "conv_head"]),
    # V3-small's first block already halves the grid: the stride-2 level is the stem's output
    ("mobilenet_v3_small", [16, 16, 24, 48, 576], ["stem", "stage1", "stage2", "stage4", "conv_head"]),
])
def test_feature_strides_are_2_4_8_16_32(name, channels, stages):
    model = minibones.create_model(name).eval()
    assert [s.stride for s in model.feature_info] == [2, 4, 8, 16, 32]
    assert [s.channels for s in model.feature_info] == channels
    with torch.no_grad():
        features = model.forward_stages(torch.randn(1, 3, 64, 96))
        assert torch.equal(model.forward_features(torch.zeros(1, 3, 64, 96)),
                           model.forward_stages(torch.zeros(1, 3, 64, 96))[-1])
    assert [tuple(f.shape) for f in features] == [(1, c, 64 // s, 96 // s) for c, s in zip(channels, [2, 4, 8, 16, 32])]
    assert [s.name for s in model.feature_info] == stages


@pytest.mark.parametrize("name", VARIANTS)
def test_every_activation_module_is_used_once(name):
    model = minibones.create_model(name)
    kinds = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid)
    assert_activations_used_once(model, torch.randn(1, 3, 64, 64), kinds)


def test_v3_reset_classifier_keeps_the_hidden_layer():
    # V3's classifier reads the 1280 (large) or 1024 (small) hidden features computed after the pooling
    model = minibones.create_model("mobilenet_v3_small").eval()
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1024) == (1, model.num_features)


def test_compiled_mobilenet_v3_small_gives_the_same_output_and_gradient():
    model = minibones.create_model("mobilenet_v3_small").eval()
    assert_compiles(model, torch.randn(2, 3, 64, 80))