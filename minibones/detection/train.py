"""Train a detector briefly and score it with mean average precision.

Mean average precision is computed by ``torchmetrics.detection.MeanAveragePrecision`` with
the COCO reference code (pycocotools) behind it, not by hand: for each class, detections
are sorted by score, matched to unmatched true boxes at an IoU threshold, the precision /
recall curve is sampled at 101 recall points, and the areas are averaged over the classes.
``map_50`` uses the threshold 0.5 (PASCAL VOC's); ``map`` averages the thresholds 0.5,
0.55, ..., 0.95 (COCO's primary metric, which rewards tight boxes).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minibones.backbone import mode
from minibones.train import train_briefly


def batches(data, batch_size: int, generator: torch.Generator | None = None):
    """(images (B, 3, H, W), targets) batches from a dataset with ``images`` and ``targets``
    (:class:`minibones.neck.ShapesOnPhotos`), shuffled when a ``generator`` is given."""
    n = len(data.images)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        yield data.images[index], [data.targets[i] for i in index.tolist()]


def mean_average_precision(predictions: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> dict[str, float]:
    """``map`` (IoU 0.5:0.95) and ``map_50`` (IoU 0.5), in percent, of ``predictions`` (one dict of
    ``boxes``, ``scores``, ``labels`` per image) against ``targets`` (``boxes``, ``labels``)."""
    from torchmetrics.detection import MeanAveragePrecision

    if len(predictions) != len(targets):
        raise ValueError(f"got {len(predictions)} predictions for {len(targets)} images; give one dict per image")
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    keys = ("boxes", "scores", "labels")
    metric.update([{k: p[k].detach().cpu() for k in keys} for p in predictions],
                  [{k: t[k].cpu() for k in ("boxes", "labels")} for t in targets])
    result = metric.compute()
    return {"map": 100.0 * float(result["map"]), "map_50": 100.0 * float(result["map_50"])}


@torch.no_grad()
def detect(model: nn.Module, data, *, batch_size: int = 64, device=None) -> list[dict[str, Tensor]]:
    """The model's detections (on the CPU) for every image of ``data``, in order."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    detections = []
    with mode(model, False):
        for images, _ in batches(data, batch_size):
            detections += [{k: v.cpu() for k, v in d.items()} for d in model(images.to(device))]
    return detections


def evaluate_detector(model: nn.Module, data, *, batch_size: int = 64, device=None) -> dict[str, float]:
    """mAP@0.5:0.95 and mAP@0.5 (%) of ``model`` on ``data``."""
    return mean_average_precision(detect(model, data, batch_size=batch_size, device=device), data.targets)


def train_detector(
    model: nn.Module,
    train,
    test=None,
    *,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    device: str | torch.device | None = None,
    seed: int = 0,
    evaluate_every: int = 1,
) -> list[dict]:
    """A short run (:func:`minibones.train.train_briefly`: AdamW, one-cycle schedule) on the
    sum of the model's loss terms, shuffled from ``seed``.

    Returns one record per epoch: the mean of each loss term and of their sum (``loss``) over
    the epoch and, every ``evaluate_every`` epochs and after the last one, the test ``map``
    and ``map_50`` (%). Stops with an error if the loss stops being finite.
    """
    generator = torch.Generator().manual_seed(seed)

    def loss(model: nn.Module, images: Tensor, targets: list[dict]) -> tuple[Tensor, dict[str, Tensor]]:
        terms = model(images, targets)
        total = sum(terms.values())
        return total, {**terms, "loss": total}

    def test_metrics() -> dict[str, float]:
        return evaluate_detector(model, test)

    return train_briefly(model, lambda: batches(train, batch_size, generator), loss, epochs=epochs,
                         steps_per_epoch=-(-len(train.images) // batch_size), lr=lr, weight_decay=weight_decay,
                         device=device, test_metrics=test_metrics if test is not None else None,
                         evaluate_every=evaluate_every)
