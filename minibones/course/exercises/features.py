"""Checkers for notebook 07 (hierarchical features): receptive fields, the patch a unit sees,
and the size of an effective receptive field.

Every true answer is computed by the library: receptive fields by
:func:`minibones.viz.receptive_fields`, which follows a model's own forward pass (on the meta
device, so no weights are allocated), patches by :func:`minibones.viz.crop_field`, effective
sizes by :func:`minibones.viz.erf_extent`; nothing is read from a table. The hints point at
the idea (the recurrence of Araujo, Norris & Sim, Distill 2019; clipping; the centred square)
without giving the answer away. The two ``check_*_function`` checkers try the learner's own
function on many cases, so a function that only knows one answer does not pass.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

import minibones
from minibones.course.exercises.answers import as_function, as_whole_number, as_whole_numbers, number_returned, verdict
from minibones.viz import ReceptiveField, crop_field, erf_extent, receptive_fields

RECURRENCE = "each layer adds (kernel - 1) x jump, the jump being the product of the strides before it"


def _structure(model: str) -> nn.Module:
    """The model's layers without weights (meta device): building it costs nothing, even for VGG."""
    with torch.device("meta"):
        return minibones.create_model(model).eval()


def _stage_field(model: str, stage: str) -> ReceptiveField:
    net = _structure(model)
    net.stage_index(stage)  # a clear error for a stage the model does not have
    (field,) = receptive_fields(net, layers=[stage])
    return field


def check_unit_region(answer: Sequence[int], model: str = "resnet18", stage: str = "conv3_x",
                      unit: tuple[int, int] = (2, 3)) -> None:
    """Is ``answer`` the (top, left, bottom, right) input pixels that ``unit`` of ``stage`` sees?

    Why: this box is how a position of a feature map is tied back to the image (a detector's
    anchor, the patches of Zeiler & Fergus). Unit ``i`` starts at ``i * stride - padding`` and
    spans ``size`` pixels, inclusive, before clipping to the image.
    """
    top, left, bottom, right = as_whole_numbers(answer, "the box (top, left, bottom, right)", count=4)
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
    answer = as_whole_number(answer, "the receptive field (in pixels)")
    convs = []
    for layer in layers:
        kernel, stride, dilation = as_whole_numbers(layer, "each layer (kernel, stride, dilation)", count=3)
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
    answer = as_whole_number(answer, "the receptive field (in pixels)")
    truth = _stage_field(model, stage).size[0]
    if answer < truth:
        hint = (f"too small: include every conv and pooling layer on the longest path from the image to the end "
                f"of {stage} (the stem and its max pool too; a shortcut does not widen the field); {RECURRENCE}")
    else:
        hint = (f"too large: a layer's growth uses the jump *before* that layer, not after its own stride; "
                f"{RECURRENCE}")
    return verdict(answer == truth, hint)


def _patch_cases() -> list[tuple[Tensor, ReceptiveField, int, int]]:
    """Pictures whose every pixel differs, with the fields of real stages at several sizes (TF "SAME"
    padding makes Lite0's geometry depend on the size), units in the middle and at every border."""
    generator = torch.Generator().manual_seed(0)
    cases = []
    for model, stage, size in [("efficientnet_lite0", "stage2", (64, 80)), ("efficientnet_lite0", "stage3", (75, 64)),
                               ("resnet18", "conv2_x", (48, 48)), ("resnet18", "conv3_x", (96, 64))]:
        (field,) = receptive_fields(_structure(model), size, layers=[stage])
        picture = torch.rand(3, *size, generator=generator)
        rows, cols = -(-size[0] // field.stride[0]), -(-size[1] // field.stride[1])  # the map's size
        for i, j in [(rows // 2, cols // 2), (0, 0), (rows - 1, cols - 1), (0, cols // 2), (rows // 2, cols - 1)]:
            cases.append((picture, field, i, j))
    return cases


def check_receptive_patch(function) -> None:
    """Does ``function(picture, field, i, j)`` return the pixels of ``picture`` (3, H, W) that unit
    (i, j) sees, clipped to the picture, as :func:`minibones.viz.crop_field` does?

    Why: this crop is how Zeiler & Fergus show what excites a unit (section 5 of notebook 07);
    the clipping matters at the border, where a deep unit's field reaches far past the image.
    Tried on the fields of two families at several picture sizes, at the centre and at every border.
    """
    as_function(function, "check_receptive_patch(receptive_patch)")
    for picture, field, i, j in _patch_cases():
        truth = crop_field(picture, field, i, j)
        answer = function(picture.clone(), field, i, j)
        where = f"unit ({i}, {j}) of a field of size {field.size[0]}, stride {field.stride[0]}, padding {field.padding[0]} on a {tuple(picture.shape)} picture"
        if not isinstance(answer, Tensor):
            return verdict(False, f"return a tensor (3, h, w) cut out of the picture, got {type(answer).__name__}")
        if answer.shape != truth.shape:
            full = (3, field.size[0], field.size[1])
            if tuple(answer.shape) == full:
                hint = (f"for {where} the field reaches past the border: keep only the part inside the picture "
                        "(clip the rows to 0 ... H - 1 and the columns to 0 ... W - 1)")
            elif any(abs(a - t) == 1 for a, t in zip(answer.shape[1:], truth.shape[1:])):
                hint = (f"for {where} your patch is one pixel off in size: the field's first and last rows are both "
                        "included (bottom - top + 1 rows), and a Python slice stops before its end")
            else:
                hint = (f"for {where} your patch is {tuple(answer.shape)}; a unit sees `size` pixels starting at "
                        "i x stride - padding (before clipping to the picture)")
            return verdict(False, hint)
        if not torch.equal(answer, truth):
            return verdict(False, f"for {where} the size is right but the pixels come from the wrong place: the field "
                                  "starts at row i x stride - padding and column j x stride - padding")
    return verdict(True, "")


def _erf_cases() -> list[tuple[Tensor, float, tuple[int, int]]]:
    """Gaussian blobs of several widths (one stretched, one near a corner) and a square plateau,
    each normalised to sum to 1, with the masses the notebook uses."""
    cases = []
    for size, centre, sigma in [(33, (16, 16), (3.0, 3.0)), (64, (32, 31), (9.0, 5.0)), (40, (5, 34), (4.0, 4.0)),
                                (25, (12, 12), (0.4, 0.4))]:
        rows = torch.arange(size, dtype=torch.float64)[:, None]
        cols = torch.arange(size, dtype=torch.float64)[None, :]
        erf = torch.exp(-((rows - centre[0]) ** 2) / (2 * sigma[0] ** 2) - (cols - centre[1]) ** 2 / (2 * sigma[1] ** 2))
        for mass in (0.5, 0.9, 1.0):
            cases.append((erf / erf.sum(), mass, centre))
    plateau = torch.zeros(21, 21, dtype=torch.float64)
    plateau[5:16, 5:16] = 1.0
    cases.append((plateau / plateau.sum(), 0.5, (10, 10)))
    return cases


def check_erf_extent(function) -> None:
    """Does ``function(erf, mass, centre)`` give the side of the smallest square centred on ``centre``
    that holds ``mass`` of ``erf`` (an (H, W) map summing to 1), as :func:`minibones.viz.erf_extent` does?

    Why: an effective receptive field has no edge, so "how big is it" needs a rule; this is the
    one notebook 07 uses to compare trained and random networks.
    """
    as_function(function, "check_erf_extent(erf_square)")
    for erf, mass, centre in _erf_cases():
        truth = erf_extent(erf, mass, centre)
        returned = function(erf.clone(), mass, centre)
        if (answer := number_returned(returned, whole=True)) is None:
            return verdict(False, f"return the side as a whole number of pixels, got {returned!r}")
        where = f"for a {tuple(erf.shape)} field centred on {centre} and mass {mass}"
        if answer == truth:
            continue
        if answer % 2 == 0:
            hint = f"{where} you gave an even side; a square centred on a pixel has side 2 x half + 1"
        elif answer > truth:
            hint = (f"{where} your square is too large: stop at the first half-width whose square holds at least "
                    "`mass` (start from half = 0, a single pixel)")
        else:
            hint = (f"{where} your square is too small: it must hold at least `mass` of the field (>=, not >); near "
                    "the border, count only the part of the square inside the map and keep growing")
        return verdict(False, hint)
    return verdict(True, "")


__all__ = [
    "check_dilated_receptive_field", "check_erf_extent", "check_receptive_patch", "check_stage_receptive_field",
    "check_unit_region",
]
