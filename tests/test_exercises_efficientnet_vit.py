"""The checkers of notebooks 05 (EfficientNet) and 06 (ViT) accept the right answer, computed
here independently from the papers' arithmetic, and reject a wrong one with a hint."""

import math

import pytest

from minibones.course.exercises.efficientnet import check_drop_path, check_macs_growth, check_scaled_stage, check_se_parameters
from minibones.course.exercises.vit import (check_attention_weights, check_block_parameters, check_num_tokens,
                                     check_patch_embed_parameters)


def said(capsys) -> str:
    return capsys.readouterr().out.strip()


# --- notebook 05 ------------------------------------------------------------------------


def se_parameters(in_channels: int, expand_ratio: int) -> int:
    """Two 1x1 convs with biases: expanded -> in_channels // 4 -> expanded."""
    expanded, squeezed = in_channels * expand_ratio, in_channels // 4
    return expanded * squeezed + squeezed + squeezed * expanded + expanded


def test_se_parameters_squeeze_to_a_quarter_of_the_block_input(capsys):
    check_se_parameters(se_parameters(40, 6), in_channels=40, expand_ratio=6)  # 240 -> 10 -> 240
    assert said(capsys) == "correct"
    check_se_parameters(se_parameters(16, 6), in_channels=16, expand_ratio=6)  # B0's stage2: 96 -> 4 -> 96
    assert said(capsys) == "correct"
    check_se_parameters(0, in_channels=40, expand_ratio=6)
    assert said(capsys).startswith("not yet:")


def test_se_parameters_says_when_the_squeeze_is_taken_from_the_expanded_width(capsys):
    expanded, wrong = 240, 240 // 4
    check_se_parameters(2 * expanded * wrong + expanded + wrong, in_channels=40, expand_ratio=6)
    answer = said(capsys)
    assert answer.startswith("not yet:") and "input" in answer


def test_scaled_stage_is_b0_row_times_width_and_depth(capsys):
    # B4: width 1.4, depth 1.8; B0's stage6 has 192 channels and 4 blocks. 192 * 1.4 = 268.8 -> 272 (multiple of 8)
    check_scaled_stage((272, math.ceil(4 * 1.8)), model="efficientnet_b4", stage="stage6")
    assert said(capsys) == "correct"
    check_scaled_stage((269, 8), model="efficientnet_b4", stage="stage6")
    assert said(capsys).startswith("not yet:")
    check_scaled_stage((272, 7), model="efficientnet_b4", stage="stage6")  # rounded down
    assert said(capsys).startswith("not yet:")
    # B7: width 2.0, depth 3.1; stage1 (16 channels, 1 block) -> 32 channels, ceil(3.1) = 4 blocks
    check_scaled_stage((32, 4), model="efficientnet_b7", stage="stage1")
    assert said(capsys) == "correct"


def test_drop_path_grows_linearly_with_the_block_index(capsys):
    # B0 has 1 + 2 + 2 + 3 + 3 + 4 + 1 = 16 blocks; rate = 0.2 * index / 16
    check_drop_path(round(0.2 * 14 / 16, 3), model="efficientnet_b0", block=14)
    assert said(capsys) == "correct"
    check_drop_path(0.2, model="efficientnet_b0", block=14)
    assert said(capsys).startswith("not yet:")


def test_macs_growth_is_alpha_beta_squared_gamma_squared_to_the_phi(capsys):
    check_macs_growth(round((1.2 * 1.1**2 * 1.15**2) ** 3, 2), phi=3)
    assert said(capsys) == "correct"
    check_macs_growth(8, phi=3)  # 2 ** phi: the rule of thumb, not the product
    answer = said(capsys)
    assert answer.startswith("not yet:") and "about 2" in answer


def test_efficientnet_checkers_reject_malformed_input():
    with pytest.raises(ValueError, match="stages are"):
        check_scaled_stage((272, 8), model="efficientnet_b4", stage="stage9")
    with pytest.raises(ValueError, match="EfficientNet"):
        check_scaled_stage((272, 8), model="resnet50", stage="stage6")
    with pytest.raises(ValueError, match="tuple of 2 whole numbers"):
        check_scaled_stage(272, model="efficientnet_b4", stage="stage6")
    with pytest.raises(ValueError, match="no residual"):
        check_drop_path(0.1, model="efficientnet_b0", block=15)  # stage7's only block changes the width
    with pytest.raises(ValueError, match="16 blocks"):
        check_drop_path(0.1, model="efficientnet_b0", block=16)
    with pytest.raises(ValueError, match="number"):
        check_se_parameters("868")
    with pytest.raises(ValueError, match="in_channels"):
        check_se_parameters(868, in_channels=0)


# --- notebook 06 ------------------------------------------------------------------------


def test_num_tokens_counts_the_patches_and_the_class_token(capsys):
    check_num_tokens(1 + (384 // 16) ** 2, model="vit_b_16", image_size=384)
    assert said(capsys) == "correct"
    check_num_tokens((384 // 16) ** 2, model="vit_b_16", image_size=384)
    answer = said(capsys)
    assert answer.startswith("not yet:") and "one more" in answer
    check_num_tokens(1 + (32 // 4) ** 2, model="vit_tiny_cifar", image_size=32)
    assert said(capsys) == "correct"


def test_patch_embed_parameters_are_a_strided_conv(capsys):
    # ViT-L/32: D = 1024, P = 32
    check_patch_embed_parameters(3 * 32 * 32 * 1024 + 1024, model="vit_l_32")
    assert said(capsys) == "correct"
    check_patch_embed_parameters(3 * 32 * 32 * 1024, model="vit_l_32")  # the bias forgotten
    assert said(capsys).startswith("not yet:")


def test_attention_weights_are_heads_times_tokens_squared(capsys):
    tokens = 1 + (224 // 16) ** 2
    check_attention_weights(12 * tokens**2, model="vit_b_16", image_size=224)
    assert said(capsys) == "correct"
    check_attention_weights(tokens**2, model="vit_b_16", image_size=224)
    answer = said(capsys)
    assert answer.startswith("not yet:") and "one head" in answer


def test_block_parameters_follow_equations_2_and_3(capsys):
    def block(dim: int, mlp: int) -> int:
        attention = (dim * 3 * dim + 3 * dim) + (dim * dim + dim)
        mlp_part = (dim * mlp + mlp) + (mlp * dim + dim)
        return attention + mlp_part + 2 * 2 * dim
    check_block_parameters(block(128, 512), model="vit_tiny_cifar")
    assert said(capsys) == "correct"
    check_block_parameters(block(768, 3072), model="vit_b_16")
    assert said(capsys) == "correct"
    check_block_parameters(block(128, 512) - 4 * 128, model="vit_tiny_cifar")  # LayerNorms forgotten
    assert said(capsys).startswith("not yet:")


def test_vit_checkers_reject_malformed_input():
    with pytest.raises(ValueError, match="one of the ViTs"):
        check_num_tokens(197, model="resnet50", image_size=224)
    with pytest.raises(ValueError, match="multiples of 16"):
        check_num_tokens(197, model="vit_b_16", image_size=200)
    with pytest.raises(ValueError, match="image_size"):
        check_attention_weights(0, model="vit_b_16", image_size=0)
    with pytest.raises(ValueError, match="number"):
        check_block_parameters(None, model="vit_b_16")
