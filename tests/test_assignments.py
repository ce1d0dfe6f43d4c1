"""The classroom assignments round-trip through nbgrader, and the grading messages help.

The round trip is what an instructor relies on: the solution scores full marks
under ``nbgrader autograde``, the untouched student version scores zero, and the
grader does not crash on it.
"""

import pytest
import torch
from torch import nn

from minibones import classroom
from minibones.grading import Mismatch, check_module, check_same_output, check_same_parameters
from minibones.models.resnet import BasicBlock, ProjectionShortcut

ASSIGNMENTS = classroom.assignments()


def test_there_are_assignments_to_hand_out():
    assert ASSIGNMENTS, "no source notebooks in notebooks/assignments/source"


@pytest.fixture(scope="module")
def scores():
    return classroom.check()


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solution_scores_full_marks_and_blank_scores_zero(scores, name):
    solution, blank = scores[name]["solution"], scores[name]["blank"]
    assert solution[1] > 0
    assert solution[0] == solution[1], f"the instructor solution of {name} scored {solution[0]}/{solution[1]}"
    assert blank == (0.0, solution[1]), f"the blank student version of {name} scored {blank[0]}/{blank[1]}"


class BlockWithBias(BasicBlock):
    def __init__(self, *args):
        super().__init__(*args)
        self.conv1 = nn.Conv2d(64, 64, 3, 1, 1, bias=True)


class BlockWithWrongStride(BasicBlock):
    def __init__(self, in_channels, channels, stride):
        super().__init__(in_channels, channels, 1)
        self.shortcut = ProjectionShortcut(in_channels, channels, 1)


class BlockWithoutFinalReLU(BasicBlock):
    def forward(self, x):
        return self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x)


def test_an_extra_bias_is_named():
    with pytest.raises(Mismatch, match="conv1 has a bias it should not have"):
        check_same_parameters(BlockWithBias(64, 64), BasicBlock(64, 64))


def test_a_wrong_stride_is_pointed_at():
    student, reference = BlockWithWrongStride(64, 128, 2), BasicBlock(64, 128, 2)
    student.load_state_dict(reference.state_dict())
    with pytest.raises(Mismatch, match=r"returned shape \(1, 128, 8, 8\), expected \(1, 128, 4, 4\).*check the strides"):
        check_same_output(student, reference, torch.randn(1, 64, 8, 8))


def test_a_missing_activation_is_caught_by_the_values():
    with pytest.raises(Mismatch, match="right shapes but different values"):
        check_module(BlockWithoutFinalReLU(64, 64), BasicBlock(64, 64), torch.randn(2, 64, 8, 8))


def test_the_library_block_passes_its_own_check():
    check_module(BasicBlock(32, 64, 2), BasicBlock(32, 64, 2), torch.randn(2, 32, 9, 9))
