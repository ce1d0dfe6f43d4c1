"""Checkers for the exercises of notebook 01 (VGG, Simonyan & Zisserman 2015).

Every true answer is computed from the library: the parameters of real
``VGGConv`` layers, the receptive field traced through a real VGG forward pass,
the parameter count of a real model. The large models are built on the "meta"
device (shapes only, no memory, no random init), so a check takes a fraction of
a second even for VGG-19's 144M parameters.
"""

from __future__ import annotations

import torch
from torch import nn

import minibones
from minibones.backbone import count_parameters
from minibones.exercises import positive_int, verdict
from minibones.models.vgg import VGG, VGGConv


def _number(answer, what: str = "the answer") -> float:
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        raise ValueError(f"{what} must be a number, got {type(answer).__name__} {answer!r}")
    return float(answer)


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
    answer = _number(answer)
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
    answer = _number(answer)
    (row,) = receptive_fields(net, 224, layers=[path])
    truth = row.size[0]
    hint = ("start from 1; a 3x3 conv adds 2 x jump, a 2x2 pool adds 1 x jump and then doubles the jump "
            "(the jump starts at 1)")
    return verdict(answer == truth, hint)


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
    answer = _number(answer)
    if 0 < answer <= 1:
        return verdict(False, "give a percentage between 0 and 100, not a fraction")
    truth = 100 * count_parameters(module) / count_parameters(net)
    return verdict(abs(answer - truth) <= 0.5, f"count the parameters of {model}.{part} and of the whole "
                                               f"{model} (count_parameters), then divide and multiply by 100")


__all__ = ["check_conv_stack_parameters", "check_layer_receptive_field", "check_parameter_share"]
