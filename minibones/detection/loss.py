"""FCOS's training loss (paper, equation 2, plus the centre-ness term of section 3.3).

    L = 1/N_pos sum_xy L_cls(p_xy, c*_xy)  +  lambda/N_pos sum_xy 1{c*_xy > 0} L_reg(t_xy, t*_xy)
        + 1/N_pos sum_xy 1{c*_xy > 0} BCE(centerness_xy, centerness*_xy)

with lambda = 1 and N_pos the number of positive locations. L_cls is the focal loss, L_reg
the IoU loss of UnitBox in the paper and the generalised IoU loss in FCOS's later version
and in torchvision (followed here: it still pulls boxes that do not overlap at all).
Both are written out below and checked against ``torchvision.ops`` by the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from minibones.detection.head import HeadOutputs
from minibones.detection.targets import Locations, assign_targets, centerness_target, decode_boxes, distances_to_sides


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)  (Lin et al., ICCV 2017, equation 5), elementwise.

    p_t is the probability given to the right answer. The factor (1 - p_t)^gamma all but
    silences the easy background locations, tens of thousands per image, so the few
    positives are heard; alpha_t (alpha for positives, 1 - alpha for negatives) rebalances.
    """
    p = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # -log(p_t), stable
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * cross_entropy


def giou_loss(boxes: Tensor, target_boxes: Tensor, eps: float = 1e-7) -> Tensor:
    """1 - GIoU for pairs of boxes (x0, y0, x1, y1): (N, 4), (N, 4) -> (N,).

    GIoU = IoU - |C \\ (A u B)| / |C| with C the smallest box enclosing both (Rezatofighi et
    al., CVPR 2019, algorithm 1): equal to IoU when the boxes fit, and still informative,
    down to -1, when they do not overlap at all.
    """
    x0, y0, x1, y1 = boxes.unbind(dim=-1)
    gx0, gy0, gx1, gy1 = target_boxes.unbind(dim=-1)
    overlap_w = (torch.min(x1, gx1) - torch.max(x0, gx0)).clamp(min=0)
    overlap_h = (torch.min(y1, gy1) - torch.max(y0, gy0)).clamp(min=0)
    intersection = overlap_w * overlap_h
    union = (x1 - x0) * (y1 - y0) + (gx1 - gx0) * (gy1 - gy0) - intersection
    iou = intersection / (union + eps)
    enclosing = (torch.max(x1, gx1) - torch.min(x0, gx0)) * (torch.max(y1, gy1) - torch.min(y0, gy0))
    return 1 - (iou - (enclosing - union) / (enclosing + eps))


def fcos_loss(outputs: HeadOutputs, locations: Locations, targets: list[dict[str, Tensor]],
              center_sampling_radius: float = 1.5, reach_in_strides: tuple[float, float] = (4.0, 8.0)) -> dict[str, Tensor]:
    """The three terms of the loss for a batch: ``targets[i]`` holds image i's ``boxes`` (M_i, 4)
    in pixels and ``labels`` (M_i,) indexing the class logits; the two settings go to
    :func:`~minibones.detection.targets.assign_targets`.

    Returns ``classification``, ``bbox_regression`` and ``bbox_ctrness`` (torchvision's keys),
    each summed over the batch and divided by the number of positive locations.
    """
    class_logits = torch.cat(outputs.class_logits, dim=1)  # (B, N, K)
    box_regression = torch.cat(outputs.box_regression, dim=1)  # (B, N, 4)
    centerness = torch.cat(outputs.centerness, dim=1)  # (B, N)
    if len(targets) != len(class_logits):
        raise ValueError(f"got {len(targets)} targets for a batch of {len(class_logits)} images")

    class_targets = torch.zeros_like(class_logits)  # (B, N, K): one-hot at positives, all zero elsewhere
    positive = torch.zeros(class_logits.shape[:2], dtype=torch.bool, device=class_logits.device)  # (B, N)
    matched_boxes = torch.zeros_like(box_regression)  # (B, N, 4): the box each positive learns
    for i, target in enumerate(targets):
        # (N,): the box each location learns, -1 for background
        matched = assign_targets(locations, target["boxes"], center_sampling_radius, reach_in_strides)
        positive[i] = matched >= 0
        matched_boxes[i, positive[i]] = target["boxes"][matched[positive[i]]].to(matched_boxes.dtype)
        class_targets[i, positive[i], target["labels"][matched[positive[i]]]] = 1.0
    num_positive = max(1, int(positive.sum()))

    # classification: every location and class, positives and negatives alike
    loss_cls = sigmoid_focal_loss(class_logits, class_targets).sum()

    # regression: decode the predicted distances into boxes and compare with the matched ones
    where, which = positive.nonzero(as_tuple=True)  # image and location of every positive
    points, strides = locations.points[which], locations.strides[which]  # (P, 2), (P,)
    predicted_boxes = decode_boxes(box_regression[where, which], points, strides)  # (P, 4)
    loss_box = giou_loss(predicted_boxes, matched_boxes[where, which]).sum()

    # centre-ness: binary cross-entropy against equation 3, on the positives
    ltrb = distances_to_sides(points, matched_boxes[where, which])  # (P, 4)
    loss_centerness = F.binary_cross_entropy_with_logits(centerness[where, which], centerness_target(ltrb), reduction="sum")

    return {"classification": loss_cls / num_positive,
            "bbox_regression": loss_box / num_positive,
            "bbox_ctrness": loss_centerness / num_positive}
