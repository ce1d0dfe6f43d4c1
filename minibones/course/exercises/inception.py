"""Checkers for the exercises of notebook 03 (Inception: GoogLeNet and Inception-v3).

Every truth is read from the library's own modules (``minibones.models.inception``), so the
checkers follow the code the learner has just read, including its deviations from the papers
(GoogLeNet's "5x5" branch is a 3x3 conv, kept for weight compatibility).
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

import minibones
from minibones.backbone import count_parameters
from minibones.course.exercises.answers import as_whole_number, as_whole_numbers, verdict


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
    return verdict(as_whole_number(answer, "the width") == truth,
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
    return verdict(as_whole_number(answer, "the number of weights") == truth,
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
    answer = as_whole_numbers(answer, "the receptive field (height, width)", count=2)
    return verdict(answer == truth,
                   "start from (1, 1); at stride 1 each (kh, kw) layer adds kh - 1 to the height and kw - 1 to "
                   "the width: a 7x1 conv grows only the height")


# table 1 rows (in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) the module is tried on, and an odd one
_ROWS = [(192, 64, 96, 128, 16, 32, 32), (480, 192, 96, 208, 16, 48, 64), (7, 3, 2, 5, 1, 4, 6)]


def check_inception_module(module_class) -> None:
    """Is ``module_class(in_channels, ch1x1, ch3x3_reduce, ch3x3, ch5x5_reduce, ch5x5, pool_proj)``
    the Inception module of figure 2(b), with a true 5x5 conv in its 5x5 branch?

    The reference is the library's ``InceptionModule(..., kernel_5x5=5)``. The learner's module is
    built with the widths of inception (3a), (4a) and an odd row; it must have the same parameters
    (by name, or else in the same order), and, with the library's weights copied in, the same
    output: the four branches concatenated in the order 1x1, 3x3, 5x5, pool.
    """
    from minibones.course.same_computation import Mismatch, copy_weights
    from minibones.models.inception import InceptionModule

    if not isinstance(module_class, type) or not issubclass(module_class, nn.Module):
        raise ValueError(f"pass your class itself (an nn.Module subclass), e.g. check_inception_module(MyInception), "
                         f"got {module_class!r}")
    if issubclass(module_class, InceptionModule):
        return verdict(False, "write the module yourself from nn.Module and conv_bn, not from the library's InceptionModule")
    generator = torch.Generator().manual_seed(0)
    for row in _ROWS:
        torch.manual_seed(0)
        try:
            mine = module_class(*row)
        except NotImplementedError:
            return verdict(False, "the module is not written yet (it raised NotImplementedError)")
        reference = InceptionModule(*row, kernel_5x5=5)
        ours, theirs = count_parameters(mine), count_parameters(reference)
        if ours != theirs:
            if ours == count_parameters(InceptionModule(*row)):
                return verdict(False, "your 5x5 branch is a 3x3 conv, as in torchvision's GoogLeNet: the paper's "
                                      "branch is a 1x1 reduce, then a 5x5 conv with padding 2")
            return verdict(False, f"with the widths {row} your module has {ours:,} parameters, figure 2(b) "
                                  f"{theirs:,}: four branches, each conv a conv_bn (conv, batch norm, ReLU); "
                                  "the 3x3 and 5x5 convs read the output of their own 1x1 reduce")
        with torch.no_grad():  # batch statistics that are not 0 and 1, so that a misplaced norm shows
            for name, buffer in reference.named_buffers():
                if name.endswith("running_mean"):
                    buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
                elif name.endswith("running_var"):
                    buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # copy_weights says when it copies in order
                copy_weights(mine, reference, "your module")
        except Mismatch:
            return verdict(False, "your parameters have the right count but not the same shapes in the same order: "
                                  "build the branches in the order 1x1, 3x3, 5x5, pool, each reduce before its conv")
        x = torch.randn(2, row[0], 9, 11, generator=generator)
        with torch.no_grad():
            expected = reference.eval()(x)
            try:
                output = mine.eval()(x)
            except RuntimeError as error:
                first_line = str(error).splitlines()[0]
                return verdict(False, f"your module failed on an input of shape {tuple(x.shape)} ({first_line}): "
                                      "pad every conv and the pool so that every branch keeps the grid")
        if not isinstance(output, torch.Tensor) or output.shape != expected.shape:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            return verdict(False, f"for an input of shape {tuple(x.shape)} your module returned {shape}, expected "
                                  f"{tuple(expected.shape)}: pad every conv and the pool so that the grid is kept, "
                                  "and concatenate the branches along the channels (dim 1)")
        if not torch.allclose(output, expected, atol=1e-5):
            return verdict(False, "the right shapes but other values: concatenate in the order 1x1, 3x3, 5x5, pool; "
                                  "the pool branch is a 3x3 max pool with stride 1 and padding 1, then its 1x1 conv")
    return verdict(True, "")
