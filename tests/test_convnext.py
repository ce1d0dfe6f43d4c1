"""ConvNeXt (Liu et al. 2022) matches torchvision, exposes its pyramid at strides 4-32, and compiles."""

import pytest
import torch
import torchvision
from torchvision.ops import StochasticDepth

import minibones
from minibones import count_parameters
from minibones.models.convnext import ConvNeXtBlock
from minibones.reference import relative_error
from parity import TOLERANCE, assert_activations_used_once, assert_compiles, ported_pair

CONVNEXTS = ["convnext_tiny", "convnext_small", "convnext_base", "convnext_large"]

# published parameter counts of torchvision's models (weights' meta["num_params"])
TORCHVISION_PARAMS = {
    "convnext_tiny": 28_589_128,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
    "convnext_large": 197_767_336,
}


@pytest.fixture(scope="module")
def tiny_pair():
    return ported_pair("convnext_tiny", meta_init=True)


@pytest.fixture(scope="module")
def tiny(tiny_pair):
    return tiny_pair[0]


def parity(model, reference, sizes) -> float:
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    with torch.no_grad():
        for height, width in sizes:
            x = torch.randn(1, 3, height, width, generator=generator)
            worst = max(worst, relative_error(model(x), reference(x)))
    return worst


# --- parity with torchvision --------------------------------------------------------------


def test_convnext_tiny_matches_torchvision(tiny_pair):
    # 224x224 and an odd, non-square size
    assert parity(*tiny_pair, [(224, 224), (97, 131)]) < TOLERANCE


@pytest.mark.parametrize("name", ["convnext_small", "convnext_base", "convnext_large"])
def test_convnext_matches_torchvision(name):
    # an odd, non-square size and a small square one: the code tiny runs at 224, at a fraction of the cost
    assert parity(*ported_pair(name, meta_init=True), [(97, 131), (64, 64)]) < TOLERANCE


@pytest.mark.parametrize("name", CONVNEXTS)
def test_convnext_has_as_many_parameters_as_torchvision(name):
    with torch.device("meta"):
        model = minibones.create_model(name)
        reference = getattr(torchvision.models, name)(weights=None)
    assert count_parameters(model) == count_parameters(reference) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", CONVNEXTS)
def test_stochastic_depth_grows_linearly_to_the_same_rate_as_torchvision(name):
    with torch.device("meta"):
        model = minibones.create_model(name)
        reference = getattr(torchvision.models, name)(weights=None)
    ours = [block.stochastic_depth.p for block in model.modules() if isinstance(block, ConvNeXtBlock)]
    theirs = [module.p for module in reference.modules() if isinstance(module, StochasticDepth)]
    assert ours == pytest.approx(theirs) and ours[0] == 0.0
    assert ours[-1] == pytest.approx({"convnext_tiny": 0.1, "convnext_small": 0.4}.get(name, 0.5))


# --- the pyramid --------------------------------------------------------------------------


def test_feature_strides_are_4_8_16_32(tiny):
    info = tiny.feature_info
    assert [s.name for s in info] == ["res2", "res3", "res4", "res5"]
    assert [s.stride for s in info] == [4, 8, 16, 32]
    assert [s.channels for s in info] == [96, 192, 384, 768]
    with torch.no_grad():
        x = torch.randn(1, 3, 128, 96)
        features = tiny.forward_stages(x)
        assert torch.equal(tiny.forward_features(x), features[-1])
    assert [tuple(f.shape) for f in features] == [(1, 96, 32, 24), (1, 192, 16, 12), (1, 384, 8, 6), (1, 768, 4, 3)]


def test_stem_cuts_the_image_into_non_overlapping_4x4_patches(tiny):
    # section 2.2, "patchify": output pixel (i, j) sees exactly the input pixels 4i..4i+3, 4j..4j+3
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(tiny.stem(x)[0, :, 2, 5].sum(), x)
    seen = grad[0].abs().sum(0) != 0
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:12, 20:24] = True
    assert torch.equal(seen, expected)


def test_every_layer_norm_uses_eps_1e_6_and_layer_scale_starts_at_1e_6():
    with torch.device("meta"):
        model = minibones.create_model("convnext_tiny")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 1 + 3 + 18 + 1  # stem, downsampling layers, one per block, head
    assert {m.eps for m in norms} == {1e-6}
    gamma = ConvNeXtBlock(8).layer_scale.gamma
    assert torch.equal(gamma, torch.full((8, 1, 1), 1e-6))  # every block starts close to the identity


def test_stochastic_depth_drops_whole_residual_branches_in_training_only():
    torch.manual_seed(0)
    block = ConvNeXtBlock(8, layer_scale=1.0, stochastic_depth_prob=0.5)
    x = torch.randn(64, 8, 5, 5)
    with torch.no_grad():
        branch = block.eval()(x) - x
        delta = block.train()(x) - x
    dropped = delta.flatten(1).abs().amax(1) == 0
    assert 0 < dropped.sum() < 64  # some samples skip the block, the others use it...
    torch.testing.assert_close(delta[~dropped], 2 * branch[~dropped])  # ... rescaled by 1 / (1 - p)


def test_too_small_images_are_refused_with_the_minimum_size(tiny):
    with pytest.raises(ValueError, match="needs images of at least 32x32, got 16x40"):
        tiny(torch.randn(1, 3, 16, 40))


# --- training-friendliness ----------------------------------------------------------------


def test_every_activation_module_is_used_once(tiny):
    assert_activations_used_once(tiny, torch.randn(1, 3, 32, 32), torch.nn.GELU, count=18)


def test_channels_last_gives_the_same_output(tiny):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = tiny(x)
        output = tiny.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        tiny.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-5)


def test_compiled_convnext_tiny_gives_the_same_output_and_gradients(tiny):
    assert_compiles(tiny, torch.randn(2, 3, 64, 64), wrt=tiny.stem.conv.weight)