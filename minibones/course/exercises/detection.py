"""Checkers for notebook 11 (detection: FCOS on any backbone).

Every truth comes from the library: centre-ness from
:func:`~minibones.detection.centerness_target`, the levels' size ranges from
:meth:`~minibones.detection.Locations.size_ranges`, the number of locations from a
:class:`~minibones.neck.PyramidBackbone` run on the meta device (shapes only), and IoU from
``torchvision.ops.box_iou``. The two function checkers try the learner's code on many cases,
so a function that knows one answer does not pass.
"""

from __future__ import annotations

import torch

import minibones
from minibones.course.exercises.answers import as_function, as_number, number_returned, verdict


def check_centerness_function(function) -> None:
    """Does ``function(l, t, r, b)`` give FCOS's centre-ness target (equation 3) for tensors of
    distances to the four sides? Tried on 500 random locations, the exact centre of a box
    (centre-ness 1) and locations next to a side."""
    from minibones.detection import centerness_target

    as_function(function, "check_centerness_function(centerness)")
    generator = torch.Generator().manual_seed(0)
    ltrb = torch.rand(500, 4, generator=generator) * 60 + 0.5
    ltrb = torch.cat([ltrb, torch.tensor([[10.0, 10.0, 10.0, 10.0], [0.5, 20.0, 39.5, 20.0], [7.0, 1.0, 7.0, 30.0]])])
    truth = centerness_target(ltrb)
    try:
        answer = function(*ltrb.unbind(dim=1))
    except Exception as error:  # the learner's code: say what went wrong, in one line
        return verdict(False, f"your function raised {type(error).__name__}: {error}; it receives four tensors "
                              "l, t, r, b of shape (N,) and returns one tensor of shape (N,)")
    if not isinstance(answer, torch.Tensor) or answer.shape != truth.shape:
        return verdict(False, f"return one tensor of shape {tuple(truth.shape)} (one value per location), "
                              f"got {type(answer).__name__} {tuple(getattr(answer, 'shape', ()))}")
    answer = answer.float()
    if torch.allclose(answer, truth, atol=1e-5):
        return verdict(True, "")
    if torch.allclose(answer, truth**2, atol=1e-5):
        return verdict(False, "close: equation 3 takes the square root of the product")
    if answer[-3] != 1:
        return verdict(False, f"at the centre of a box (l = r, t = b) centre-ness is 1, yours gives {float(answer[-3]):.3f}")
    return verdict(False, "multiply min(l, r) / max(l, r) by min(t, b) / max(t, b), then take the square root "
                          "(torch.minimum and torch.maximum work element by element)")


def check_level_function(function) -> None:
    """Does ``function(reach, strides)`` give the pyramid level (0 = finest) that takes an object
    whose farthest side is ``reach`` pixels from the location, for a pyramid at ``strides``
    (finest first)? The level of stride s takes 4s < reach < 8s, the finest everything below,
    the coarsest everything above (FCOS, section 3.2). Tried on several pyramids; reaches that
    fall exactly on a boundary, which FCOS gives to no level, are not asked."""
    from minibones.detection import Locations

    as_function(function, "check_level_function(level_for)")
    generator = torch.Generator().manual_seed(0)
    for strides in ([8, 16, 32, 64, 128], [4, 8, 16, 32], [8, 16, 32], [16, 32, 64, 128]):
        locations = Locations(torch.zeros(len(strides), 2), torch.tensor(strides, dtype=torch.float32), [1] * len(strides))
        lower, upper = locations.size_ranges()
        reaches = torch.cat([torch.rand(40, generator=generator) * 12 * strides[-1],
                             torch.tensor([1.0, 4.0 * strides[-1] + 1])])
        for reach in reaches.tolist():
            if reach in lower.tolist() or reach in upper.tolist():
                continue
            truth = int(((reach > lower) & (reach < upper)).nonzero()[0])
            try:
                answer = function(reach, list(strides))
            except Exception as error:
                return verdict(False, f"your function raised {type(error).__name__}: {error}; it receives a reach "
                                      "(a float, in pixels) and a list of strides, and returns a level index")
            if number_returned(answer, whole=True) != truth:
                return verdict(False, f"with strides {strides} an object reaching {reach:.1f} pixels goes to level {truth}, "
                                      f"yours gave {answer!r}; the level of stride s takes reaches between 4s and 8s, "
                                      "and the first and last levels take everything below and above")
    return verdict(True, "")


def check_num_locations(answer: int, backbone: str = "efficientnet_lite0", image_size: int = 64,
                        num_levels: int = 4) -> None:
    """Is ``answer`` the number of locations (summed over the pyramid's levels) at which FCOS on
    ``backbone`` makes a prediction for one ``image_size`` x ``image_size`` image?

    Why it matters: every location predicts K class scores, four distances and a centre-ness,
    and almost all of them are background: the focal loss exists for this imbalance."""
    from minibones.neck import PyramidBackbone

    answer = as_number(answer, "the number of locations")
    if not isinstance(backbone, str):
        raise ValueError(f"backbone must be a model name such as 'resnet18', got {type(backbone).__name__}")
    with torch.device("meta"):
        pyramid = PyramidBackbone(minibones.create_model(backbone), 32, num_levels).eval()
        maps = pyramid(torch.empty(1, 3, image_size, image_size))
    sizes = [m.shape[-2] * m.shape[-1] for m in maps]
    truth = sum(sizes)
    if answer == sizes[0]:
        return verdict(False, "that is the finest level alone: add the locations of every level")
    return verdict(answer == truth, f"the levels sit at strides {pyramid.strides}: each has "
                                    "(image_size / stride) squared locations; add them up")


def check_iou(answer: float, box_a: tuple[float, float, float, float], box_b: tuple[float, float, float, float]) -> None:
    """Is ``answer`` the intersection over union of two boxes (x0, y0, x1, y1)? Within 0.005.

    Why it matters: a detection counts as a hit when its IoU with a true box exceeds a
    threshold: 0.5 for mAP@0.5, ten thresholds from 0.5 to 0.95 for COCO's mAP."""
    from torchvision.ops import box_iou

    answer = as_number(answer, "the IoU")
    boxes = []
    for box in (box_a, box_b):
        if len(box) != 4 or not box[0] < box[2] or not box[1] < box[3]:
            raise ValueError(f"a box is (x0, y0, x1, y1) with x0 < x1 and y0 < y1, got {box!r}")
        boxes.append([float(v) for v in box])
    truth = float(box_iou(torch.tensor(boxes[:1]), torch.tensor(boxes[1:]))[0, 0])
    if answer > 1:
        return verdict(False, "give a fraction between 0 and 1, not a percentage")
    return verdict(abs(answer - truth) <= 0.005, "intersection: the overlap of the x ranges times the overlap of the "
                                                 "y ranges; union: the two areas added, minus the intersection")
