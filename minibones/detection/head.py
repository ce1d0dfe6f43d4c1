"""The FCOS head (Tian, Shen, Chen, He; ICCV 2019, figure 2): three small predictions per location.

The same head runs on every pyramid level ("we share the heads between different feature
levels", section 3.2), so it costs the same whatever the level, and a location of any level
answers in the same units (distances are predicted in strides, see ``bbox_pred``). Two
towers of four 3x3 convs with GroupNorm and ReLU read each level:

* the classification tower ends in ``cls_logits``: K scores per location, one sigmoid per
  class (K binary classifiers, as in RetinaNet, rather than a softmax);
* the regression tower ends in ``bbox_pred``, the distances (l, t, r, b) to the box's four
  sides divided by the level's stride, kept positive by a ReLU, and in ``centerness``, one
  logit per location (FCOS's later version moved centre-ness from the classification
  tower to this one, which torchvision follows).

Same computation as ``torchvision.models.detection.fcos.FCOSHead``: ``name_map`` carries its
weights over, and the tests prove the outputs equal.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor, nn


class HeadOutputs(NamedTuple):
    """The head's predictions, one tensor per pyramid level (finest first), locations flattened
    row by row: N_i = h_i * w_i."""

    class_logits: list[Tensor]  # (B, N_i, K) one logit per class
    box_regression: list[Tensor]  # (B, N_i, 4) l/s, t/s, r/s, b/s
    centerness: list[Tensor]  # (B, N_i) one logit


def tower(channels: int, num_convs: int, num_groups: int = 32) -> nn.Sequential:
    """``num_convs`` x (3x3 conv, GroupNorm, ReLU): the paper's four-layer towers ("Group
    Normalization ... makes training more stable", section 4.1.2)."""
    if channels % num_groups:
        raise ValueError(f"GroupNorm splits the {channels} channels into {num_groups} groups: "
                         f"use a multiple of {num_groups} channels (neck_channels)")
    return nn.Sequential(*(
        nn.Sequential(OrderedDict(
            conv=nn.Conv2d(channels, channels, 3, padding=1),
            norm=nn.GroupNorm(num_groups, channels),
            act=nn.ReLU(),
        )) for _ in range(num_convs)
    ))


def flatten_locations(x: Tensor, per_location: int) -> Tensor:
    """(B, A, H, W) -> (B, H*W, A): one row per location, row by row (the order of :func:`pyramid_locations`)."""
    b, _, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, per_location)


class FCOSHead(nn.Module):
    """Shared towers and the three predictors of figure 2, run on every level of a pyramid
    of ``channels``-wide maps."""

    def __init__(self, channels: int, num_classes: int, num_convs: int = 4, prior_probability: float = 0.01):
        super().__init__()
        self.num_classes = num_classes
        self.cls_tower = tower(channels, num_convs)
        self.bbox_tower = tower(channels, num_convs)
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(channels, 1, 3, padding=1)
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):  # "initialized as in RetinaNet": N(0, 0.01), zero bias
                nn.init.normal_(conv.weight, std=0.01)
                nn.init.zeros_(conv.bias)
        # Every class starts with the probability pi = 0.01 (RetinaNet, section 4.1: b = -log((1 - pi) / pi)),
        # so the many background locations do not swamp the loss at the first steps.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))
        # torchvision's names -> ours: its towers are flat Sequentials (conv, norm, relu, conv, ...),
        # ours group each layer's three modules, so index 3k + j of theirs is layer k here.
        self.name_map = [(r"^classification_head\.cls_logits\.", "cls_logits."),
                         (r"^regression_head\.bbox_reg\.", "bbox_pred."),
                         (r"^regression_head\.bbox_ctrness\.", "centerness.")]
        for theirs, ours in (("classification_head", "cls_tower"), ("regression_head", "bbox_tower")):
            for k in range(num_convs):
                self.name_map += [(rf"^{theirs}\.conv\.{3 * k}\.", f"{ours}.{k}.conv."),
                                  (rf"^{theirs}\.conv\.{3 * k + 1}\.", f"{ours}.{k}.norm.")]

    def forward(self, pyramid: list[Tensor]) -> HeadOutputs:
        class_logits, box_regression, centerness = [], [], []
        for fmap in pyramid:  # (B, C, h, w): the same weights on every level
            cls_features = self.cls_tower(fmap)
            box_features = self.bbox_tower(fmap)
            class_logits.append(flatten_locations(self.cls_logits(cls_features), self.num_classes))  # (B, h w, K)
            # ReLU: distances are non-negative (FCOS's later version; the paper used exp(s_i x))
            distances = torch.relu(self.bbox_pred(box_features))
            box_regression.append(flatten_locations(distances, 4))  # (B, h w, 4)
            centerness.append(flatten_locations(self.centerness(box_features), 1)[..., 0])  # (B, h w)
        return HeadOutputs(class_logits, box_regression, centerness)
