"""Checkers for the exercises of notebook 04 (Xception: depthwise separable convolutions).

The truths are measured on the library's own modules: parameters are counted on
``minibones.models.xception.SeparableConv`` and on the flows of ``create_model("xception")``,
FLOPs with PyTorch's FLOP counter on a real forward pass, never taken from the paper.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import minibones
from minibones.backbone import count_parameters
from minibones.exercises import as_number, positive_int, verdict
from minibones.models.xception import SeparableConv

FLOWS = ("entry_flow", "middle_flow", "exit_flow")


def check_separable_parameters(answer: int, in_channels: int = 256, out_channels: int = 728) -> None:
    """Is ``answer`` the number of parameters of Xception's separable conv from ``in_channels``
    to ``out_channels`` (3x3 depthwise, then 1x1 pointwise, no biases)?

    Counted on the library's ``SeparableConv``, the layer every Xception block is made of.
    """
    layer = SeparableConv(positive_int(in_channels, "in_channels"), positive_int(out_channels, "out_channels"))
    truth = count_parameters(layer)
    answer = as_number(answer, "the number of parameters")
    if answer == 9 * in_channels * out_channels:
        return verdict(False, "that is the full 3x3 conv; the depthwise part has one 3x3 filter per input channel")
    return verdict(answer == truth, "depthwise: one k x k filter per input channel; pointwise: a 1x1 conv from "
                   "in_channels to out_channels; neither has a bias")


def _flops(module: nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(shape, device="meta"))
    return counter.get_total_flops()


def check_flops_ratio(answer: float, channels: int = 728, size: int = 19) -> None:
    """Is ``answer`` (to one decimal) how many times more FLOPs a full 3x3 conv from ``channels`` to
    ``channels`` costs than a separable one, on a ``size`` x ``size`` grid?

    Both are counted by PyTorch's FLOP counter on a forward pass (on the meta device: shapes only).
    """
    channels, size = positive_int(channels, "channels"), positive_int(size, "size")
    with torch.device("meta"):
        full = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        separable = SeparableConv(channels, channels)
    shape = (1, channels, size, size)
    truth = _flops(full, shape) / _flops(separable, shape)
    return verdict(abs(as_number(answer, "the ratio") - truth) < 0.05 + 1e-9,
                   "per output position a full conv costs k*k*C_in*C_out multiply-adds, a separable one "
                   "k*k*C_in + C_in*C_out; the grid size cancels out (give one decimal)")


def check_flow_parameters(answer: int, flow: str = "middle_flow") -> None:
    """Is ``answer`` the number of parameters of Xception's ``flow`` (entry, middle or exit)?

    Counted on ``create_model("xception")`` (built on the meta device: shapes only).
    """
    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
    with torch.device("meta"):
        net = minibones.create_model("xception")
    truth = count_parameters(net.get_submodule(flow))
    return verdict(as_number(answer, "the number of parameters") == truth,
                   f"list the blocks of {flow} (print it): each separable conv has 9*C_in + C_in*C_out weights, each "
                   "batch norm 2 per channel (its running statistics are buffers, not parameters), and a "
                   "block that changes the width has a 1x1 shortcut conv with its batch norm")
