"""Checkers for the exercises of notebook 03 (Inception: GoogLeNet and Inception-v3).

Every truth is read from the library's own modules (``minibones.models.inception``), so the
checkers follow the code the learner has just read, including its deviations from the papers
(GoogLeNet's "5x5" branch is a 3x3 conv, kept for weight compatibility).
"""

from __future__ import annotations

import torch
from torch import nn

import minibones
from minibones.exercises import verdict


def _module(model: str, module: str) -> nn.Module:
    """The block called ``module`` (a top-level name such as ``inception4c`` or ``mixed6b``) of ``model``."""
    if model not in ("googlenet", "inception_v3"):
        raise ValueError(f"model must be 'googlenet' or 'inception_v3', got {model!r}")
    with torch.device("meta"):  # only shapes are needed: no memory, no computation
        net = minibones.create_model(model)
    blocks = [name for name, _ in net.named_children() if name.startswith(("inception", "mixed"))]
    if module not in blocks:
        raise ValueError(f"{model} has no Inception block {module!r}; its blocks are {blocks}")
    return net.get_submodule(module)


def _as_int(answer, what: str) -> int:
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) or int(answer) != answer:
        raise ValueError(f"give {what} as a whole number, got {answer!r}")
    return int(answer)


def check_module_width(answer: int, module: str = "inception4c", model: str = "googlenet") -> None:
    """Is ``answer`` the number of channels that block ``module`` of ``model`` outputs?

    The branches are concatenated along the channels, so the width is the sum of the branches'
    *output* widths; the 1x1 "reduce" widths never reach the output, and a pooling branch without
    a projection (a grid reduction's) passes its input width through. The truth is measured by
    running the block on a small input (meta device: shapes only), not read from a table.
    """
    block = _module(model, module)
    in_channels = next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels
    truth = block(torch.zeros(1, in_channels, 9, 9, device="meta")).shape[1]
    return verdict(_as_int(answer, "the width") == truth,
                   "add up what each branch outputs (the out_channels of its last conv); the widths of the 1x1 "
                   "reduce layers stay inside the branches, and a pooling branch with no conv after it keeps "
                   "the width of the block's input")


def check_bottleneck_saving(answer: int, module: str = "inception4e", branch: str = "branch3x3") -> None:
    """Is ``answer`` the number of conv weights the 1x1 reduce saves in ``branch`` of GoogLeNet's ``module``?

    Compared: the branch as built (1x1 reduce from the module's input, then the k x k conv) and a
    single k x k conv straight from the module's input to the same output width. Conv weights only
    (the convs have no bias; batch norm is left out). This is the saving of figure 2(b) over 2(a).
    """
    if branch not in ("branch3x3", "branch5x5"):
        raise ValueError(f"branch must be 'branch3x3' or 'branch5x5' (the two with a 1x1 reduce), got {branch!r}")
    block = _module("googlenet", module)
    reduce, conv = block.get_submodule(branch).reduce.conv, block.get_submodule(branch).conv.conv
    with_reduce = reduce.weight.numel() + conv.weight.numel()
    kh, kw = conv.kernel_size
    without = reduce.in_channels * conv.out_channels * kh * kw
    truth = without - with_reduce
    return verdict(_as_int(answer, "the number of weights") == truth,
                   f"a Conv2d(a, b, k) has a*b*k*k weights: count the single {kh}x{kw} conv from "
                   f"{module}'s input to the branch's output, then subtract the reduce and the conv "
                   "after it (read the widths and the kernel size from the module, not from the paper)")


def _receptive_field(layers: list[nn.Module]) -> tuple[int, int]:
    """(height, width) of the window one output position sees, for layers applied in order."""
    size, jump = [1, 1], [1, 1]
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            kernel, stride, dilation = layer.kernel_size, layer.stride, layer.dilation
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
            kernel, stride, dilation = pair(layer.kernel_size), pair(layer.stride), (1, 1)
            if isinstance(layer, nn.MaxPool2d):
                dilation = pair(layer.dilation)
        else:
            continue
        for d in range(2):
            size[d] += (kernel[d] - 1) * dilation[d] * jump[d]
            jump[d] *= stride[d]
    return tuple(size)


def check_branch_receptive_field(
    answer: tuple[int, int], module: str = "mixed6b", branch: str = "branch7x7dbl", model: str = "inception_v3"
) -> None:
    """Is ``answer`` the (height, width) of the window of the module's input that one output
    position of ``branch`` sees?

    Computed by walking the branch's convs and pools in order: at stride 1 a (kh, kw) layer adds
    kh - 1 rows and kw - 1 columns. Factorized branches (1x7 then 7x1) show that an asymmetric pair
    sees the same square window as the full kernel.
    """
    block = _module(model, module)
    branches = [name for name, _ in block.named_children()]
    if branch not in branches:
        raise ValueError(f"{model}.{module} has no branch {branch!r}; its branches are {branches}")
    layers = [m for m in block.get_submodule(branch).modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))]
    truth = _receptive_field(layers)
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise ValueError(f"give the receptive field as (height, width), got {answer!r}")
    answer = tuple(_as_int(a, "each size") for a in answer)
    return verdict(answer == truth,
                   "start from (1, 1); at stride 1 each (kh, kw) layer adds kh - 1 to the height and kw - 1 to "
                   "the width: a 7x1 conv grows only the height")
