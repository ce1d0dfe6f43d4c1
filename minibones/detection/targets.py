"""Where each location of the pyramid looks, and what it should predict (FCOS, section 3.1 and 3.2).

FCOS has no anchor boxes: every position (x, y) of every pyramid level is a *location*,
a point in the image, and a location inside an object's box regresses the distances
from itself to the box's four sides:

    l* = x - x0,   t* = y - y0,   r* = x1 - x,   b* = y1 - y          (paper, equation 1)

Which locations learn which box is decided here, with the three rules of the paper and
torchvision: the location must lie inside the box, near its centre (*centre sampling*),
and on the level whose size range holds max(l*, t*, r*, b*); when several boxes remain,
the smallest one wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Locations:
    """Every location of a pyramid, all levels concatenated finest first (N = sum of h_i * w_i).

    ``points``: (N, 2) the (x, y) in image pixels each location looks at; ``strides``: (N,)
    the stride of its level, which is also the unit its distances are predicted in;
    ``counts``: how many locations each level has (to split the N back into levels).
    """

    points: Tensor  # (N, 2)
    strides: Tensor  # (N,)
    counts: list[int]

    @property
    def level(self) -> Tensor:
        """(N,) the index of each location's level (0 = finest)."""
        return torch.repeat_interleave(torch.arange(len(self.counts), device=self.points.device),
                                       torch.tensor(self.counts, device=self.points.device))

    def size_ranges(self, reach_in_strides: tuple[float, float] = (4.0, 8.0)) -> tuple[Tensor, Tensor]:
        """(N,) lower and (N,) upper bound of max(l*, t*, r*, b*) for each location's level.

        The paper sets m_2..m_7 = 0, 64, 128, 256, 512, inf for P3..P7 (strides 8..128): level
        i takes the objects with m_{i-1} < max(l*, t*, r*, b*) < m_i, that is 4 s_i to 8 s_i,
        with the finest level open downwards and the coarsest upwards. Written with the
        strides, the same rule fits any pyramid (the course's necks start at stride 4);
        ``reach_in_strides`` = (4, 8) is the paper's, chosen for images of 800 pixels.
        """
        lower, upper = reach_in_strides[0] * self.strides, reach_in_strides[1] * self.strides
        lower[: self.counts[0]] = 0.0
        upper[-self.counts[-1]:] = math.inf
        return lower, upper

    @classmethod
    def from_anchors(cls, anchors: Tensor, counts: list[int]) -> "Locations":
        """The locations torchvision's FCOS uses: its anchor boxes' centres, and their widths as
        strides (its anchor generator makes one square anchor per position, as wide as the stride)."""
        return cls((anchors[:, :2] + anchors[:, 2:]) / 2, anchors[:, 2] - anchors[:, 0], list(counts))


def pyramid_locations(pyramid: list[Tensor], strides: list[int]) -> Locations:
    """The locations of a pyramid of (B, C, h_i, w_i) maps at ``strides``.

    Paper, section 3.1: position (x, y) of a level at stride s looks at image pixel
    (floor(s/2) + x s, floor(s/2) + y s), "near the centre of the receptive field" of x, y.
    Row by row, x fastest, the order of a (h, w) map flattened (and of the head's outputs).
    """
    if len(pyramid) != len(strides):
        raise ValueError(f"got {len(pyramid)} maps and {len(strides)} strides; give one stride per level")
    points, per_location_strides, counts = [], [], []
    for fmap, stride in zip(pyramid, strides):
        h, w = fmap.shape[-2:]
        ys = torch.arange(h, device=fmap.device, dtype=torch.float32) * stride + stride // 2
        xs = torch.arange(w, device=fmap.device, dtype=torch.float32) * stride + stride // 2
        y, x = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
        points.append(torch.stack([x.reshape(-1), y.reshape(-1)], dim=1))  # (h w, 2)
        per_location_strides.append(torch.full((h * w,), float(stride), device=fmap.device))
        counts.append(h * w)
    return Locations(torch.cat(points), torch.cat(per_location_strides), counts)


def distances_to_sides(points: Tensor, boxes: Tensor) -> Tensor:
    """l*, t*, r*, b* (equation 1) from points (..., 2) to the sides of boxes (..., 4) given as
    (x0, y0, x1, y1); the leading dimensions broadcast: (N, 1, 2) and (1, M, 4) give (N, M, 4)."""
    x, y = points.unbind(dim=-1)
    x0, y0, x1, y1 = boxes.unbind(dim=-1)
    return torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=-1)


def decode_boxes(distances: Tensor, points: Tensor, strides: Tensor) -> Tensor:
    """Boxes (x0, y0, x1, y1) from distances (l, t, r, b) predicted in units of the stride: (N, 4)."""
    d = distances * strides[:, None]  # back to pixels: the head predicts l/s, t/s, r/s, b/s
    x, y = points[:, 0], points[:, 1]
    return torch.stack([x - d[:, 0], y - d[:, 1], x + d[:, 2], y + d[:, 3]], dim=1)


def centerness_target(ltrb: Tensor) -> Tensor:
    """centerness* = sqrt( min(l*, r*) / max(l*, r*) x min(t*, b*) / max(t*, b*) )   (equation 3).

    1 at the centre of the box, falling to 0 at its sides: at test time it down-weights the
    "low-quality bounding boxes predicted by locations far away from the center of an object".
    """
    left_right, top_bottom = ltrb[..., [0, 2]], ltrb[..., [1, 3]]
    return torch.sqrt((left_right.min(dim=-1).values / left_right.max(dim=-1).values)
                      * (top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values))


def assign_targets(locations: Locations, boxes: Tensor, center_sampling_radius: float = 1.5,
                   reach_in_strides: tuple[float, float] = (4.0, 8.0)) -> Tensor:
    """For each location, the index of the box it learns, or -1 for background: (N,) int64.

    ``boxes``: (M, 4) one image's boxes (x0, y0, x1, y1) in pixels. A location is positive
    for a box when (all three must hold):

    * it lies inside the box: min(l*, t*, r*, b*) > 0 (section 3.1);
    * *centre sampling* (FCOS's later version, and torchvision): it lies within
      ``center_sampling_radius`` strides of the box's centre, in both x and y, so the edges of
      big boxes, where the features see mostly background, do not have to fire;
    * its level takes objects of this size: max(l*, t*, r*, b*) within the level's range
      (section 3.2, :meth:`Locations.size_ranges`, with ``reach_in_strides``), so small boxes
      go to fine levels and big ones to coarse levels, and most overlapping boxes end up on
      different levels.

    "If a location still is assigned to more than one ground-truth box, we simply choose
    the ground-truth box with minimal area as its target" (section 3.2).
    """
    n = len(locations.points)
    if boxes.numel() == 0:
        return torch.full((n,), -1, dtype=torch.int64, device=boxes.device)
    stride = locations.strides[:, None]  # (N, 1)
    box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (M, 2)
    offsets = (locations.points[:, None, :] - box_centres[None]).abs()  # (N, M, 2): |dx|, |dy| to each centre
    near_centre = offsets.max(dim=2).values < center_sampling_radius * stride
    ltrb = distances_to_sides(locations.points[:, None], boxes[None])  # (N, M, 4)
    inside = ltrb.min(dim=2).values > 0
    lower, upper = locations.size_ranges(reach_in_strides)
    reach = ltrb.max(dim=2).values  # (N, M): how far the box extends from the location
    right_level = (reach > lower[:, None]) & (reach < upper[:, None])
    candidate = near_centre & inside & right_level  # (N, M)

    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (M,)
    areas = torch.where(candidate, areas[None], torch.full_like(candidate, math.inf, dtype=areas.dtype))
    smallest, matched = areas.min(dim=1)  # (N,): the smallest candidate box of each location
    matched[torch.isinf(smallest)] = -1
    return matched
