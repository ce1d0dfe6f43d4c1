"""Checkers for notebook 10 (backbone, neck, head).

Every truth is computed from the library: pyramid shapes and strides from a
:class:`~minibones.neck.PyramidBackbone` built on the meta device (shapes only, no
weights, nothing computed), parameter counts from a real :class:`~minibones.neck.FPN`,
mean IoU from :func:`~minibones.neck.mean_iou`. The hints point at the reasoning.
"""

from __future__ import annotations

import torch

import minibones
from minibones.backbone import count_parameters
from minibones.course.exercises.answers import (as_function, as_number, as_whole_number, as_whole_numbers, number_returned,
                                        verdict)


def _pyramid(backbone: str, out_channels: int = 256):
    """The backbone with the neck that suits it, on the meta device (shapes only)."""
    from minibones.neck import PyramidBackbone

    if not isinstance(backbone, str):
        raise ValueError(f"backbone must be a model name such as 'resnet50', got {type(backbone).__name__}")
    with torch.device("meta"):
        return PyramidBackbone(minibones.create_model(backbone), out_channels).eval()


def check_pyramid_shape(answer: tuple[int, int, int], backbone: str = "resnet50", level: int = 0,
                        image_size: tuple[int, int] = (320, 480), out_channels: int = 256) -> None:
    """Is ``answer`` the (C, H, W) of pyramid level ``level`` (0 = finest) for an image of ``image_size``?

    Why it matters: a neck's output is what every head is designed against; its width is
    the neck's choice, its resolution the backbone's stride at that level.
    """
    answer = as_whole_numbers(answer, "(channels, height, width)", count=3)
    pyramid = _pyramid(backbone, out_channels)
    if not 0 <= level < len(pyramid.strides):
        raise ValueError(f"{backbone}'s pyramid has levels 0 to {len(pyramid.strides) - 1}, got {level}")
    with torch.device("meta"):
        maps = pyramid(torch.empty(1, 3, *image_size))
    truth = tuple(maps[level].shape[1:])
    if answer[0] != truth[0]:
        return verdict(False, "every level of an FPN has the same width: the neck's out_channels, not the backbone's")
    return verdict(answer == truth, f"level {level} sits at stride {pyramid.strides[level]} (pyramid.strides): "
                   "divide height and width by it, rounding up as the stride-2 layers do")


def check_fpn_parameters(answer: int, in_channels: tuple[int, ...] = (64, 128, 256, 512), out_channels: int = 64) -> None:
    """Is ``answer`` the number of parameters of ``FPN(in_channels, out_channels)``?

    Why it matters: the neck's cost grows with the backbone's widths only through the
    1x1 laterals; the 3x3 output convs cost the same for every backbone.
    """
    from minibones.neck import FPN

    answer = as_whole_number(answer, "the number of parameters")
    in_channels = as_whole_numbers(in_channels, "in_channels")
    truth = count_parameters(FPN(list(in_channels), out_channels))
    return verdict(answer == truth, "per level: a 1x1 lateral conv c -> d with bias (c*d + d) and a 3x3 output conv "
                   "d -> d with bias (9*d*d + d); add them up over the levels")


def check_pyramid_strides(answer: list[int], backbone: str = "vit_b_32") -> None:
    """Are ``answer`` the strides of the pyramid levels the neck gives ``backbone``, finest first?

    Why it matters: a CNN's pyramid is read off its stages (the last stage at each
    stride); a plain ViT has a single stride, and ViTDet's simple pyramid builds levels
    from a quarter of it to twice it.
    """
    answer = as_whole_numbers(answer, "the strides")
    truth = tuple(_pyramid(backbone).strides)
    return verdict(answer == truth, f"look at {backbone}'s feature_info: if its stages have several strides the FPN reads "
                   "the last stage at each of the four coarsest; if they all share one stride s, the levels are "
                   "s/4, s/2, s and 2s")


def check_mean_iou(answer: float, predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> None:
    """Is ``answer`` the mean IoU of the label map ``predicted`` against ``target``? Within 0.005.

    Why it matters: pixel accuracy rewards predicting the most frequent class everywhere;
    mean IoU gives every class the same weight, so a model that never finds the shapes
    scores poorly.
    """
    from minibones.neck import mean_iou

    answer = as_number(answer, "the mean IoU (between 0 and 1)")
    if not isinstance(predicted, torch.Tensor) or not isinstance(target, torch.Tensor) or predicted.shape != target.shape:
        raise ValueError("predicted and target must be integer tensors of the same shape")
    if predicted.ndim == 2:  # a single (H, W) map
        predicted, target = predicted.unsqueeze(0), target.unsqueeze(0)
    logits = torch.nn.functional.one_hot(predicted.long(), num_classes).movedim(-1, 1).float()  # (B, classes, H, W)
    truth = mean_iou(logits, target.long(), num_classes)
    if answer > 1:
        return verdict(False, "give a fraction between 0 and 1, not a percentage")
    return verdict(abs(answer - truth) <= 0.005, "for each class: pixels where both say it, divided by pixels where "
                   "either says it; then average over the classes that appear in either map")


def check_mean_iou_function(function, num_classes: int = 4) -> None:
    """Does ``function(predicted, truth, num_classes)`` compute the library's mean IoU on label maps?

    Tried on 50 random pairs of (H, W) maps of random sizes, some with a class missing from one
    map or from both, so a function that averages over all ``num_classes`` (counting absent classes
    as 0 or 1) does not pass.
    """
    from minibones.neck import mean_iou

    as_function(function, "check_mean_iou_function(my_mean_iou)")
    generator = torch.Generator().manual_seed(0)
    for case in range(50):
        height, width = (int(v) for v in torch.randint(2, 9, (2,), generator=generator))
        present = num_classes - case % 3  # in some cases the last one or two classes appear nowhere
        predicted = torch.randint(0, present, (height, width), generator=generator)
        truth = torch.randint(0, present, (height, width), generator=generator)
        if case % 5 == 0:
            truth[truth == 1] = 0  # class 1 only in the prediction
        logits = torch.nn.functional.one_hot(predicted, num_classes).movedim(-1, 0)[None].float()
        expected = mean_iou(logits, truth[None], num_classes)
        returned = function(predicted.clone(), truth.clone(), num_classes)
        if (answer := number_returned(returned)) is None:
            return verdict(False, f"return one number (a fraction between 0 and 1), got {type(returned).__name__}")
        if abs(answer - expected) > 1e-6:
            hint = ("give a fraction between 0 and 1, not a percentage" if answer > 1 else
                    f"on a {height} x {width} pair your function gave {answer:.4f}, the library {expected:.4f}: "
                    "average only over the classes that appear in the prediction or the truth")
            return verdict(False, hint)
    return verdict(True, "")
