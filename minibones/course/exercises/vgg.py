"""Checkers for the exercises of notebook 01 (VGG, Simonyan & Zisserman 2015).

Every true answer is computed from the library: the parameters of real
``VGGConv`` layers, the receptive field traced through a real VGG forward pass,
the parameter count of a real model. The large models are built on the "meta"
device (shapes only, no memory, no random init), so a check takes a fraction of
a second even for VGG-19's 144M parameters.
"""

from __future__ import annotations

import random

import torch
from torch import nn

import minibones
from minibones.backbone import count_parameters
from minibones.course.exercises.answers import as_function, as_number, as_whole_number, number_returned, positive_int, verdict
from minibones.models.vgg import VGG, VGGConv


def _meta_vgg(model: str) -> VGG:
    """A VGG of the library with shapes only (no memory, no random init)."""
    if not model.startswith("vgg"):
        raise ValueError(f"these exercises are about the VGG family; got {model!r}, choose one of "
                         f"{minibones.list_models('vgg*')}")
    with torch.device("meta"):
        return minibones.create_model(model, init_weights=False)


def check_conv_stack_parameters(answer: int, convs: int, channels: int) -> None:
    """Is ``answer`` the number of parameters (weights and biases) of ``convs`` stacked
    VGG convs, each 3x3 from ``channels`` to ``channels`` channels, without batch norm?

    Why: section 2.3 of the paper. A stack of n 3x3 convs sees a (2n+1)x(2n+1) window,
    like one big conv, but costs n * 9 C^2 weights instead of (2n+1)^2 C^2.
    """
    convs = positive_int(convs, "convs")
    channels = positive_int(channels, "channels")
    answer = as_whole_number(answer, "the number of parameters")
    stack = nn.Sequential(*[VGGConv(channels, channels, batch_norm=False) for _ in range(convs)])
    truth = count_parameters(stack)
    if answer == convs * 9 * channels * channels:
        return verdict(False, "close: each conv of VGG also has a bias, one per output channel")
    return verdict(answer == truth, f"one 3x3 conv from C to C channels has 3*3*C*C weights and C biases; "
                                    f"multiply by the number of convs ({convs})")


def _vgg_layer(net: VGG, layer: str) -> str:
    """The module path of ``layer``: a stage (``conv3``), a Caffe name (``conv3_3``) or a path."""
    stages = [info.name for info in net.feature_info]
    if layer in stages:
        return layer
    paths = [name for name, module in net.named_modules() if isinstance(module, VGGConv)]
    for path in paths:
        if path == layer or path.endswith("." + layer):
            return path
    raise ValueError(f"{net.config.name} has no layer {layer!r}; its stages are {stages} and its convs are "
                     f"{[p.rsplit('.', 1)[-1] for p in paths]}")


def check_layer_receptive_field(answer: int, model: str, layer: str) -> None:
    """Is ``answer`` the receptive field (in pixels, one side) of a unit of ``layer`` of ``model``?

    ``layer`` is a conv's name from the paper's Caffe model (``"conv3_3"``, before the pool
    that closes its stage) or a stage name (``"conv3"``, after that pool). The truth is traced
    through the model's own forward pass by :func:`minibones.viz.receptive_fields`.

    Why: VGG reaches a large field only by depth and pooling; counting it by hand is the
    best way to see how fast the 2x2 pools make it grow.
    """
    from minibones.viz import receptive_fields

    net = _meta_vgg(model)
    path = _vgg_layer(net, layer)
    answer = as_whole_number(answer, "the receptive field (in pixels)")
    (row,) = receptive_fields(net, 224, layers=[path])
    truth = row.size[0]
    hint = ("start from 1; a 3x3 conv adds 2 x jump, a 2x2 pool adds 1 x jump and then doubles the jump "
            "(the jump starts at 1)")
    return verdict(answer == truth, hint)


def _conv_cases() -> list[tuple[nn.Conv2d, int, int]]:
    """(conv, height, width) cases: VGG-16's 13 convs at the sizes they run at for a 224 x 224 image,
    then random convs with other kernels, strides, paddings and non-square inputs (meta device)."""
    cases, size = [], 224
    for stage in _meta_vgg("vgg16").stages:
        cases += [(layer.conv, size, size) for layer in stage if isinstance(layer, VGGConv)]
        size //= 2
    rng = random.Random(0)
    for _ in range(40):
        kernel, stride = rng.choice((1, 3, 5, 7)), rng.randint(1, 3)
        conv = nn.Conv2d(rng.randint(1, 64), rng.randint(1, 64), kernel, stride, padding=rng.randint(0, kernel // 2),
                         bias=rng.random() < 0.5, device="meta")
        cases.append((conv, rng.randint(kernel, 40), rng.randint(kernel, 40)))
    return cases


def check_conv_macs_function(function) -> None:
    """Does ``function(conv, height, width)`` return the multiply-adds of ``conv`` (an ``nn.Conv2d``,
    ``groups=1``) on one image of ``height`` x ``width``, as :func:`minibones.compare.count_macs`
    counts them?

    Tried on VGG-16's 13 convs at the sizes they see for a 224 x 224 image and on 40 random convs
    (kernels 1 to 7, strides 1 to 3, some padding, with and without bias), so a formula that
    forgets the stride or the padding does not pass. The convs are on the meta device: read their
    attributes (``in_channels``, ``kernel_size``, ...), there are no values to compute with.

    Why: section 3's table says that a conv weight is used once per output position. Writing
    the count is the way to see that it is the output size, not the number of weights, that
    decides the cost.
    """
    from minibones.compare import count_macs

    as_function(function, "check_conv_macs_function(conv_macs)")
    for conv, height, width in _conv_cases():
        truth = count_macs(conv, (1, conv.in_channels, height, width))
        returned = function(conv, height, width)
        if (answer := number_returned(returned)) is None:
            return verdict(False, f"return one number, got {type(returned).__name__}")
        if answer == truth:
            continue
        (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
        described = f"Conv2d({conv.in_channels}, {conv.out_channels}, kernel_size={kh}, stride={sh}, padding={ph})"
        weights = conv.in_channels * conv.out_channels * kh * kw
        if answer == 2 * truth:
            hint = "that is twice the count: FLOPs count a multiply and an add separately, a multiply-add is one"
        elif answer == weights * height * width and (sh > 1 or ph != kh // 2):
            hint = (f"on {height} x {width}, {described} has fewer output positions than input positions: "
                    "count per output position, with H_out = (H + 2 * padding - kernel) // stride + 1")
        elif conv.bias is not None and answer - truth == conv.out_channels * ((height + 2 * ph - kh) // sh + 1) * \
                ((width + 2 * pw - kw) // sw + 1):
            hint = "adding the bias is not a multiply-add: count only the products of weights and inputs"
        else:
            hint = (f"for {described} on a {height} x {width} input yours gave {answer:,}, count_macs counts "
                    f"{truth:,}: each output value is one weight-times-input per input channel and kernel position")
        return verdict(False, hint)
    return verdict(True, "")


def check_parameter_share(answer: float, model: str, part: str) -> None:
    """Is ``answer`` the percentage (0 to 100, within half a percent) of the parameters of
    ``model`` that sit in ``part`` (a module path: ``"stages"``, ``"head"``, ``"head.fc6"``)?

    Why: VGG's three fully connected layers hold most of its parameters, while its convs
    do most of its arithmetic; the share changes with depth (VGG-11 vs VGG-19).
    """
    net = _meta_vgg(model)
    try:
        module = net.get_submodule(part)
    except AttributeError:
        names = ["stages", "head"] + [f"head.{name}" for name, m in net.head.named_children()
                                       if isinstance(m, nn.Linear)]
        raise ValueError(f"{model} has no part {part!r}; try one of {names}") from None
    answer = as_number(answer, "the percentage")
    if 0 < answer <= 1:
        return verdict(False, "give a percentage between 0 and 100, not a fraction")
    truth = 100 * count_parameters(module) / count_parameters(net)
    return verdict(abs(answer - truth) <= 0.5, f"count the parameters of {model}.{part} and of the whole "
                                               f"{model} (count_parameters), then divide and multiply by 100")


__all__ = ["check_conv_macs_function", "check_conv_stack_parameters", "check_layer_receptive_field",
           "check_parameter_share"]
