"""The checkers of notebooks 03 (Inception) and 04 (Xception) accept the right answer, computed
here independently from the papers' arithmetic, and reject a wrong one with a hint."""

import pytest

from minibones.exercises.inception import check_bottleneck_saving, check_branch_receptive_field, check_module_width
from minibones.exercises.xception import check_flops_ratio, check_flow_parameters, check_separable_parameters


def said(capsys) -> str:
    return capsys.readouterr().out.strip()


# --- notebook 03 ------------------------------------------------------------------------


def test_module_width_is_the_sum_of_the_four_branch_outputs(capsys):
    # table 1 of Szegedy et al. 2015, inception (4c): #1x1 128, #3x3 256, #5x5 64, pool proj 64
    check_module_width(128 + 256 + 64 + 64, module="inception4c")
    assert said(capsys) == "correct"
    check_module_width(128 + 128 + 256 + 24 + 64 + 64, module="inception4c")  # reduce widths added too
    assert said(capsys).startswith("not yet:")


def test_grid_reduction_width_includes_the_pooled_input(capsys):
    # Inception-v3's mixed7a on mixed6e's 768 channels: strided 3x3 to 320, 7x7x3 branch to 192, max pool (768)
    check_module_width(320 + 192 + 768, module="mixed7a", model="inception_v3")
    assert said(capsys) == "correct"
    check_module_width(320 + 192, module="mixed7a", model="inception_v3")
    assert said(capsys).startswith("not yet:")


def test_bottleneck_saving_counts_conv_weights(capsys):
    # inception (4e), 3x3 branch: 528 in, 160 reduce, 320 out
    without = 528 * 320 * 9
    with_reduce = 528 * 160 + 160 * 320 * 9
    check_bottleneck_saving(without - with_reduce, module="inception4e", branch="branch3x3")
    assert said(capsys) == "correct"
    check_bottleneck_saving(0, module="inception4e", branch="branch3x3")
    assert said(capsys).startswith("not yet:")


def test_bottleneck_saving_uses_the_library_kernel_of_the_5x5_branch(capsys):
    # torchvision's (and the library's) "5x5" branch is a 3x3 conv: 480 in, 16 reduce, 48 out in 4a
    check_bottleneck_saving(480 * 48 * 9 - (480 * 16 + 16 * 48 * 9), module="inception4a", branch="branch5x5")
    assert said(capsys) == "correct"


def test_factorized_branch_receptive_field(capsys):
    check_branch_receptive_field((13, 13), module="mixed6b", branch="branch7x7dbl")  # 7x1, 1x7, 7x1, 1x7
    assert said(capsys) == "correct"
    check_branch_receptive_field((7, 7), module="mixed6b", branch="branch7x7")  # 1x7 then 7x1
    assert said(capsys) == "correct"
    check_branch_receptive_field((5, 5), module="mixed5b", branch="branch3x3dbl")  # two 3x3s: a 5x5 window
    assert said(capsys) == "correct"
    check_branch_receptive_field((7, 13), module="mixed6b", branch="branch7x7dbl")
    assert said(capsys).startswith("not yet:")


def test_inception_checkers_reject_malformed_input():
    with pytest.raises(ValueError, match="no Inception block"):
        check_module_width(512, module="inception9z")
    with pytest.raises(ValueError, match="branch must be"):
        check_bottleneck_saving(0, branch="branch1x1")
    with pytest.raises(ValueError, match="no branch"):
        check_branch_receptive_field((1, 1), module="mixed6b", branch="branch5x5")
    with pytest.raises(ValueError, match="height, width"):
        check_branch_receptive_field(13, module="mixed6b")
    with pytest.raises(ValueError, match="whole number"):
        check_module_width("512")


# --- notebook 04 ------------------------------------------------------------------------


def test_separable_parameters(capsys):
    check_separable_parameters(9 * 256 + 256 * 728, in_channels=256, out_channels=728)
    assert said(capsys) == "correct"
    check_separable_parameters(9 * 256 * 728, in_channels=256, out_channels=728)  # the full conv
    assert said(capsys).startswith("not yet:")


def test_flops_ratio_to_one_decimal(capsys):
    c = 728
    ratio = 9 * c * c / (9 * c + c * c)  # Chollet 2017: the grid size cancels
    check_flops_ratio(round(ratio, 1), channels=c, size=19)
    assert said(capsys) == "correct"
    check_flops_ratio(9, channels=c, size=19)
    assert said(capsys).startswith("not yet:")


def test_middle_flow_parameters(capsys):
    c = 728
    separable_bn = 9 * c + c * c + 2 * c
    check_flow_parameters(8 * 3 * separable_bn, flow="middle_flow")  # 8 blocks of 3, identity shortcuts
    assert said(capsys) == "correct"
    check_flow_parameters(8 * 3 * (9 * c + c * c), flow="middle_flow")  # batch norms forgotten
    assert said(capsys).startswith("not yet:")


def test_xception_checkers_reject_malformed_input():
    with pytest.raises(ValueError, match="flow must be"):
        check_flow_parameters(0, flow="middle")
    with pytest.raises(ValueError, match="positive whole number"):
        check_separable_parameters(0, in_channels=0)
    with pytest.raises(ValueError, match="as a number"):
        check_flops_ratio("8.9")
