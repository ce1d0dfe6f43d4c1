"""Checkers for the exercises of notebook 05 (EfficientNet: MBConv, squeeze-and-excitation,
stochastic depth and compound scaling).

Every truth is measured on the library itself: parameters on a real ``MBConv``, widths and
depths on ``create_model(...)`` (built on the meta device, where tensors have shapes but no
data, so that even B7 builds in a moment), drop-path rates on the built blocks, and the
expected growth of the multiply-adds from the library's own ``ALPHA``, ``BETA`` and ``GAMMA``, and
the channel rounding from the library's scaled tables (``StageSpec.scaled``).
"""

from __future__ import annotations

import torch

import minibones
from minibones.backbone import count_parameters
from minibones.course.exercises.answers import (as_function, as_number, as_whole_numbers, number_returned,
                                                positive_int, verdict)
from minibones.layers import DropPath
from minibones.models.efficientnet import ALPHA, B0_STAGES, BETA, EFFICIENTNET_B, GAMMA, MBConv


def _efficientnet_on_meta(model: str):
    if model not in EFFICIENTNET_B and not model.startswith("efficientnet_v2"):
        raise ValueError(f"model must be an EfficientNet such as 'efficientnet_b4', got {model!r}")
    with torch.device("meta"):
        return minibones.create_model(model)


def check_se_parameters(answer: int, in_channels: int = 40, expand_ratio: int = 6) -> None:
    """Is ``answer`` the number of parameters of the squeeze-and-excitation module inside an
    MBConv block whose input has ``in_channels`` channels and which expands them ``expand_ratio`` times?

    Counted on the library's ``MBConv``: the SE acts on the expanded width but squeezes to a
    quarter of the block's *input* width, which is the detail this exercise is about.
    """
    in_channels = positive_int(in_channels, "in_channels")
    expand_ratio = positive_int(expand_ratio, "expand_ratio")
    with torch.device("meta"):
        block = MBConv(in_channels, in_channels, 3, 1, expand_ratio)
    truth = count_parameters(block.se)
    answer = as_number(answer, "the number of parameters")
    expanded = block.depthwise.conv.out_channels
    wrong_squeeze = max(1, expanded // 4)
    if answer == 2 * expanded * wrong_squeeze + expanded + wrong_squeeze:
        return verdict(False, "EfficientNet squeezes to a quarter of the block's *input* channels, not of the expanded ones")
    return verdict(answer == truth, "the SE is two 1x1 convs with biases: expanded -> squeezed -> expanded, "
                   "where expanded = in_channels x expand_ratio and squeezed = in_channels // 4")


def check_scaled_stage(answer: tuple[int, int], model: str = "efficientnet_b4", stage: str = "stage6") -> None:
    """Is ``answer`` the (output channels, number of blocks) of ``stage`` of ``model``?

    Read from the built model: B0's row of the table scaled by the variant's width and depth
    multipliers, with the release's rounding (channels to a multiple of 8, depths up).
    """
    net = _efficientnet_on_meta(model)
    names = list(net.stages._modules)
    if stage not in names:
        raise ValueError(f"{model} has no stage {stage!r}; its stages are {names}")
    blocks = net.stages.get_submodule(stage)
    last = blocks[-1]
    out_channels = (last.project if "project" in last.parts else last.fused).conv.out_channels
    truth = (out_channels, len(blocks))
    answer = as_whole_numbers(answer, "(output channels, number of blocks)", count=2)
    if answer[0] != truth[0]:
        return verdict(False, "multiply B0's output channels (B0_STAGES) by the width in EFFICIENTNET_B, "
                       "then round with make_divisible (nearest multiple of 8, never 10% below)")
    return verdict(answer == truth, "multiply B0's depth by the depth coefficient in EFFICIENTNET_B and round *up* (math.ceil)")


def check_drop_path(answer: float, model: str = "efficientnet_b0", block: int = 15) -> None:
    """Is ``answer`` (to three decimals) the probability that stochastic depth drops the residual
    branch of block number ``block`` (counted from 0 over the whole network) during training?

    Read from the ``DropPath`` module of the built block; a block without a residual has none.
    """
    net = _efficientnet_on_meta(model)
    blocks = [b for stage in net.stages for b in stage]
    if isinstance(block, bool) or not isinstance(block, int) or not -len(blocks) <= block < len(blocks):
        raise ValueError(f"{model} has {len(blocks)} blocks: block must be a whole number from 0 to {len(blocks) - 1}")
    chosen = blocks[block]
    if not isinstance(chosen.drop_path, DropPath):
        raise ValueError(f"block {block} of {model} changes the shape, so it has no residual and nothing to drop; "
                         "choose a block that is not the first of its stage")
    truth = chosen.drop_path.p
    return verdict(abs(as_number(answer, "the probability") - truth) < 5e-4 + 1e-9,
                   "the rate grows linearly with the block's index: drop_path_rate x index / number of blocks, "
                   "counting every block of every stage from 0 (drop_path_rate is 0.2)")


def check_macs_growth(answer: float, phi: float = 3) -> None:
    """Is ``answer`` (to two decimals) the factor by which equation 3 of Tan & Le (2019) says
    the multiply-adds (the paper's "FLOPS") grow from B0 to compound coefficient ``phi``?

    Multiply-adds are proportional to depth x width^2 x resolution^2, so the factor is
    (alpha * beta^2 * gamma^2) ** phi, computed from the library's ALPHA, BETA and GAMMA.
    """
    phi = as_number(phi, "phi")
    truth = (ALPHA * BETA**2 * GAMMA**2) ** phi
    answer = as_number(answer, "the factor")
    if abs(answer - 2**phi) < 5e-3 and abs(truth - 2**phi) >= 5e-3:
        return verdict(False, "alpha * beta^2 * gamma^2 is only about 2: compute it from ALPHA, BETA and GAMMA")
    return verdict(abs(answer - truth) < 5e-3 + 1e-9,
                   "depth multiplies the multiply-adds once, width and resolution twice each (they multiply two sizes): "
                   "raise alpha * beta^2 * gamma^2 to the power phi")


def _round_filters_cases() -> list[tuple[int, float, int]]:
    """(B0 channels, width, channels of the scaled table) for every row of B0's table, at every
    released width and at the narrow widths the course trains (0.25, 0.5), whose small counts
    exercise the two guards of the rule (at least 8, never more than 10% below)."""
    widths = sorted({w for w, *_ in EFFICIENTNET_B.values()} | {0.25, 0.5})
    cases = []
    for width in widths:
        for spec in B0_STAGES:
            scaled = spec.scaled(width, 1.0)
            cases.append((spec.in_channels, width, scaled.in_channels))
            cases.append((spec.out_channels, width, scaled.out_channels))
    return list(dict.fromkeys(cases))


def check_round_filters(round_filters) -> None:
    """Does the learner's ``round_filters(channels, width)`` give the channel counts of the library's
    scaled tables (``StageSpec.scaled``, which every B1-B7 stage goes through)?

    Tried on every row of B0's table at every released width and at 0.25 and 0.5. A wrong answer
    is told which rule it breaks: the result must be a whole multiple of 8, the *nearest* one (not
    always down, not always up), at least 8, and never more than 10% below channels x width.
    """
    as_function(round_filters, "check_round_filters(round_filters)")
    for channels, width, truth in _round_filters_cases():
        returned = round_filters(channels, width)
        got = number_returned(returned, whole=True)
        if got is None:
            return verdict(False, f"round_filters({channels}, {width}) returned {returned!r}: return a whole number "
                           "(an int) of channels, a layer cannot have a fraction of a channel")
        if got == truth:
            continue
        value = channels * width
        case = f"round_filters({channels}, {width}) gave {got}"
        if got % 8:
            hint = "the result must be a multiple of 8 (8 suits SIMD lanes and tensor cores)"
        elif got < 8:
            hint = "never fewer than 8 channels"
        elif got < 0.9 * value:
            hint = f"{got} is more than 10% below {value:g}: when rounding to the nearest multiple loses more than 10%, add 8"
        elif got < value:
            hint = f"it rounds down; round {value:g} to the *nearest* multiple of 8"
        else:
            hint = f"it rounds up; round {value:g} to the *nearest* multiple of 8"
        return verdict(False, f"{case}: {hint}")
    return verdict(True, "")
