"""Detection: boxes from any minibones backbone.

FCOS (Tian, Shen, Chen, He; "FCOS: Fully Convolutional One-Stage Object Detection", ICCV
2019) built from scratch on the course's neck, one idea per module, read in this order:

* :mod:`~minibones.detection.targets` - the locations of the pyramid, the distances
  (l, t, r, b) to a box's sides, centre-ness, and which location learns which box;
* :mod:`~minibones.detection.head` - the shared head: classification, box regression and
  centre-ness towers (equal to torchvision's ``FCOSHead`` after weight conversion);
* :mod:`~minibones.detection.loss` - focal loss, GIoU loss and centre-ness cross-entropy;
* :mod:`~minibones.detection.postprocess` - scores, top-k, decoding, non-maximum suppression;
* :mod:`~minibones.detection.fcos` - the whole detector, :func:`build_detector`;
* :mod:`~minibones.detection.train` - a short training loop and mean average precision
  (torchmetrics, COCO's reference code).

The tests prove that head, loss and post-processing agree with torchvision's FCOS on the
same inputs. For torchvision's own detectors on a minibones backbone, see
:func:`minibones.neck.detection_backbone`.
"""

from minibones.detection.fcos import FCOS, build_detector
from minibones.detection.head import FCOSHead, HeadOutputs
from minibones.detection.loss import fcos_loss, giou_loss, sigmoid_focal_loss
from minibones.detection.postprocess import postprocess
from minibones.detection.targets import Locations, assign_targets, centerness_target, pyramid_locations
from minibones.detection.train import detect, evaluate_detector, mean_average_precision, train_detector

__all__ = [
    "FCOS",
    "FCOSHead",
    "HeadOutputs",
    "Locations",
    "assign_targets",
    "build_detector",
    "centerness_target",
    "detect",
    "evaluate_detector",
    "fcos_loss",
    "giou_loss",
    "mean_average_precision",
    "postprocess",
    "pyramid_locations",
    "sigmoid_focal_loss",
    "train_detector",
]
