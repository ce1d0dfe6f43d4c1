"""EfficientNet B0-B7 (Tan & Le 2019) and V2-S/M/L (2021) match torchvision, are scaled from B0
the way the release is, expose their pyramid, and compile."""

import math

import pytest
import torch
import torchvision
from torch import nn

import minibones
from minibones import count_parameters
from minibones.layers import DropPath
from minibones.models.efficientnet import ALPHA, BETA, B0_STAGES, EFFICIENTNET_B, GAMMA, compound_scaling
from minibones.reference import relative_error
from parity import TOLERANCE, assert_activations_used_once, assert_compiles, ported_pair

B_VARIANTS = [f"efficientnet_b{i}" for i in range(8)]
V2_VARIANTS = ["efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"]
# parity at 224x224 and at an odd, non-square size; the five largest at 128x128 instead of 224x224
# to keep the suite fast (any size works: the models are fully convolutional)
LARGE = {"efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_m", "efficientnet_v2_l"}


@pytest.fixture(scope="module", params=B_VARIANTS + V2_VARIANTS)
def pair(request):
    """Built once per variant; pytest runs all the tests of one variant before building the next."""
    return request.param, *ported_pair(request.param, meta_init=True)


def test_efficientnet_matches_torchvision(pair):
    name, model, reference = pair
    sizes = [(128, 128) if name in LARGE else (224, 224), (97, 131)]
    generator = torch.Generator().manual_seed(1)
    expected = []
    with torch.no_grad():
        for height, width in sizes:
            x = torch.randn(1, 3, height, width, generator=generator)
            expected.append(reference(x))
            assert relative_error(model(x), expected[-1]) < TOLERANCE, (height, width)
    # the test has teeth: another image changes the logits by far more than the tolerance
    assert relative_error(expected[0], expected[1]) > 0.05


def test_efficientnet_has_as_many_parameters_as_torchvision(pair):
    name, model, reference = pair
    published = getattr(torchvision.models, f"EfficientNet_{name[13:].upper()}_Weights").DEFAULT.meta["num_params"]
    assert count_parameters(model) == count_parameters(reference) == published


def conv_shapes(module: nn.Module) -> list[tuple]:
    """Every conv's weight shape, stride and groups, in order: equal lists mean equal widths, depths, kernels."""
    return [(tuple(m.weight.shape), m.stride, m.groups) for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_every_width_depth_and_kernel_is_torchvisions(pair):
    # for B1-B7: B0's table scaled by the variant's width and depth, rounded as the release rounds
    name, model, reference = pair
    assert conv_shapes(model) == conv_shapes(reference)


def test_batch_norm_eps_momentum_dropout_and_stochastic_depth_are_torchvisions(pair):
    name, model, reference = pair

    def norms(module):
        return {(m.eps, m.momentum) for m in module.modules() if isinstance(m, nn.BatchNorm2d)}

    if name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7"):  # ported from TensorFlow
        expected = {(1e-3, 0.01)}
    elif name in V2_VARIANTS:
        expected = {(1e-3, 0.1)}
    else:
        expected = {(1e-5, 0.1)}
    assert norms(model) == norms(reference) == expected
    assert model.head.drop.p == reference.classifier[0].p
    # stochastic depth: 0.2 * (index of the block) / (number of blocks), on the residual blocks
    ours = [m.p for m in model.modules() if isinstance(m, DropPath)]
    blocks = [block for stage in reference.features[1:-1] for block in stage]
    theirs = [block.stochastic_depth.p for block in blocks if block.use_res_connect]
    assert ours == theirs
    assert ours == sorted(ours) and max(ours) < 0.2


def test_input_size_is_torchvisions_evaluation_crop(pair):
    name, model, _ = pair
    weights = getattr(torchvision.models, f"EfficientNet_{name[13:].upper()}_Weights").DEFAULT
    crop = weights.transforms.keywords["crop_size"]
    if name == "efficientnet_b2":  # torchvision's B2 weights (timm's recipe) are evaluated at 288, the paper's at 260
        assert (crop, model.config.input_size[1]) == (288, 260)
    else:
        assert model.config.input_size == (3, crop, crop)


# --- compound scaling: how B1-B7 derive from B0 -----------------------------------------------


def test_b7_is_b0_twice_as_wide_and_3_1_times_as_deep():
    # width 2.0 and depth 3.1 of the release, rounded to multiples of 8 and up to whole blocks
    with torch.device("meta"):
        model = minibones.create_model("efficientnet_b7")
    assert [len(stage) for stage in model.stages] == [math.ceil(spec.depth * 3.1) for spec in B0_STAGES]
    assert [len(stage) for stage in model.stages] == [4, 7, 7, 10, 10, 13, 4]
    assert [info.channels for info in model.feature_info] == [32, 48, 80, 224, 2560]
    assert model.stem.conv.out_channels == 64


@pytest.mark.parametrize("name, released", [
    ("efficientnet_b1", (1.0, 1.1, 240)), ("efficientnet_b2", (1.1, 1.2, 260)), ("efficientnet_b3", (1.2, 1.4, 300)),
])
def test_b1_to_b3_derived_from_equation_3_are_the_released_coefficients(name, released):
    # the released values (tensorflow/tpu efficientnet_builder.py), typed here, not in the library
    assert EFFICIENTNET_B[name][:3] == released


@pytest.mark.parametrize("name", ["efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7"])
def test_b4_to_b7_are_as_wide_as_equation_3_says_but_10_to_15_percent_shallower(name):
    width, depth, resolution, _ = EFFICIENTNET_B[name]
    phi = math.log(resolution / 224) / math.log(GAMMA)  # the phi that their resolution implies
    scaled_width, scaled_depth, _ = compound_scaling(phi)
    assert abs(width - scaled_width) < 0.05
    assert 0.84 < depth / scaled_depth < 0.91


@pytest.mark.parametrize("name", ["efficientnet_b5", "efficientnet_b6", "efficientnet_b7"])
def test_no_phi_gives_the_released_width_and_depth_of_b5_to_b7(name):
    width, depth, _, _ = EFFICIENTNET_B[name]
    phis = [i / 1000 for i in range(10_000)]
    assert not [phi for phi in phis if round(BETA**phi, 1) == width and round(ALPHA**phi, 1) == depth]


def test_alpha_beta_squared_gamma_squared_is_about_2():
    # section 3.3: each unit of phi about doubles the FLOPs
    assert ALPHA * BETA**2 * GAMMA**2 == pytest.approx(1.92, abs=0.01)


# --- the pyramid, the contract, compilation ------------------------------------------------------


@pytest.mark.parametrize("name, channels", [
    ("efficientnet_b0", [16, 24, 40, 112, 1280]),
    ("efficientnet_v2_s", [24, 48, 64, 160, 1280]),
])
def test_feature_strides_are_2_4_8_16_32(name, channels):
    model = minibones.create_model(name).eval()
    assert [s.stride for s in model.feature_info] == [2, 4, 8, 16, 32]
    assert [s.channels for s in model.feature_info] == channels
    with torch.no_grad():
        features = model.forward_stages(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [(1, c, 64 // s, 96 // s) for c, s in zip(channels, [2, 4, 8, 16, 32])]
    # the last stage at each resolution (the fourth and the sixth keep the grid of the one before)
    assert [s.name for s in model.feature_info] == ["stage1", "stage2", "stage3", "stage5", "conv_head"]


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_v2_s"])
def test_every_activation_module_is_used_once(name):
    model = minibones.create_model(name)
    assert_activations_used_once(model, torch.randn(1, 3, 64, 64), (nn.SiLU, nn.Sigmoid))


def test_stochastic_depth_is_random_in_training_only():
    model = minibones.create_model("efficientnet_b0", drop_path_rate=0.5, dropout=0.0)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        torch.manual_seed(0)
        first = model(x)
        torch.manual_seed(1)
        assert not torch.equal(first, model(x))


def test_compiled_efficientnet_b0_gives_the_same_output_and_gradient():
    model = minibones.create_model("efficientnet_b0").eval()
    assert_compiles(model, torch.randn(2, 3, 64, 80))