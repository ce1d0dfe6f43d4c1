"""FCOS: a backbone, the course's neck, and the FCOS head, as one detector.

    images (B, 3, H, W) -> backbone + FPN (minibones.neck.PyramidBackbone) -> pyramid of
    (B, d, H/s_i, W/s_i) maps -> FCOSHead -> per location: K class logits, 4 distances,
    1 centre-ness -> training: fcos_loss; evaluation: postprocess -> boxes, scores, labels

Like torchvision's detectors, the model returns the loss terms in training mode (it needs
the targets then) and the detections in evaluation mode, so a training loop written for
one works for the other. Unlike them, it takes one batch tensor already normalised with
the backbone's mean and std (``model.config``), and no resizing happens inside.
"""

from __future__ import annotations

from torch import Tensor, nn

import minibones
from minibones.backbone import Backbone
from minibones.detection.head import FCOSHead, HeadOutputs
from minibones.detection.loss import fcos_loss
from minibones.detection.postprocess import postprocess
from minibones.detection.targets import Locations, pyramid_locations
from minibones.neck import PyramidBackbone


class FCOS(nn.Module):
    """Fully convolutional one-stage detection on any minibones backbone.

    ``num_classes`` counts the background as class 0, as torchvision does, so one set of
    labels (1 .. K-1) serves this model and torchvision's FCOS, RetinaNet and Faster R-CNN;
    class 0 is simply never a target. ``num_levels`` pyramid levels of ``neck_channels``
    channels are read (the finest at stride 4 for a CNN with four levels). A level of stride
    s learns the objects whose farthest side lies ``reach_in_strides`` = (4, 8) strides from
    the location, the paper's rule for 800-pixel images; small images, whose objects are
    all small, spread them over the levels with smaller multiples. The remaining arguments
    are the paper's and torchvision's defaults.
    """

    def __init__(self, backbone: Backbone, num_classes: int, *, neck_channels: int = 256, num_levels: int = 4,
                 num_convs: int = 4, center_sampling_radius: float = 1.5,
                 reach_in_strides: tuple[float, float] = (4.0, 8.0), score_thresh: float = 0.2,
                 nms_thresh: float = 0.6, topk_candidates: int = 1000, detections_per_img: int = 100):
        super().__init__()
        self.config = backbone.config  # input size, mean and std the images must be normalised with
        self.backbone = PyramidBackbone(backbone, neck_channels, num_levels)
        self.head = FCOSHead(neck_channels, num_classes, num_convs)
        self.assignment = dict(center_sampling_radius=center_sampling_radius, reach_in_strides=tuple(reach_in_strides))
        self.postprocess_settings = dict(score_thresh=score_thresh, nms_thresh=nms_thresh,
                                         topk_candidates=topk_candidates, detections_per_img=detections_per_img)

    @property
    def strides(self) -> list[int]:
        return self.backbone.strides

    def predict_dense(self, images: Tensor) -> tuple[HeadOutputs, Locations]:
        """The head's raw outputs on every level, and the locations they belong to."""
        pyramid = self.backbone(images)  # num_levels x (B, d, h_i, w_i)
        return self.head(pyramid), pyramid_locations(pyramid, self.backbone.strides)

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        """Training mode: the dict of loss terms (``targets`` required, one dict of ``boxes`` and
        ``labels`` per image). Evaluation mode: one dict of ``boxes``, ``scores``, ``labels`` and
        ``levels`` per image."""
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise ValueError("FCOS takes one batch tensor (B, 3, H, W) normalised with model.config's mean and std; "
                             "stack a list of images with torch.stack first")
        outputs, locations = self.predict_dense(images)
        if self.training:
            if targets is None:
                raise ValueError("in training mode FCOS needs the targets (one dict of boxes and labels per image); "
                                 "call model.eval() to detect")
            return fcos_loss(outputs, locations, targets, **self.assignment)
        return postprocess(outputs, locations, tuple(images.shape[-2:]), **self.postprocess_settings)


def build_detector(backbone: str | Backbone, num_classes: int, *, pretrained: bool = False, **kwargs) -> FCOS:
    """``build_detector("resnet18", 4)``, ``build_detector("efficientnet_lite0", 4, pretrained=True)``:
    one argument swaps the backbone, as :func:`minibones.neck.build_segmenter` does."""
    if isinstance(backbone, str):
        backbone = minibones.create_model(backbone, pretrained=pretrained)
    return FCOS(backbone, num_classes, **kwargs)
