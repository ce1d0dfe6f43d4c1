"""From dense predictions to a short list of boxes (FCOS, section 3.1 "inference", and torchvision).

Every location of every level votes for a box, so one object gets many nearly equal boxes.
Post-processing keeps the confident ones and removes the duplicates:

1. score every (location, class) pair: sqrt(sigmoid(class logit) x sigmoid(centre-ness)),
   so a location far from an object's centre scores lower (section 3.3; the square root
   is FCOS's later version and torchvision's);
2. per level, drop scores under ``score_thresh`` and keep the ``topk_candidates`` best;
3. decode the distances into boxes and clip them to the image;
4. non-maximum suppression, class by class (a disc does not suppress a square), then the
   ``detections_per_img`` best.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image

from minibones.detection.head import HeadOutputs
from minibones.detection.targets import Locations, decode_boxes


def postprocess(
    outputs: HeadOutputs,
    locations: Locations,
    image_size: tuple[int, int],
    *,
    score_thresh: float = 0.2,
    topk_candidates: int = 1000,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
) -> list[dict[str, Tensor]]:
    """One dict per image: ``boxes`` (D, 4) (x0, y0, x1, y1) in pixels, ``scores`` (D,),
    ``labels`` (D,), and ``levels`` (D,), the pyramid level each detection came from."""
    points = locations.points.split(locations.counts)  # per level: (N_i, 2)
    strides = locations.strides.split(locations.counts)
    detections = []
    for i in range(len(outputs.class_logits[0])):
        boxes, scores, labels, levels = [], [], [], []
        for level, (logits, distances, centerness) in enumerate(zip(
                outputs.class_logits, outputs.box_regression, outputs.centerness)):
            num_classes = logits.shape[-1]
            score = torch.sqrt(torch.sigmoid(logits[i]) * torch.sigmoid(centerness[i])[:, None]).flatten()  # (N_i K,)
            candidates = torch.where(score > score_thresh)[0]  # indices into location * K + class
            score, order = score[candidates].topk(min(topk_candidates, len(candidates)))
            candidates = candidates[order]
            where = torch.div(candidates, num_classes, rounding_mode="floor")  # the location
            box = decode_boxes(distances[i][where], points[level][where], strides[level][where])
            boxes.append(clip_boxes_to_image(box, image_size))
            scores.append(score)
            labels.append(candidates % num_classes)
            levels.append(torch.full_like(where, level))
        boxes, scores, labels, levels = torch.cat(boxes), torch.cat(scores), torch.cat(labels), torch.cat(levels)
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]  # best first
        detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep], "levels": levels[keep]})
    return detections
