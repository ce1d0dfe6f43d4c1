"""Checkers for notebook 07 (hierarchical features): receptive fields.

Every true answer is computed by :func:`minibones.viz.receptive_fields`, which follows a
model's own forward pass (on the meta device, so no weights are allocated); nothing is
read from a table. The hints point at the recurrence of Araujo, Norris & Sim (Distill
2019) without giving the number away.
"""

from __future__ import annotations

from numbers import Integral
from typing import Sequence

import torch
from torch import nn

import minibones
from minibones.exercises import verdict
from minibones.viz import ReceptiveField, receptive_fields

RECURRENCE = "each layer adds (kernel - 1) x jump, the jump being the product of the strides before it"


def _structure(model: str) -> nn.Module:
    """The model's layers without weights (meta device): building it costs nothing, even for VGG."""
    with torch.device("meta"):
        return minibones.create_model(model).eval()


def _stage_field(model: str, stage: str) -> ReceptiveField:
    net = _structure(model)
    names = [info.name for info in net.feature_info]
    if stage not in names:
        raise ValueError(f"{model} has no stage {stage!r}; its stages are {names}")
    (field,) = receptive_fields(net, layers=[stage])
    return field


def _integers(answer, count: int, what: str) -> tuple[int, ...]:
    if not isinstance(answer, (tuple, list)) or len(answer) != count or not all(
        isinstance(v, Integral) and not isinstance(v, bool) for v in answer
    ):
        raise ValueError(f"give {what} as a tuple of {count} integers, got {answer!r}")
    return tuple(int(v) for v in answer)


def _integer(answer) -> int:
    if isinstance(answer, bool) or not isinstance(answer, Integral):
        raise ValueError(f"give the receptive field as one integer (pixels), got {answer!r}")
    return int(answer)


def check_unit_region(answer: Sequence[int], model: str = "resnet18", stage: str = "conv3_x",
                      unit: tuple[int, int] = (2, 3)) -> None:
    """Is ``answer`` the (top, left, bottom, right) input pixels that ``unit`` of ``stage`` sees?

    Why: this box is how a position of a feature map is tied back to the image (a detector's
    anchor, the patches of Zeiler & Fergus). Unit ``i`` starts at ``i * stride - padding`` and
    spans ``size`` pixels, inclusive, before clipping to the image.
    """
    top, left, bottom, right = _integers(answer, 4, "(top, left, bottom, right)")
    field = _stage_field(model, stage)
    truth = field.region(*unit)
    if (bottom - top + 1, right - left + 1) != tuple(field.size):
        return verdict(False, f"the box must be exactly as tall and wide as the receptive field of {stage} "
                              f"(bottom - top + 1 pixels, inclusive): find that size first; {RECURRENCE}")
    if (top, left) != truth[:2]:
        return verdict(False, "the size is right; now place the box: unit (i, j) starts at row i x stride - padding "
                              "and column j x stride - padding, with the effective stride and padding of the stage")
    return verdict(True, "")


def check_dilated_receptive_field(answer: int, layers: Sequence[tuple[int, int, int]]) -> None:
    """Is ``answer`` the receptive field of a stack of ``(kernel, stride, dilation)`` convolutions?

    Why: dilation (Yu & Koltun 2016; DeepLab, Chen et al. 2017) widens the field without
    striding, so a segmentation network keeps its resolution. A dilated kernel spans
    ``d (k - 1) + 1`` pixels; the truth comes from running the stack through the library's tracer.
    """
    answer = _integer(answer)
    convs = []
    for layer in layers:
        kernel, stride, dilation = _integers(layer, 3, "each layer as (kernel, stride, dilation)")
        if min(kernel, stride, dilation) < 1:
            raise ValueError(f"kernel, stride and dilation must be positive, got {layer!r}")
        convs.append(nn.Conv2d(3, 3, kernel, stride, padding=dilation * (kernel - 1) // 2, dilation=dilation))
    if not convs:
        raise ValueError("give at least one layer")
    (field,) = receptive_fields(nn.Sequential(*convs), input_size=64)
    truth = field.size[0]
    hint = (f"a kernel of size k with dilation d spans d(k - 1) + 1 pixels; {RECURRENCE}")
    return verdict(answer == truth, hint)


def check_stage_receptive_field(answer: int, model: str = "resnet34", stage: str = "conv3_x") -> None:
    """Is ``answer`` the analytic receptive field (in pixels) of the units of ``stage`` of ``model``?

    Why: walking the layers by hand is the only way to see where a field grows fast (after
    the strides) and where it barely grows (the first layers).
    """
    answer = _integer(answer)
    truth = _stage_field(model, stage).size[0]
    if answer < truth:
        hint = (f"too small: include every conv and pooling layer on the longest path from the image to the end "
                f"of {stage} (the stem and its max pool too; a shortcut does not widen the field); {RECURRENCE}")
    else:
        hint = (f"too large: a layer's growth uses the jump *before* that layer, not after its own stride; "
                f"{RECURRENCE}")
    return verdict(answer == truth, hint)


__all__ = ["check_dilated_receptive_field", "check_stage_receptive_field", "check_unit_region"]
