"""The exercise checkers of notebooks 01 (VGG) and 02 (ResNet): right answers are accepted,
wrong ones get a hint (never the answer), and malformed questions are refused clearly.

The right answers are worked out here independently of the checkers: by the formulas of
the papers, or by counting layers of models built another way."""

import pytest
import torch
from torch import nn

import minibones
from minibones.course.exercises.resnet import (
    check_gradient_norms,
    main_path_weights,
    check_block_parameters, check_blocks_per_stage, check_shortcut_parameters, weighted_layers,
)
from minibones.course.exercises.vgg import (
    check_conv_macs_function, check_conv_stack_parameters, check_layer_receptive_field, check_parameter_share,
)


def verdicts(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


# --- notebook 01: VGG ------------------------------------------------------------------


def test_conv_stack_parameters_are_weights_plus_biases(capsys):
    check_conv_stack_parameters(3 * (9 * 512 * 512 + 512), convs=3, channels=512)
    check_conv_stack_parameters(2 * (9 * 64 * 64 + 64), convs=2, channels=64)
    check_conv_stack_parameters(0, convs=3, channels=512)
    check_conv_stack_parameters(3 * 9 * 512 * 512, convs=3, channels=512)  # biases forgotten
    lines = verdicts(capsys)
    assert lines[:2] == ["correct", "correct"]
    assert lines[2].startswith("not yet: ") and str(3 * (9 * 512 * 512 + 512)) not in lines[2]
    assert lines[3].startswith("not yet: close") and "bias" in lines[3]


def test_receptive_field_of_vgg16_conv3_3_is_40(capsys):
    # by hand: conv1_1 3, conv1_2 5, pool1 6 (jump 2), conv2_1 10, conv2_2 14, pool2 16 (jump 4),
    # conv3_1 24, conv3_2 32, conv3_3 40
    check_layer_receptive_field(40, model="vgg16", layer="conv3_3")
    check_layer_receptive_field(16, model="vgg16", layer="conv2")  # a stage: after its pool
    check_layer_receptive_field(36, model="vgg16", layer="conv3_3")
    lines = verdicts(capsys)
    assert lines[:2] == ["correct", "correct"]
    assert lines[2].startswith("not yet: start from 1") and "40" not in lines[2]


def test_parameter_share_accepts_the_percentage_within_half_a_point(capsys):
    with torch.device("meta"):
        vgg11 = minibones.create_model("vgg11", init_weights=False)
    fc = [512 * 7 * 7 * 4096 + 4096, 4096 * 4096 + 4096, 4096 * 1000 + 1000]  # fc6, fc7, classifier
    share = 100 * sum(fc) / minibones.count_parameters(vgg11)
    check_parameter_share(round(share), model="vgg11", part="head")
    check_parameter_share(share + 0.4, model="vgg11", part="head")
    check_parameter_share(share / 100, model="vgg11", part="head")  # a fraction, not a percentage
    check_parameter_share(50, model="vgg11", part="head")
    lines = verdicts(capsys)
    assert lines[:2] == ["correct", "correct"]
    assert lines[2] == "not yet: give a percentage between 0 and 100, not a fraction"
    assert lines[3].startswith("not yet: count the parameters")


def conv_macs_by_hand(conv, height, width):
    # one multiply-add per weight and per output position (Simonyan & Zisserman's cost, section 3)
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    return conv.in_channels * conv.out_channels * kh * kw * out_h * out_w


def test_conv_macs_function_accepts_the_count_per_output_position(capsys):
    check_conv_macs_function(conv_macs_by_hand)
    assert verdicts(capsys) == ["correct"]


def test_conv_macs_function_refuses_flops_input_positions_biases_and_placeholders(capsys):
    check_conv_macs_function(lambda conv, h, w: 2 * conv_macs_by_hand(conv, h, w))
    check_conv_macs_function(lambda conv, h, w: conv.weight.numel() * h * w)  # stride and padding ignored

    def with_bias(conv, h, w):
        outputs = conv_macs_by_hand(conv, h, w) // (conv.in_channels * conv.weight[0, 0].numel())
        return conv_macs_by_hand(conv, h, w) + (outputs if conv.bias is not None else 0)

    check_conv_macs_function(with_bias)
    check_conv_macs_function(lambda conv, h, w: 0)
    check_conv_macs_function(lambda conv, h, w: "many")
    lines = verdicts(capsys)
    assert "FLOPs" in lines[0]
    assert "per output position" in lines[1]
    assert "bias is not a multiply-add" in lines[2]
    assert lines[3].startswith("not yet: for Conv2d(3, 64, kernel_size=3")
    assert lines[4] == "not yet: return one number, got str"
    with pytest.raises(ValueError, match="function itself"):
        check_conv_macs_function(42)


def test_vgg_checkers_refuse_malformed_questions():
    with pytest.raises(ValueError, match="no layer 'conv6_1'"):
        check_layer_receptive_field(1, model="vgg16", layer="conv6_1")
    with pytest.raises(ValueError, match="VGG family"):
        check_layer_receptive_field(1, model="resnet18", layer="conv2_x")
    with pytest.raises(ValueError, match="no part 'tail'"):
        check_parameter_share(1, model="vgg16", part="tail")
    with pytest.raises(ValueError, match="positive whole number"):
        check_conv_stack_parameters(1, convs=0, channels=64)
    with pytest.raises(ValueError, match="as a whole number"):
        check_conv_stack_parameters("many", convs=3, channels=64)


# --- notebook 02: ResNet ---------------------------------------------------------------


def test_weighted_layers_match_the_names_of_the_models():
    for name in ("resnet20", "resnet56", "resnet18", "resnet50", "resnet101"):
        with torch.device("meta"):
            model = minibones.create_model(name)
        assert weighted_layers(model) == int(name.removeprefix("resnet"))


def test_blocks_per_stage_of_the_1202_layer_net_is_200(capsys):
    check_blocks_per_stage((1202 - 2) // 6, depth=1202)
    check_blocks_per_stage(18, depth=110)
    check_blocks_per_stage(0, depth=1202)
    check_blocks_per_stage(100, depth=1202)
    check_blocks_per_stage(300, depth=1202)
    lines = verdicts(capsys)
    assert lines[:2] == ["correct", "correct"]
    assert all(line.startswith("not yet: ") for line in lines[2:])
    assert "too few" in lines[3] and "too many" in lines[4]
    assert not any("200" in line for line in lines[2:])


def test_block_parameters_count_convs_and_batch_norms(capsys):
    # Bottleneck(1024, 256): 1x1 1024->256, 3x3 256->256, 1x1 256->1024, no biases; BN: 2 per channel
    bottleneck = 1024 * 256 + 9 * 256 * 256 + 256 * 1024 + 2 * (256 + 256 + 1024)
    # BasicBlock(64, 128): two 3x3 convs and a projection shortcut (1x1 64->128 and its BN)
    basic = 9 * 64 * 128 + 9 * 128 * 128 + 2 * (128 + 128) + 64 * 128 + 2 * 128
    check_block_parameters(bottleneck, block="bottleneck", in_channels=1024, channels=256)
    check_block_parameters(basic, block="basic", in_channels=64, channels=128)
    check_block_parameters(0, block="bottleneck", in_channels=1024, channels=256)
    check_block_parameters(basic - 64 * 128 - 2 * 128, block="basic", in_channels=64, channels=128)
    lines = verdicts(capsys)
    assert lines[:2] == ["correct", "correct"]
    assert lines[2].startswith("not yet: ") and str(bottleneck) not in lines[2]
    assert lines[3].startswith("not yet: ") and "shortcut" in lines[3]


def test_shortcut_parameters_for_the_three_options(capsys):
    check_shortcut_parameters(256 * 512 + 2 * 512, kind="projection", in_channels=256, out_channels=512, stride=2)
    check_shortcut_parameters(0, kind="zero-pad", in_channels=16, out_channels=32, stride=2)
    check_shortcut_parameters(0, kind="identity", in_channels=64, out_channels=64, stride=1)
    check_shortcut_parameters(0, kind="projection", in_channels=256, out_channels=512, stride=2)
    lines = verdicts(capsys)
    assert lines[:3] == ["correct"] * 3
    assert lines[3].startswith("not yet: read the ProjectionShortcut class")


def test_resnet_checkers_refuse_malformed_questions():
    with pytest.raises(ValueError, match="block must be one of"):
        check_block_parameters(1, block="inverted", in_channels=64, channels=64)
    with pytest.raises(ValueError, match="kind must be one of"):
        check_shortcut_parameters(1, kind="dense", in_channels=64, out_channels=128)
    with pytest.raises(ValueError, match="identity shortcut needs"):
        check_shortcut_parameters(0, kind="identity", in_channels=64, out_channels=128)
    with pytest.raises(ValueError, match="whole number"):
        check_blocks_per_stage(2.5, depth=20)
    with pytest.raises(ValueError, match="positive whole number"):
        check_blocks_per_stage(3, depth=-20)


def test_a_plain_twin_is_the_resnet_without_its_addition():
    """What notebook 02 relies on: ResNet takes the block class, so a block whose forward
    drops the shortcut gives a network with the same parameters, identically initialised."""
    from minibones.models.resnet import BasicBlock, PlainBlock, ResNet

    reference = minibones.create_model("resnet20")
    nets = []
    for block in (PlainBlock, BasicBlock):
        torch.manual_seed(0)
        nets.append(ResNet(block, (3, 3, 3), reference.config, 10, widths=(16, 32, 64), stem="cifar"))
    plain, residual = nets
    convs = 9 * (3 * 16 + 6 * 16 * 16 + 16 * 32 + 5 * 32 * 32 + 32 * 64 + 5 * 64 * 64)  # option A: no projections
    batch_norms = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    assert minibones.count_parameters(plain) == minibones.count_parameters(reference) == convs + batch_norms + 64 * 10 + 10
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), residual.state_dict().values()))
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(plain.eval()(x), residual.eval()(x))
    assert isinstance(residual.stages[0][0].shortcut, nn.Identity)


def test_plain_block_is_the_basic_block_without_the_addition():
    from minibones.models.resnet import BasicBlock, PlainBlock

    torch.manual_seed(0)
    plain = PlainBlock(8, 8).eval()
    residual = BasicBlock(8, 8).eval()
    residual.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 6, 6)
    F = residual.bn2(residual.conv2(residual.relu1(residual.bn1(residual.conv1(x)))))
    assert torch.allclose(plain(x), torch.relu(F))
    assert torch.allclose(residual(x), torch.relu(F + x))


def _batch_gradient_norms(model, images, labels):
    model.zero_grad()
    nn.functional.cross_entropy(model(images), labels).backward()
    return torch.stack([w.grad.norm() for w in main_path_weights(model)])


def test_gradient_norms_checker_accepts_a_right_function(capsys):
    check_gradient_norms(_batch_gradient_norms)
    assert capsys.readouterr().out.strip() == "correct"
    check_gradient_norms(lambda *args: _batch_gradient_norms(*args).tolist())  # a list of numbers is fine too
    assert capsys.readouterr().out.strip() == "correct"


def _no_zero_grad(model, images, labels):
    nn.functional.cross_entropy(model(images), labels).backward()
    return torch.stack([w.grad.norm() for w in main_path_weights(model)])


def _with_shortcuts(model, images, labels):
    model.zero_grad()
    nn.functional.cross_entropy(model(images), labels).backward()
    return torch.stack([m.weight.grad.norm() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])


@pytest.mark.parametrize("wrong, hint", [
    (_no_zero_grad, "model.zero_grad()"),
    (_with_shortcuts, "shortcut projections are not on the main path"),
    (lambda m, i, l: torch.stack([w.norm() for w in main_path_weights(m)]), "norms of the weights themselves"),
    (lambda m, i, l: _batch_gradient_norms(m, i, l).flip(0), "reverse order"),
    (lambda m, i, l: torch.stack([w.grad.norm() for w in main_path_weights(m)]), "gradients of an earlier batch"),
    (lambda m, i, l: None, "return a 1-D tensor"),
])
def test_gradient_norms_checker_refuses_typical_mistakes(capsys, wrong, hint):
    check_gradient_norms(wrong)
    out = capsys.readouterr().out
    assert out.startswith("not yet:") and hint in out


def test_gradient_norms_checker_wants_the_function_itself():
    with pytest.raises(ValueError, match="pass your function itself"):
        check_gradient_norms(torch.zeros(6))
