"""The checkers of notebooks 03 (Inception) and 04 (Xception) accept the right answer, computed
here independently from the papers' arithmetic, and reject a wrong one with a hint."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minibones.course.exercises.inception import (
    check_bottleneck_saving, check_branch_receptive_field, check_inception_module, check_module_width,
)
from minibones.course.exercises.xception import (
    check_macs_ratio, check_flow_parameters, check_grouped_conv, check_separable_parameters,
)
from minibones.models.inception import InceptionModule, conv_bn


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


class Figure2b(nn.Module):
    """Figure 2(b) of Szegedy et al. 2015 written from the paper, with other attribute names than the library's."""

    def __init__(self, c_in, ch1x1, ch3x3_reduce, ch3x3, ch5x5_reduce, ch5x5, pool_proj, kernel=5, pool=True):
        super().__init__()
        self.one = conv_bn(c_in, ch1x1, 1)
        self.three = nn.Sequential(conv_bn(c_in, ch3x3_reduce, 1), conv_bn(ch3x3_reduce, ch3x3, 3, padding=1))
        self.five = nn.Sequential(conv_bn(c_in, ch5x5_reduce, 1), conv_bn(ch5x5_reduce, ch5x5, kernel, padding=kernel // 2))
        self.pool = nn.MaxPool2d(3, stride=1, padding=1) if pool else nn.Identity()
        self.proj = conv_bn(c_in, pool_proj, 1)

    def forward(self, x):
        return torch.cat([self.one(x), self.three(x), self.five(x), self.proj(self.pool(x))], 1)


def test_inception_module_written_from_the_paper_passes(capsys):
    check_inception_module(Figure2b)
    assert said(capsys) == "correct"


def test_inception_module_mistakes_get_their_own_hint(capsys):
    class TorchvisionFiveByFive(Figure2b):
        def __init__(self, *widths):
            super().__init__(*widths, kernel=3)

    class NoPool(Figure2b):
        def __init__(self, *widths):
            super().__init__(*widths, pool=False)

    class BranchesSwapped(Figure2b):
        def forward(self, x):
            return torch.cat([self.one(x), self.five(x), self.three(x), self.proj(self.pool(x))], 1)

    class Unpadded(Figure2b):
        def __init__(self, *widths):
            super().__init__(*widths)
            self.three[1].conv.padding = (0, 0)

    class Library(InceptionModule):
        pass

    check_inception_module(TorchvisionFiveByFive)
    assert "as in torchvision's GoogLeNet" in said(capsys)
    for wrong in (NoPool, BranchesSwapped):
        check_inception_module(wrong)
        assert said(capsys).startswith("not yet: the right shapes but other values")
    check_inception_module(Unpadded)
    assert "pad every conv" in said(capsys)
    check_inception_module(Library)
    assert "yourself" in said(capsys)
    with pytest.raises(ValueError, match="your class itself"):
        check_inception_module(Figure2b(192, 64, 96, 128, 16, 32, 32))


# --- notebook 04 ------------------------------------------------------------------------


def test_separable_parameters(capsys):
    check_separable_parameters(9 * 256 + 256 * 728, in_channels=256, out_channels=728)
    assert said(capsys) == "correct"
    check_separable_parameters(9 * 256 * 728, in_channels=256, out_channels=728)  # the full conv
    assert said(capsys).startswith("not yet:")


def test_macs_ratio_to_one_decimal(capsys):
    c = 728
    ratio = 9 * c * c / (9 * c + c * c)  # Chollet 2017: the grid size cancels
    check_macs_ratio(round(ratio, 1), channels=c, size=19)
    assert said(capsys) == "correct"
    check_macs_ratio(9, channels=c, size=19)
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
        check_macs_ratio("8.9")


def grouped_conv_by_slices(x, weight, groups):
    # groups=g: the input channels in g slices, output channel o reads slice o // (C_out / g)
    padding = weight.shape[-1] // 2
    return torch.cat([F.conv2d(part, w, padding=padding) for part, w in zip(x.chunk(groups, 1), weight.chunk(groups, 0))], 1)


def test_grouped_conv_built_from_one_conv_per_group_passes(capsys):
    check_grouped_conv(grouped_conv_by_slices)
    assert said(capsys) == "correct"


def test_grouped_conv_refuses_delegation_interleaving_and_lost_padding(capsys):
    def delegates(x, weight, groups):
        conv = nn.Conv2d(x.shape[1], weight.shape[0], weight.shape[-1], padding=weight.shape[-1] // 2, groups=groups,
                         bias=False)
        conv.weight.data = weight
        return conv(x)

    def interleaved(x, weight, groups):  # channel c to group c % g: not how groups split the channels
        padding = weight.shape[-1] // 2
        return torch.cat([F.conv2d(x[:, g::groups], w, padding=padding) for g, w in enumerate(weight.chunk(groups, 0))], 1)

    def unpadded(x, weight, groups):
        return torch.cat([F.conv2d(part, w) for part, w in zip(x.chunk(groups, 1), weight.chunk(groups, 0))], 1)

    check_grouped_conv(delegates)
    assert "with groups=4" in said(capsys)
    check_grouped_conv(interleaved)
    assert said(capsys).startswith("not yet: right shape, other values")
    check_grouped_conv(unpadded)
    assert "pad by k // 2" in said(capsys)
    check_grouped_conv(lambda x, weight, groups: None)
    assert said(capsys) == "not yet: return a tensor, got NoneType"
    check_grouped_conv(lambda x, weight, groups: F.conv2d(x, weight, padding=weight.shape[-1] // 2))  # groups ignored
    assert "your function failed" in said(capsys)
