"""EfficientNet-Lite0 to Lite4 (the TensorFlow release's variants of Tan & Le 2019) match timm's
``tf_efficientnet_lite*``: ReLU6, no squeeze-and-excitation, a fixed stem and head, the first and
last stages never deepened, and TensorFlow's "SAME" padding, without which the same weights
compute another function."""

import pytest
import torch
from torch import nn

import minibones
from minibones import count_parameters
from minibones.layers import ConvNormAct, TFSamePad
from minibones.reference import relative_error
from parity import TOLERANCE, assert_activations_used_once, assert_compiles, ported_pair

LITE = [f"efficientnet_lite{i}" for i in range(5)]
# the parameter counts of timm's tf_efficientnet_lite0..4 (and of the published checkpoints for 0-2)
PARAMETERS = {"efficientnet_lite0": 4_652_008, "efficientnet_lite1": 5_416_680, "efficientnet_lite2": 6_092_072,
              "efficientnet_lite3": 8_197_096, "efficientnet_lite4": 13_006_568}


@pytest.fixture(scope="module", params=LITE)
def pair(request):
    return request.param, *ported_pair(request.param)


def test_efficientnet_lite_matches_timm(pair):
    name, model, reference = pair
    generator = torch.Generator().manual_seed(1)
    expected = []
    with torch.no_grad():
        for height, width in [(model.config.input_size[1],) * 2, (97, 131)]:  # its own size, and odd, non-square
            x = torch.randn(2, 3, height, width, generator=generator)
            expected.append(reference(x))
            assert relative_error(model(x), expected[-1]) < TOLERANCE, (height, width)
    assert relative_error(expected[0][:, :5], expected[1][:, :5]) > 0.05  # another image moves the logits


def test_efficientnet_lite_has_as_many_parameters_as_timm(pair):
    name, model, reference = pair
    assert count_parameters(model) == count_parameters(reference) == PARAMETERS[name]


def test_every_width_depth_kernel_and_stride_is_timms(pair):
    name, model, reference = pair

    def convs(module):
        return [(tuple(m.weight.shape), m.stride, m.groups) for m in module.modules() if isinstance(m, nn.Conv2d)]

    assert convs(model) == convs(reference)


def test_lite_uses_relu6_no_squeeze_excite_and_tensorflows_batch_norm_epsilon(pair):
    name, model, _ = pair
    kinds = {type(m) for m in model.modules()}
    assert nn.ReLU6 in kinds and not kinds & {nn.SiLU, nn.Sigmoid, nn.Hardswish}
    assert all(isinstance(block.se, nn.Identity) for stage in model.stages for block in stage)
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    assert model.config.mean == model.config.std == (0.5, 0.5, 0.5)  # inputs in [-1, 1]


def test_lite_keeps_the_stem_and_head_and_deepens_only_the_middle_stages():
    with torch.device("meta"):
        lite4 = minibones.create_model("efficientnet_lite4")  # width 1.4, depth 1.8
        b0 = minibones.create_model("efficientnet_b0")
    assert lite4.stem.conv.out_channels == 32 and lite4.conv_head.conv.out_channels == 1280
    assert [len(stage) for stage in b0.stages] == [1, 2, 2, 3, 3, 4, 1]
    assert [len(stage) for stage in lite4.stages] == [1, 4, 4, 6, 6, 8, 1]  # ceil(1.8 x) in the middle only
    assert [info.stride for info in lite4.feature_info] == [2, 4, 8, 16, 32]
    assert [info.channels for info in lite4.feature_info] == [24, 32, 56, 160, 1280]


# --- TensorFlow's "SAME" padding ---------------------------------------------------------------


@pytest.mark.parametrize("size", [7, 8, 223, 224, 225])
@pytest.mark.parametrize("kernel", [3, 5])
def test_tf_same_padding_gives_ceil_of_size_over_stride_with_the_odd_pixel_last(size, kernel):
    before, after = TFSamePad.amount(size, kernel, stride=2)
    out = (size + before + after - kernel) // 2 + 1
    assert out == -(-size // 2)  # ceil(size / 2)
    assert after - before in (0, 1)
    if size % 2 == 0 and kernel == 3:
        assert (before, after) == (0, 1)  # PyTorch would pad 1 and 1: a grid shifted by one pixel


@pytest.mark.parametrize("size", [(16, 16), (17, 23)])
def test_tf_same_conv_matches_timms_conv2d_same(size):
    from timm.layers import Conv2dSame

    ours = ConvNormAct(4, 6, 5, stride=2, padding="tf_same", act=None).eval()
    theirs = Conv2dSame(4, 6, 5, stride=2, bias=False)
    theirs.weight.data.copy_(ours.conv.weight)
    x = torch.randn(1, 4, *size)
    with torch.no_grad():
        torch.testing.assert_close(ours.conv(ours.pad(x)), theirs(x), rtol=0, atol=0)


def test_with_pytorchs_symmetric_padding_the_same_weights_compute_another_function():
    model, reference = ported_pair("efficientnet_lite0")
    symmetric = minibones.create_model("efficientnet_lite0", padding=None).eval()
    symmetric.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert relative_error(model(x), reference(x)) < TOLERANCE
        assert relative_error(symmetric(x), reference(x)) > 1e-2


# --- the contract ---------------------------------------------------------------------------------


def test_every_activation_module_is_used_once():
    assert_activations_used_once(minibones.create_model("efficientnet_lite0"), torch.randn(1, 3, 64, 64), (nn.ReLU6,))


def test_compiled_efficientnet_lite0_gives_the_same_output_and_gradient():
    # TF padding depends on the input size: an odd size takes the asymmetric path at every stride
    assert_compiles(minibones.create_model("efficientnet_lite0").eval(), torch.randn(2, 3, 65, 79))
