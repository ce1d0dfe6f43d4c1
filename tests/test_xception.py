"""Xception (Chollet 2017) matches timm's legacy_xception, exposes its pyramid, and compiles."""

import pytest
import torch

import minibones
from minibones import count_parameters
from minibones.models.xception import SeparableConv
from minibones.reference import relative_error
from parity import TOLERANCE, assert_activations_used_once, ported_pair

WIDTHS = [64, 128, 256, 728, 2048]


@pytest.fixture(scope="module")
def ported():
    return ported_pair("xception")


def test_xception_matches_timm_legacy_xception(ported):
    model, reference = ported
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for size in [(299, 299), (97, 131)]:  # the default, and an odd, non-square size
            x = torch.randn(1, 3, *size, generator=generator)
            expected = reference(x)
            assert relative_error(model(x), expected) < TOLERANCE, size
        # the logits depend on the input: otherwise an error of 0 would prove nothing
        assert relative_error(reference(torch.randn(1, 3, *size, generator=generator)), expected) > 0.05


def test_xception_has_as_many_parameters_as_timm(ported):
    model, reference = ported
    assert count_parameters(model) == count_parameters(reference) == 22_855_952


def test_feature_strides_are_2_4_8_16_32(ported):
    model, _ = ported
    info = model.feature_info
    assert [s.name for s in info] == ["stem", "block1", "block2", "middle_flow", "exit_flow"]
    assert [s.stride for s in info] == [2, 4, 8, 16, 32]
    assert [s.channels for s in info] == WIDTHS
    with torch.no_grad():
        features = model.forward_stages(torch.randn(1, 3, 299, 299))
    # the two stem convs are unpadded (299 -> 149 -> 147), then every 3x3/2 max pool pads by 1
    assert [tuple(f.shape[1:]) for f in features] == [(64, 147, 147), (128, 74, 74), (256, 37, 37),
                                                      (728, 19, 19), (2048, 10, 10)]


def test_the_flows_follow_figure_5():
    with torch.device("meta"):  # structure only: no memory, no time
        model = minibones.create_model("xception")
    assert list(dict(model.entry_flow.named_children())) == ["conv1", "conv2", "block1", "block2", "block3"]
    assert len(model.middle_flow) == 8  # "repeated eight times"
    assert all(count_parameters(block) == count_parameters(model.middle_flow[0]) for block in model.middle_flow)
    separable = [m for m in model.modules() if isinstance(m, SeparableConv)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    plain_convs = [m for m in convs if m.groups == 1 and m.kernel_size == (3, 3)]
    # 36 conv layers (section 3): 2 plain stem convs and 34 separable ones (the 1x1 shortcuts are not counted)
    assert len(plain_convs) == 2 and len(separable) == 34
    assert all(s.depthwise.groups == s.depthwise.in_channels for s in separable)


def test_a_separable_conv_costs_about_9x_fewer_weights_at_728_channels():
    separable = count_parameters(SeparableConv(728, 728))
    full = count_parameters(torch.nn.Conv2d(728, 728, 3, bias=False))
    assert separable == 3 * 3 * 728 + 728 * 728 and full / separable > 8.8


def test_images_smaller_than_7_pixels_are_rejected_with_a_clear_message():
    with torch.device("meta"):  # the check comes before any compute
        model = minibones.create_model("xception")
        with pytest.raises(ValueError, match=r"at least 7x7"):
            model(torch.randn(1, 3, 6, 100))


def test_every_activation_module_is_used_once(ported):
    model, _ = ported
    assert_activations_used_once(model, torch.randn(1, 3, 64, 64), torch.nn.ReLU)


def test_compiles_without_graph_breaks_and_gives_the_same_output_and_gradients(ported):
    # fullgraph=True fails on any graph break. The "eager" backend runs the captured graph
    # as is: it proves the capture in ~2 s here, where aot_eager takes ~6 s and inductor
    # ~20 s more of code generation (vgg11 in test_vgg.py goes through aot_eager).
    model, _ = ported
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    expected = model(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    compiled = torch.compile(model, fullgraph=True, backend="eager")(x)
    (grad,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(compiled, expected)
    torch.testing.assert_close(grad, expected_grad)
