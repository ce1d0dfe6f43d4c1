"""Checkers for the exercises of notebook 04 (Xception: depthwise separable convolutions).

The truths are measured on the library's own modules: parameters are counted on
``minibones.models.xception.SeparableConv`` and on the flows of ``create_model("xception")``,
multiply-adds with PyTorch's FLOP counter on a real forward pass (a ratio of two counts is the
same in FLOPs and in multiply-adds), never taken from the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import minibones
from minibones.backbone import count_parameters
from minibones.compare import count_macs
from minibones.course.exercises.answers import as_function, as_number, positive_int, verdict
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


def check_macs_ratio(answer: float, channels: int = 728, size: int = 19) -> None:
    """Is ``answer`` (to one decimal) how many times more multiply-adds a full 3x3 conv from ``channels`` to
    ``channels`` costs than a separable one, on a ``size`` x ``size`` grid?

    Both are counted on a forward pass by :func:`minibones.compare.count_macs` (on the meta
    device: shapes only).
    """
    channels, size = positive_int(channels, "channels"), positive_int(size, "size")
    with torch.device("meta"):
        full = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        separable = SeparableConv(channels, channels)
    shape = (1, channels, size, size)
    truth = count_macs(full, shape) / count_macs(separable, shape)
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


class _ConvCalls(TorchFunctionMode):
    """Records the ``groups`` of every convolution called while active (functional or module)."""

    def __init__(self):
        super().__init__()
        self.groups: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.conv2d, torch.conv2d):
            groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
            self.groups.append(int(groups))
        return func(*args, **kwargs)


def _grouped_cases() -> list[tuple[int, int, int, int]]:
    """(in_channels, out_channels, groups, kernel): one group (an ordinary conv), a few groups
    (Inception-like branches), one group per channel (depthwise), and a depthwise conv that
    multiplies the channels."""
    return [(6, 4, 1, 3), (8, 12, 4, 3), (12, 6, 3, 1), (16, 16, 16, 3), (5, 10, 5, 5), (9, 9, 3, 5)]


def check_grouped_conv(function) -> None:
    """Does ``function(x, weight, groups)`` compute ``F.conv2d(x, weight, padding=k // 2, groups=groups)``
    from convolutions with ``groups=1`` only, one per group?

    ``x`` is (B, C_in, H, W) and ``weight`` (C_out, C_in / groups, k, k): the input channels are
    cut into ``groups`` equal slices, and output channel ``o`` reads only the slice of its group
    ``o // (C_out / groups)``. Tried with 1 group, a few, and one per channel (depthwise); a
    function that passes ``groups`` on to a convolution is refused, since writing the split is
    the point.
    """
    as_function(function, "check_grouped_conv(grouped_conv)")
    generator = torch.Generator().manual_seed(0)
    for c_in, c_out, groups, kernel in _grouped_cases():
        x = torch.randn(2, c_in, 7, 9, generator=generator)
        weight = torch.randn(c_out, c_in // groups, kernel, kernel, generator=generator)
        expected = F.conv2d(x, weight, padding=kernel // 2, groups=groups)
        calls = _ConvCalls()
        described = f"{groups} group{'s' if groups > 1 else ''}, {c_in} -> {c_out} channels, {kernel}x{kernel}"
        try:
            with calls:
                answer = function(x.clone(), weight.clone(), groups)
        except RuntimeError as error:
            return verdict(False, f"with {described} your function failed ({str(error).splitlines()[0]}): slice "
                                  f"g of the input has C_in/groups channels, and its weight is the slice g of the "
                                  "weight's output channels")
        if any(g != 1 for g in calls.groups):
            return verdict(False, f"your function called a convolution with groups={max(calls.groups)}: build it "
                                  "from convolutions with groups=1, one per slice of the channels, and concatenate")
        if not isinstance(answer, torch.Tensor):
            return verdict(False, f"return a tensor, got {type(answer).__name__}")
        if answer.shape != expected.shape:
            return verdict(False, f"with {described} on {tuple(x.shape)} yours returned {tuple(answer.shape)}, expected "
                                  f"{tuple(expected.shape)}: pad by k // 2 to keep the grid, and concatenate the "
                                  "groups' outputs along the channels")
        if not torch.allclose(answer, expected, rtol=1e-4, atol=1e-4):
            return verdict(False, f"right shape, other values with {described}: group g reads input channels "
                                  f"g * C_in/groups to (g + 1) * C_in/groups and uses the weight's *output* channels "
                                  f"g * C_out/groups to (g + 1) * C_out/groups")
    return verdict(True, "")
