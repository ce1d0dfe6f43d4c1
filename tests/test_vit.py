"""ViT (Dosovitskiy et al. 2021) matches torchvision, runs at any multiple of its patch size,
shows its attention, exposes a grid of patch tokens, and compiles."""

import pytest
import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

import minibones
from minibones import count_parameters, load_reference_weights
from minibones.models.vit import resample_position_embedding
from minibones.reference import randomize_, relative_error
from parity import TOLERANCE, assert_activations_used_once, assert_compiles, ported_pair

# torchvision's nn.MultiheadAttention fast path and ours (F.scaled_dot_product_attention)
# round differently, by ~1e-6 relative: compare relatively, never bit for bit.

# published parameter counts of torchvision's 224x224 models (weights' meta["num_params"])
TORCHVISION_PARAMS = {
    "vit_b_16": 86_567_656,
    "vit_b_32": 88_224_232,
    "vit_l_16": 304_326_632,
    "vit_l_32": 306_535_400,
    "vit_h_14": 632_045_800,
}


def logits_error(model, reference, size: int, batch: int) -> float:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return relative_error(model(x), reference(x))


@pytest.fixture(scope="module")
def vit_b_32_pair():
    return ported_pair("vit_b_32", meta_init=True)


@pytest.fixture(scope="module")
def vit_b_32(vit_b_32_pair):
    return vit_b_32_pair[0]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return randomize_(minibones.create_model("vit_tiny_cifar")).eval()


# --- parity with torchvision --------------------------------------------------------------


def test_vit_b_32_matches_torchvision_at_224(vit_b_32_pair):
    model, reference = vit_b_32_pair
    assert logits_error(model, reference, 224, batch=2) < TOLERANCE


@pytest.mark.parametrize("name", ["vit_b_16", "vit_l_32"])
def test_vit_matches_torchvision_at_224(name):
    model, reference = ported_pair(name, meta_init=True)
    assert logits_error(model, reference, 224, batch=1) < TOLERANCE


@pytest.mark.parametrize("name, grid", [("vit_l_16", 7), ("vit_h_14", 8)])
def test_big_vit_matches_torchvision_built_for_112(name, grid):
    # At 224 one forward costs 62 (vit_l_16) or 167 (vit_h_14) GMACs: seconds on 2 cores. Built
    # for 112x112 (torchvision's image_size argument: 7x7 or 8x8 patches) both run the same
    # weights and code at a quarter of the cost; 224 itself is checked on the other variants.
    model, reference = ported_pair(name, meta_init=True, image_size=112)
    assert reference.image_size == 112 and model.pos_embed.shape[1] == 1 + grid * grid
    assert logits_error(model, reference, 112, batch=1) < TOLERANCE


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_vit_has_as_many_parameters_as_torchvision(name):
    with torch.device("meta"):
        model = minibones.create_model(name)
        reference = getattr(torchvision.models, name)(weights=None)
    assert count_parameters(model) == count_parameters(reference) == TORCHVISION_PARAMS[name]


def test_vit_tiny_cifar_is_torchvisions_vision_transformer_at_a_small_size():
    # no checkpoint exists, but torchvision's class builds the same architecture
    torch.manual_seed(0)
    reference = TorchvisionViT(image_size=32, patch_size=4, num_layers=8, num_heads=4, hidden_dim=128, mlp_dim=512,
                               num_classes=10)
    model = minibones.create_model("vit_tiny_cifar")
    load_reference_weights(model, randomize_(reference))
    assert count_parameters(model) == count_parameters(reference) == 1_602_442
    assert model.num_classes == 10 and model.config.input_size == (3, 32, 32)
    assert logits_error(model.eval(), reference.eval(), 32, batch=4) < TOLERANCE


# --- attention: the fused fast path and the explicit path ---------------------------------


def test_forward_uses_scaled_dot_product_attention_once_per_block(tiny, monkeypatch):
    calls = []
    fused = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return fused(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    with torch.no_grad():
        tiny(torch.randn(2, 3, 32, 32))
    assert calls == [(2, 4, 65, 32)] * 8  # (B, heads, 1 + 8x8 tokens, head size) in each of the 8 blocks


def test_attention_weights_do_not_change_the_logits(tiny):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, attentions = tiny.forward_attention(x)
        assert relative_error(logits, tiny(x)) < TOLERANCE
    assert len(attentions) == 8
    for weights in attentions:
        assert weights.shape == (2, 4, 65, 65)  # (B, heads, queries, keys), class token first
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 65))


def test_explicit_attention_is_softmax_of_scaled_dot_products(tiny):
    attn = tiny.blocks[0].attn
    x = torch.randn(1, 65, 128)
    with torch.no_grad():
        q, k, v = attn.qkv(x).split(128, dim=-1)  # packed in q, k, v order
        q, k, v = (t.reshape(1, 65, 4, 32).transpose(1, 2) for t in (q, k, v))
        expected = torch.softmax(q @ k.transpose(-2, -1) / 32**0.5, dim=-1)
        out, weights = attn.forward_attention(x)
        torch.testing.assert_close(weights, expected)
        torch.testing.assert_close(out, attn(x), rtol=1e-5, atol=1e-6)


# --- any size that is a multiple of the patch size ----------------------------------------


def test_vit_runs_at_384_with_interpolated_position_embeddings(vit_b_32):
    # torchvision's vit_b_32 refuses anything but 224x224
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        features = vit_b_32.forward_features(torch.randn(1, 3, 384, 384, generator=generator))
        logits = vit_b_32.forward_head(features)
        other = vit_b_32(torch.randn(1, 3, 384, 384, generator=generator))
    assert features.shape == (1, 1 + 12 * 12, 768)
    assert logits.shape == (1, 1000)
    assert relative_error(other, logits) > 0.05  # the 12x12 patches are read: another image, other logits


def test_running_at_another_size_equals_a_model_with_resampled_position_embeddings(tiny):
    # what torchvision would compute at 64x64 if given our position embeddings resampled to 16x16
    reference = TorchvisionViT(image_size=64, patch_size=4, num_layers=8, num_heads=4, hidden_dim=128, mlp_dim=512,
                               num_classes=10).eval()
    with torch.no_grad():
        state = {name: tensor.clone() for name, tensor in tiny.state_dict().items()}
        state["pos_embed"] = resample_position_embedding(tiny.pos_embed, (8, 8), (16, 16))
        converted = {}
        for name, tensor in reference.state_dict().items():
            converted[name] = state[minibones.porting.rename(name, tiny.name_map)]
        reference.load_state_dict(converted)
        x = torch.randn(2, 3, 64, 64)
        assert relative_error(tiny(x), reference(x)) < TOLERANCE


def test_position_embeddings_are_resampled_like_timm():
    timm_layers = pytest.importorskip("timm.layers")
    pos_embed = torch.randn(1, 1 + 14 * 14, 32)
    for grid in [(24, 24), (24, 20), (4, 4), (14, 14)]:
        ours = resample_position_embedding(pos_embed, (14, 14), grid)
        expected = timm_layers.resample_abs_pos_embed(pos_embed, list(grid), old_size=[14, 14])  # bicubic, antialias
        assert ours.shape == (1, 1 + grid[0] * grid[1], 32)
        torch.testing.assert_close(ours, expected)
        assert torch.equal(ours[:, 0], pos_embed[:, 0])  # the class token has no position: kept apart


def test_native_size_uses_the_stored_position_embeddings(vit_b_32):
    assert vit_b_32.grid_size == (7, 7)
    assert vit_b_32.position_embedding((7, 7)) is vit_b_32.pos_embed


@pytest.mark.parametrize("name, size, fix", [("vit_b_16", (225, 224), "224x224"), ("vit_h_14", (64, 64), "56x56"),
                                             ("vit_tiny_cifar", (30, 30), "28x28")])
def test_sizes_that_are_not_multiples_of_the_patch_size_are_refused(name, size, fix):
    with torch.device("meta"):
        model = minibones.create_model(name)
    with pytest.raises(ValueError, match=rf"patches, so the height and width must be multiples of .*e\.g\. {fix}"):
        model(torch.randn(1, 3, *size, device="meta"))


def test_loading_a_checkpoint_for_another_resolution_resamples_its_position_embeddings():
    # e.g. torchvision's vit_h_14 SWAG weights are for 518x518
    reference = randomize_(TorchvisionViT(image_size=64, patch_size=4, num_layers=8, num_heads=4, hidden_dim=128,
                                          mlp_dim=512, num_classes=10))
    model = minibones.create_model("vit_tiny_cifar")
    load_reference_weights(model, reference)
    expected = resample_position_embedding(reference.encoder.pos_embedding.detach(), (16, 16), (8, 8))
    assert torch.equal(model.pos_embed.detach(), expected)


# --- the feature grid that necks consume --------------------------------------------------


def test_stages_are_four_evenly_spaced_blocks_all_at_stride_16():
    with torch.device("meta"):
        model = minibones.create_model("vit_l_16")
    assert [s.name for s in model.feature_info] == ["block5", "block11", "block17", "block23"]
    assert [s.module for s in model.feature_info] == ["blocks.5", "blocks.11", "blocks.17", "blocks.23"]
    assert [(s.stride, s.channels) for s in model.feature_info] == [(16, 1024)] * 4


def test_stages_are_patch_token_grids_and_features_the_normalized_tokens(tiny):
    assert [s.module for s in tiny.feature_info] == ["blocks.1", "blocks.3", "blocks.5", "blocks.7"]
    assert [s.stride for s in tiny.feature_info] == [4] * 4
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        stages = tiny.forward_stages(x)
        features = tiny.forward_features(x)
        logits = tiny(x)
        last_tokens = stages[-1].flatten(2).transpose(1, 2)  # (B, 8*12, 128), row by row
        torch.testing.assert_close(tiny.norm(last_tokens), features[:, 1:])  # the last stage is before the final LN
        torch.testing.assert_close(tiny.forward_head(features), logits)
    assert [tuple(s.shape) for s in stages] == [(2, 128, 8, 12)] * 4
    assert features.shape == (2, 1 + 8 * 12, 128)


def test_patch_embedding_is_a_linear_map_of_each_flattened_patch(tiny):
    x = torch.randn(1, 3, 32, 32)
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4)  # (1, 3, 8, 8, 4, 4)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(1, 64, 3 * 4 * 4)  # eq. 1's x_p, row by row
    conv = tiny.patch_embed.proj
    with torch.no_grad():
        expected = patches @ conv.weight.reshape(128, -1).T + conv.bias  # x_p E
        torch.testing.assert_close(tiny.patch_embed(x), expected, rtol=1e-5, atol=1e-5)


# --- training-friendliness ----------------------------------------------------------------


def test_every_activation_module_is_used_once(tiny):
    assert_activations_used_once(tiny, torch.randn(1, 3, 32, 32), torch.nn.GELU, count=8)


def test_compiled_vit_gives_the_same_output_and_gradients(tiny):
    assert_compiles(tiny, torch.randn(2, 3, 32, 32), wrt=tiny.pos_embed)