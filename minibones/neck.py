"""Backbone, neck, head: turn any minibones backbone into a dense predictor.

A classifier reads only the last, coarsest map. Dense tasks (segmentation, detection)
need fine positions *and* strong semantics at every location, so a **neck** mixes the
backbone's stages into a pyramid whose every level has both, and a small **head** reads
that pyramid. The backbone side of the contract is the same for every family:
``forward_stages`` and ``feature_info`` (see :mod:`minibones.backbone`).

* :class:`FPN` - Feature Pyramid Network (Lin et al., CVPR 2017, section 3): a 1x1
  *lateral* conv brings every stage to the same width, a *top-down* path upsamples the
  coarser, more semantic map (nearest neighbour, x2) and adds it to the finer one, and a
  3x3 conv smooths each sum. Same computation and parameter layout as torchvision's
  ``torchvision.ops.FeaturePyramidNetwork`` (the tests prove it).
* :class:`SimpleFeaturePyramid` - for a plain ViT, whose stages all share one stride, the
  pyramid is built from the *last* map alone (ViTDet: Li, Mao, Girshick, He, ECCV 2022,
  section 3 and figure 2): stride-2 transposed convs up, max pooling down, then a 1x1 and a
  3x3 conv per level. ViTDet normalises with LayerNorm; BatchNorm here, as in the CNNs.
* :class:`PyramidBackbone` picks the right one from ``feature_info``, so a neck needs no
  per-family code; :class:`SemanticHead` is the semantic-segmentation branch of Panoptic
  FPN (Kirillov et al., CVPR 2019, section 3): every level is brought to stride 4 and
  summed, and a 1x1 conv predicts a class per pixel.
* :func:`build_segmenter` - ``build_segmenter("resnet18", num_classes=4)``: swapping the
  backbone is one argument. :class:`ShapesOnPhotos` is a small offline task to train it on,
  with :func:`train_segmenter`, a short run with a per-pixel loss; it also gives every
  shape's box, for detection (:mod:`minibones.detection`).
* :func:`detection_backbone` - the same pyramid in the form torchvision's own detectors
  (``FCOS``, ``RetinaNet``, ``FasterRCNN``) take, with :func:`anchor_generator` and
  :func:`roi_pooler` for the parts they need to know about it, and
  :func:`torchvision_detector` to build any of the three in one call.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import minibones
from minibones.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone, mode
from minibones.train import train_briefly


# --- the necks ----------------------------------------------------------------------


class FPN(nn.Module):
    """Feature Pyramid Network (Lin et al. 2017, section 3 and figure 3).

    Input: maps C_i, finest first, at strides s_1 < s_2 < ... (any sizes, e.g. odd ones
    from valid padding: each top-down step upsamples to the exact size of the finer map).
    Output: maps P_i with ``out_channels`` channels at the same sizes.
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)  # 1x1, C_i -> d
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        for conv in [*self.lateral, *self.output]:  # as torchvision (and the Detectron code)
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.constant_(conv.bias, 0)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        if len(features) != len(self.lateral):
            raise ValueError(f"this FPN was built for {len(self.lateral)} maps, got {len(features)}")
        top_down = self.lateral[-1](features[-1])  # the coarsest, most semantic map
        outputs = [self.output[-1](top_down)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            # "we upsample the spatial resolution by a factor of 2 (using nearest neighbor
            # upsampling for simplicity)", then merge "by element-wise addition"
            top_down = lateral + F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.output[i](top_down))  # the 3x3 conv reduces the aliasing of upsampling
        return outputs

    # torchvision.ops.FeaturePyramidNetwork's names -> ours (used by the tests to prove equality)
    name_map = [(r"^inner_blocks\.(\d+)\.0\.", r"lateral.\1."), (r"^layer_blocks\.(\d+)\.0\.", r"output.\1.")]


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li et al. 2022, figure 2 right): from one map at
    stride ``in_stride``, build maps at ``strides`` by scaling it with factors in_stride/stride
    (x4: two stride-2 transposed convs; x2: one; x1: identity; x1/2: 2x2 max pooling), then a
    1x1 conv to ``out_channels`` and a 3x3 conv at every level."""

    def __init__(self, in_channels: int, in_stride: int, strides: list[int], out_channels: int = 256):
        super().__init__()
        self.strides = list(strides)
        levels = []
        for stride in strides:
            ratio = in_stride / stride
            if ratio != 2 ** round(math.log2(ratio)):
                raise ValueError(f"strides must differ from the input's ({in_stride}) by powers of 2, got {stride}")
            layers, channels = OrderedDict(), in_channels
            if ratio > 1:  # upsample: transposed convs, halving the width each time (ViTDet)
                for k in range(round(math.log2(ratio))):
                    if k:
                        layers[f"norm{k}"] = nn.BatchNorm2d(channels)
                        layers[f"act{k}"] = nn.GELU()
                    layers[f"up{k + 1}"] = nn.ConvTranspose2d(channels, channels // 2, 2, stride=2)
                    channels //= 2
            elif ratio < 1:
                layers["pool"] = nn.MaxPool2d(round(1 / ratio))
            layers["reduce"] = nn.Conv2d(channels, out_channels, 1, bias=False)
            layers["reduce_norm"] = nn.BatchNorm2d(out_channels)
            layers["smooth"] = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
            layers["smooth_norm"] = nn.BatchNorm2d(out_channels)
            levels.append(nn.Sequential(layers))
        self.levels = nn.ModuleList(levels)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        x = features[-1]  # (B, D, H/s, W/s): the last block's patch grid
        return [level(x) for level in self.levels]  # (B, d, H/t, W/t) for each t in strides


def pyramid_levels(backbone: Backbone, num_levels: int = 4) -> list[int]:
    """Indices of the stages a neck reads: the last stage at each stride, the coarsest
    ``num_levels`` strides (the FPN paper reads C2-C5 and leaves out the stride-2 C1
    "due to its large memory footprint")."""
    last_at_stride = {info.stride: i for i, info in enumerate(backbone.feature_info)}
    return [last_at_stride[s] for s in sorted(last_at_stride)][-num_levels:]


class PyramidBackbone(nn.Module):
    """A backbone and the neck that suits it: an :class:`FPN` when its stages have several
    strides (every CNN), a :class:`SimpleFeaturePyramid` when they share one (ViT).

    ``forward(x)`` returns ``num_levels`` maps of ``out_channels`` channels, finest first, at
    the strides listed in ``self.strides``. The backbone's classifier is dropped (a dense
    model never reads it; VGG's fc6/fc7 alone are 120M parameters).
    """

    def __init__(self, backbone: Backbone, out_channels: int = 256, num_levels: int = 4):
        super().__init__()
        backbone.head = nn.Identity()
        self.body = backbone
        self.indices = pyramid_levels(backbone, num_levels)
        stages = [backbone.feature_info[i] for i in self.indices]
        if len(stages) > 1:
            self.neck = FPN([s.channels for s in stages], out_channels)
            self.strides = [s.stride for s in stages]
        else:
            stride = stages[0].stride  # ViT: patch size; levels from stride/4 to 2*stride, as ViTDet's 4..32
            self.strides = [s for s in (stride // 4, stride // 2, stride, stride * 2) if s >= 1][-num_levels:]
            self.neck = SimpleFeaturePyramid(stages[0].channels, stride, self.strides, out_channels)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> list[Tensor]:
        stages = self.body.forward_stages(x)
        return self.neck([stages[i] for i in self.indices])


# --- the pyramid inside torchvision's detectors -------------------------------------------


class DetectionBackbone(PyramidBackbone):
    """A :class:`PyramidBackbone` that speaks torchvision's detection interface: ``forward``
    returns an ``OrderedDict`` of the levels named "0", "1", ... (finest first), and
    ``out_channels`` says their common width. Same parameters as the PyramidBackbone."""

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return OrderedDict((str(i), fmap) for i, fmap in enumerate(super().forward(x)))


def detection_backbone(model: Backbone, out_channels: int = 256, num_levels: int = 4) -> DetectionBackbone:
    """Any minibones backbone with its neck, ready for ``torchvision.models.detection``.

    The detectors read the pyramid; what else each needs to know about it:

    * ``FCOS(backbone, num_classes, anchor_generator=anchor_generator(backbone.strides, "fcos"))``:
      one square anchor per location, as wide as the level's stride (FCOS uses the anchor's
      centre as its point and its width as the unit of the distances it predicts);
      ``out_channels`` must be a multiple of 32 (its head's GroupNorm).
    * ``RetinaNet(backbone, num_classes, anchor_generator=anchor_generator(backbone.strides, "retinanet"))``:
      nine anchors per location.
    * ``FasterRCNN(backbone, num_classes, rpn_anchor_generator=anchor_generator(backbone.strides, "faster_rcnn"),
      box_roi_pool=roi_pooler(backbone))``: three anchors per location for the region
      proposal network, and a RoIAlign that pools each proposal from the level its size suits.

    All three resize their inputs (to 800 pixels by default) and normalise them: pass
    ``min_size``/``max_size`` (the images' size, to keep it) and the backbone's
    ``image_mean``/``image_std`` (``model.config.mean``/``std``), and give them images in
    [0, 1]. :func:`torchvision_detector` does all of this.
    """
    return DetectionBackbone(model, out_channels, num_levels)


def anchor_generator(strides: list[int], detector: str):
    """The ``torchvision.models.detection.anchor_utils.AnchorGenerator`` that suits a pyramid at
    ``strides`` (finest first) for ``detector`` ("fcos", "retinanet" or "faster_rcnn").

    * fcos: one anchor of size s per level at stride s, aspect ratio 1 (torchvision's default,
      8..128 for P3..P7, is the same rule);
    * retinanet: sizes 4s x 2^(0, 1/3, 2/3) and aspect ratios 1:2, 1:1, 2:1 (Lin et al. 2017,
      section 4: areas 32^2 on P3 up to 512^2 on P7, three scales and three ratios);
    * faster_rcnn: size 8s and the same three ratios (FPN paper, section 4.1: areas 32^2 on P2
      up to 512^2 on P6).
    """
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if detector == "fcos":
        sizes, ratios = [(s,) for s in strides], (1.0,)
    elif detector == "retinanet":
        sizes, ratios = [tuple(4 * s * 2 ** (k / 3) for k in range(3)) for s in strides], (0.5, 1.0, 2.0)
    elif detector == "faster_rcnn":
        sizes, ratios = [(8 * s,) for s in strides], (0.5, 1.0, 2.0)
    else:
        raise ValueError(f"detector must be 'fcos', 'retinanet' or 'faster_rcnn', got {detector!r}")
    return AnchorGenerator(tuple(sizes), (ratios,) * len(strides))


def roi_pooler(backbone: DetectionBackbone, output_size: int = 7, sampling_ratio: int = 2):
    """Faster R-CNN's ``MultiScaleRoIAlign`` over every level of ``backbone``: a 7 x 7 grid per
    proposal, read from level k = floor(4 + log2(sqrt(w h) / 224)) (FPN paper, equation 1;
    torchvision infers each level's scale from its size relative to the image)."""
    from torchvision.ops import MultiScaleRoIAlign

    return MultiScaleRoIAlign([str(i) for i in range(len(backbone.strides))], output_size, sampling_ratio)


def torchvision_detector(detector: str, model: Backbone | DetectionBackbone, num_classes: int, image_size: int,
                         out_channels: int = 256, num_levels: int = 4, **kwargs) -> nn.Module:
    """torchvision's ``FCOS``, ``RetinaNet`` or ``FasterRCNN`` (``detector`` = "fcos", "retinanet",
    "faster_rcnn") on ``model`` with its neck (or on a :class:`DetectionBackbone` as it is), for
    images of ``image_size`` pixels in [0, 1] (kept at that size, normalised with the backbone's
    mean and std). ``num_classes`` counts the background; ``kwargs`` go to the detector."""
    from torchvision.models import detection

    if detector not in ("fcos", "retinanet", "faster_rcnn"):
        raise ValueError(f"detector must be 'fcos', 'retinanet' or 'faster_rcnn', got {detector!r}")
    if isinstance(model, DetectionBackbone):
        backbone = model
    else:
        backbone = detection_backbone(model, out_channels, num_levels)
    config = backbone.body.config
    anchors = anchor_generator(backbone.strides, detector)
    settings = dict(min_size=image_size, max_size=image_size, image_mean=list(config.mean), image_std=list(config.std))
    settings.update(kwargs)
    if detector == "fcos":
        return detection.FCOS(backbone, num_classes, anchor_generator=anchors, **settings)
    if detector == "retinanet":
        return detection.RetinaNet(backbone, num_classes, anchor_generator=anchors, **settings)
    return detection.FasterRCNN(backbone, num_classes, rpn_anchor_generator=anchors, box_roi_pool=roi_pooler(backbone),
                                **settings)


# --- the head and the whole model -----------------------------------------------------


class SemanticHead(nn.Module):
    """Panoptic FPN's semantic branch (Kirillov et al. 2019, section 3, figure 3): each level
    goes through a 3x3 conv, norm and ReLU and is upsampled (bilinear) to the finest level,
    the levels are summed, and a 1x1 conv gives one score per class and pixel, upsampled to
    the input."""

    def __init__(self, in_channels: int, num_levels: int, num_classes: int, channels: int = 64):
        super().__init__()
        self.levels = nn.ModuleList(
            nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                bn=nn.BatchNorm2d(channels),
                act=nn.ReLU(),
            )) for _ in range(num_levels)
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, pyramid: list[Tensor], output_size: tuple[int, int]) -> Tensor:
        size = pyramid[0].shape[-2:]
        x = self.levels[0](pyramid[0])
        for level, feature in zip(self.levels[1:], pyramid[1:]):
            x = x + F.interpolate(level(feature), size=size, mode="bilinear", align_corners=False)
        logits = self.classifier(x)  # (B, classes, H/s_1, W/s_1)
        return F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)  # (B, classes, H, W)


class Segmenter(nn.Module):
    """Backbone -> neck -> head: per-pixel class scores (B, num_classes, H, W)."""

    def __init__(self, backbone: Backbone, num_classes: int, neck_channels: int = 64, head_channels: int = 64):
        super().__init__()
        self.config = backbone.config  # the backbone's input size and normalisation
        self.backbone = PyramidBackbone(backbone, neck_channels)
        self.head = SemanticHead(neck_channels, len(self.backbone.strides), num_classes, head_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x), x.shape[-2:])


def build_segmenter(backbone: str | Backbone, num_classes: int, *, pretrained: bool = False, **kwargs) -> Segmenter:
    """``build_segmenter("resnet18", 4)``, ``build_segmenter("vit_b_16", 4)``: one argument swaps the backbone."""
    if isinstance(backbone, str):
        backbone = minibones.create_model(backbone, pretrained=pretrained)
    return Segmenter(backbone, num_classes, **kwargs)


# --- a small offline task -----------------------------------------------------------


SHAPES = ("background", "disc", "square", "triangle")
# Real photographs shipped by scikit-image (and matplotlib's Grace Hopper), colour and grey.
# Every photograph is cut in two: training crops come from its left 70%, test crops from its
# right 30%, so no test pixel was ever seen in training, while both splits see the same kinds
# of background. (Splitting by photograph instead, with this few of them, mostly measures how
# well a network trained on ten pictures copes with five new ones: it learns the backgrounds.)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "grace_hopper", "hubble_deep_field",
          "immunohistochemistry", "retina", "brick", "camera", "clock", "coins", "grass", "gravel", "moon")
TRAIN_FRACTION = 0.7


def read_background(name: str) -> np.ndarray:
    """One of the photographs above as an (H, W, 3) uint8 array (grey ones copied to 3 channels)."""
    if name == "grace_hopper":
        from minibones.data.photos import read_photo

        return read_photo(name)
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


class ShapesOnPhotos(torch.utils.data.Dataset):
    """Discs, squares and triangles of random colour, size and place, pasted on random crops of
    real photographs (shipped by scikit-image and matplotlib, no network); the target labels
    every pixel with its shape (0 is the background). Deterministic for a given ``seed``; train
    and test crops come from disjoint parts of the photographs (see ``PHOTOS``).

    Items: (image (3, size, size) normalised with ``mean``/``std``, mask (size, size) int64).

    For detection, ``targets[n]`` holds image n's ``boxes`` (k, 4), (x0, y0, x1, y1) in pixels
    around the *visible* part of each shape (later shapes are pasted over earlier ones), and
    their ``labels`` (k,) (1 disc, 2 square, 3 triangle); a shape of which less than
    ``min_visible`` of its pixels remain visible gets no box. ``radius`` is the range of the
    shapes' radii as fractions of ``size`` (``(0.05, 0.4)`` gives objects from a few pixels to
    most of the image).
    """

    classes = SHAPES

    def __init__(self, split: str = "train", size: int = 64, length: int = 256, seed: int = 0,
                 max_shapes: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 radius: tuple[float, float] = (0.08, 0.22), min_visible: float = 0.3):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not 0 < radius[0] <= radius[1] < 0.5:
            raise ValueError(f"radius must be (smallest, largest) fractions of the size with 0 < smallest <= largest "
                             f"< 0.5, got {radius!r}")
        photos = []
        for name in PHOTOS:
            photo = read_background(name)
            cut = int(photo.shape[1] * TRAIN_FRACTION)
            photos.append(photo[:, :cut] if split == "train" else photo[:, cut:])
        smallest = min(min(photo.shape[:2]) for photo in photos)
        if size > smallest:
            raise ValueError(f"size can be at most {smallest} (the narrowest part of a photograph), got {size}")
        rng = np.random.default_rng([seed, split == "test"])
        images = np.empty((length, size, size, 3), np.uint8)
        masks = np.zeros((length, size, size), np.int64)
        self.targets = []
        yy, xx = np.mgrid[0:size, 0:size] + 0.5
        for n in range(length):
            instances = np.zeros((size, size), np.int64)  # which shape (1, 2, ...) each pixel shows
            kinds, areas = [], []
            photo = photos[rng.integers(len(photos))]
            scale = rng.integers(1, min(photo.shape[:2]) // size + 1)  # crop size x scale pixels, keep every scale-th
            span = size * scale
            top = rng.integers(0, photo.shape[0] - span + 1)
            left = rng.integers(0, photo.shape[1] - span + 1)
            image = photo[top : top + span : scale, left : left + span : scale, :3].copy()
            for _ in range(rng.integers(1, max_shapes + 1)):
                kind = rng.integers(1, len(SHAPES))
                r = rng.uniform(*radius) * size
                cy, cx = rng.uniform(r, size - r, 2)
                if kind == 1:
                    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
                elif kind == 2:
                    inside = (abs(yy - cy) <= r * 0.85) & (abs(xx - cx) <= r * 0.85)
                else:  # an upward triangle: below the two sloped edges, above the base
                    inside = (yy <= cy + r * 0.8) & (abs(xx - cx) <= (yy - (cy - r)) * 0.6)
                image[inside] = rng.integers(0, 256, 3)
                masks[n][inside] = kind
                kinds.append(kind)
                areas.append(inside.sum())
                instances[inside] = len(kinds)
            images[n] = image
            self.targets.append(visible_boxes(instances, kinds, areas, min_visible))
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        self.images = (tensor - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        self.masks = torch.from_numpy(masks)
        self.raw = images  # for display

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.masks[index]


def visible_boxes(instances: np.ndarray, kinds: list[int], areas: list[int], min_visible: float) -> dict[str, Tensor]:
    """The box around the visible pixels of each shape (``instances`` == k for shape k = 1, 2, ...)
    of which at least ``min_visible`` of its ``areas[k - 1]`` pixels remain: a box takes
    pixel columns x0 .. x1 - 1 and rows y0 .. y1 - 1."""
    boxes, labels = [], []
    for k, (kind, area) in enumerate(zip(kinds, areas), start=1):
        rows, cols = np.nonzero(instances == k)
        if area and len(rows) >= min_visible * area:
            boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            labels.append(kind)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def mean_iou(logits: Tensor, masks: Tensor, num_classes: int) -> float:
    """Mean intersection over union over the classes present in ``masks`` or predicted."""
    predicted = logits.argmax(1)
    ious = []
    for c in range(num_classes):
        union = ((predicted == c) | (masks == c)).sum()
        if union > 0:
            ious.append(float(((predicted == c) & (masks == c)).sum()) / float(union))
    return sum(ious) / len(ious)


def train_segmenter(
    model: Segmenter,
    train: torch.utils.data.Dataset,
    test: torch.utils.data.Dataset | None = None,
    *,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> list[dict]:
    """A short supervised run with per-pixel cross-entropy (:func:`minibones.train.train_briefly`:
    AdamW, one-cycle schedule), shuffled from ``seed``.

    Returns one record per epoch: training loss, and the test pixel accuracy and mean IoU.
    """
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator)

    def loss(model: Segmenter, images: Tensor, masks: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        value = F.cross_entropy(model(images), masks)  # (B, classes, H, W) scores against (B, H, W) classes
        return value, {"train_loss": value}

    def test_metrics() -> dict:
        return evaluate_segmenter(model, test, batch_size=batch_size)

    return train_briefly(model, lambda: loader, loss, epochs=epochs, steps_per_epoch=len(loader), lr=lr,
                         weight_decay=weight_decay, device=device,
                         test_metrics=test_metrics if test is not None else None)


@torch.no_grad()
def evaluate_segmenter(model: Segmenter, data, *, batch_size: int = 64, device=None) -> dict:
    """Pixel accuracy and mean IoU (%) over ``data``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    logits, masks = [], []
    with mode(model, False):
        for images, target in torch.utils.data.DataLoader(data, batch_size=batch_size):
            logits.append(model(images.to(device)).cpu())
            masks.append(target)
    logits, masks = torch.cat(logits), torch.cat(masks)
    num_classes = logits.shape[1]
    return {
        "pixel_accuracy": 100.0 * float((logits.argmax(1) == masks).float().mean()),
        "mean_iou": 100.0 * mean_iou(logits, masks, num_classes),
    }
