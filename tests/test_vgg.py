"""VGG (Simonyan & Zisserman 2015) matches torchvision, exposes its pyramid, and compiles."""

import pytest
import torch

import minibones
from minibones import count_parameters, load_reference_weights
from minibones.backbone import measure_batch_norm_
from minibones.reference import build_reference, randomize_, relative_error
from parity import TOLERANCE, assert_activations_used_once, assert_compiles

# torchvision's published parameter counts (the ``num_params`` of each weights' meta data)
PARAMETERS = {
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
}
WIDTHS = [64, 128, 256, 512, 512]


@pytest.fixture(scope="module", params=list(PARAMETERS))
def ported(request):
    """Each VGG once (they are big): torchvision's with random weights, and ours loaded from it.

    Like ``parity.ported_pair``, but ours is built on the meta device (no init: the port overwrites
    it) while the reference keeps torchvision's He init: PyTorch's default init (``meta_init``)
    shrinks the signal through the plain convs until the biases alone decide the logits.
    """
    torch.manual_seed(0)
    with torch.device("meta"):
        model = minibones.create_model(request.param)
    reference = randomize_(build_reference(model))
    measure_batch_norm_(reference, torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(2)))
    load_reference_weights(model.to_empty(device="cpu"), reference)
    return model.eval(), reference.eval()


def assert_same_logits(model, reference, sizes):
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for size in sizes:
            x = torch.randn(1, 3, *size, generator=generator)
            expected = reference(x)
            assert relative_error(model(x), expected) < TOLERANCE, size
        # the logits depend on the input: otherwise an error of 0 would prove nothing. A deep plain
        # ReLU net with random weights maps images to similar logits (~4% apart for vgg13-19),
        # still a thousand times the tolerance
        assert relative_error(reference(torch.randn(1, 3, *size, generator=generator)), expected) > 0.01


def test_vgg_matches_torchvision(ported):
    assert_same_logits(*ported, [(224, 224), (97, 131)])  # the default, and an odd, non-square size


def test_vgg_has_as_many_parameters_as_torchvision(ported):
    model, reference = ported
    assert count_parameters(model) == count_parameters(reference) == PARAMETERS[model.config.name]


def test_feature_strides_are_2_4_8_16_32(ported):
    model, _ = ported
    assert [s.name for s in model.feature_info] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [s.stride for s in model.feature_info] == [2, 4, 8, 16, 32]
    assert [s.channels for s in model.feature_info] == WIDTHS
    with torch.no_grad():
        features = model.forward_stages(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [(1, c, 64 // s, 96 // s) for c, s in zip(WIDTHS, [2, 4, 8, 16, 32])]


@pytest.mark.parametrize(
    "name, depths",
    [("vgg11", [1, 1, 2, 2, 2]), ("vgg13", [2, 2, 2, 2, 2]), ("vgg16", [2, 2, 3, 3, 3]), ("vgg19", [2, 2, 4, 4, 4])],
)
def test_convs_per_stage_follow_table_1(name, depths):
    with torch.device("meta"):  # structure only: no memory, no time
        model = minibones.create_model(name)
    convs = [[m for m in stage.modules() if isinstance(m, torch.nn.Conv2d)] for stage in model.stages]
    assert [len(c) for c in convs] == depths
    assert all(conv.kernel_size == (3, 3) and conv.padding == (1, 1) for stage in convs for conv in stage)
    assert sum(depths) + 3 == int(name.removeprefix("vgg"))  # the convs and three fully connected layers


def test_most_of_vgg16s_parameters_sit_in_fc6():
    with torch.device("meta"):
        model = minibones.create_model("vgg16")
    fc6 = count_parameters(model.head.fc6)
    assert fc6 == 512 * 7 * 7 * 4096 + 4096 == 102_764_544
    assert count_parameters(model.stages) == 14_714_688  # all 13 convs together: a seventh of fc6


def test_bn_variants_keep_the_conv_bias():
    with torch.device("meta"):
        model = minibones.create_model("vgg11_bn")
    block = model.stages.conv1.conv1_1
    assert list(dict(block.named_children())) == ["conv", "bn", "relu"] and block.conv.bias is not None


def test_images_smaller_than_32_pixels_are_rejected_with_a_clear_message():
    with torch.device("meta"):
        model = minibones.create_model("vgg11")
        with pytest.raises(ValueError, match=r"at least 32x32"):
            model(torch.randn(1, 3, 31, 64))


@pytest.fixture(scope="module")
def vgg11():
    torch.manual_seed(0)
    return minibones.create_model("vgg11", num_classes=10, init_weights=False).eval()


def test_every_activation_module_is_used_once(vgg11):
    assert_activations_used_once(vgg11, torch.randn(1, 3, 32, 32), torch.nn.ReLU, count=8 + 2)  # 8 convs, fc6, fc7


def test_compiled_vgg11_gives_the_same_output_and_gradients(vgg11):
    assert_compiles(vgg11, torch.randn(2, 3, 32, 32))