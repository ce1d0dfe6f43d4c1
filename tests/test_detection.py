"""Detection: FCOS from scratch equal to torchvision's (head, loss, post-processing), any minibones
backbone inside torchvision's FCOS, RetinaNet and Faster R-CNN, and boxes for the shapes task."""

import copy
import functools

import pytest
import torch

import minibones
from minibones.detection import (
    FCOS,
    FCOSHead,
    Locations,
    assign_targets,
    build_detector,
    centerness_target,
    evaluate_detector,
    fcos_loss,
    giou_loss,
    mean_average_precision,
    postprocess,
    pyramid_locations,
    sigmoid_focal_loss,
    train_detector,
)
from minibones.neck import ShapesOnPhotos, anchor_generator, detection_backbone, torchvision_detector
from minibones.backbone import measure_batch_norm_
from minibones.registry import _BUILDERS

IMAGE_SIZE = 96


# --- the head ------------------------------------------------------------------------


def test_fcos_head_matches_torchvision():
    from torchvision.models.detection.fcos import FCOSHead as Reference

    torch.manual_seed(0)
    reference = Reference(64, num_anchors=1, num_classes=5, num_convs=4)
    for parameter in reference.parameters():  # every weight, bias and GroupNorm affine matters
        torch.nn.init.normal_(parameter, std=0.1)
    head = FCOSHead(64, num_classes=5, num_convs=4)
    minibones.load_reference_weights(head, reference)
    assert minibones.count_parameters(head) == minibones.count_parameters(reference)

    pyramid = [torch.randn(2, 64, h, w) for h, w in [(23, 31), (12, 16), (6, 8), (3, 4)]]  # odd sizes too
    with torch.no_grad():
        ours, theirs = head(pyramid), reference(pyramid)
    torch.testing.assert_close(torch.cat(ours.class_logits, dim=1), theirs["cls_logits"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.cat(ours.box_regression, dim=1), theirs["bbox_regression"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.cat(ours.centerness, dim=1), theirs["bbox_ctrness"][..., 0], rtol=1e-6, atol=1e-6)


def test_head_outputs_are_one_row_per_location():
    head = FCOSHead(32, num_classes=3, num_convs=1)
    out = head([torch.randn(2, 32, 8, 12), torch.randn(2, 32, 4, 6)])
    assert [tuple(t.shape) for t in out.class_logits] == [(2, 96, 3), (2, 24, 3)]
    assert [tuple(t.shape) for t in out.box_regression] == [(2, 96, 4), (2, 24, 4)]
    assert [tuple(t.shape) for t in out.centerness] == [(2, 96), (2, 24)]
    assert all((t >= 0).all() for t in out.box_regression)  # distances, kept positive by the ReLU
    # every class starts at the prior probability 0.01 (the class logits' bias)
    assert torch.sigmoid(head.cls_logits.bias).allclose(torch.tensor(0.01))


def test_groupnorm_needs_a_multiple_of_32_channels():
    with pytest.raises(ValueError, match="multiple of 32"):
        FCOSHead(48, num_classes=3)


# --- locations and targets -------------------------------------------------------------


def test_locations_sit_at_half_a_stride_and_levels_take_4s_to_8s():
    pyramid = [torch.zeros(1, 8, 2, 3), torch.zeros(1, 8, 1, 2)]
    locations = pyramid_locations(pyramid, [4, 8])
    # paper, section 3.1: (floor(s/2) + x s, floor(s/2) + y s), row by row
    assert locations.points.tolist() == [[2, 2], [6, 2], [10, 2], [2, 6], [6, 6], [10, 6], [4, 4], [12, 4]]
    assert locations.counts == [6, 2] and locations.level.tolist() == [0] * 6 + [1] * 2
    lower, upper = locations.size_ranges()
    assert lower.tolist() == [0] * 6 + [32] * 2  # the finest level is open downwards ...
    assert upper.tolist() == [32] * 6 + [float("inf")] * 2  # ... the coarsest upwards
    lower, upper = locations.size_ranges(reach_in_strides=(2, 4))  # for small images: halve the paper's multiples
    assert lower.tolist() == [0] * 6 + [16] * 2 and upper.tolist() == [16] * 6 + [float("inf")] * 2


def test_small_boxes_go_to_fine_levels_and_large_ones_to_coarse_levels():
    pyramid = [torch.zeros(1, 8, 24, 24), torch.zeros(1, 8, 12, 12), torch.zeros(1, 8, 6, 6)]
    locations = pyramid_locations(pyramid, [4, 8, 16])
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0],  # 20 px: max(l, t, r, b) <= 20 < 32 -> stride 4
                          [20.0, 20.0, 90.0, 90.0]])  # 70 px: reach from 35 to ~52 near the centre -> stride 8
    matched = assign_targets(locations, boxes)
    levels = locations.level
    assert set(levels[matched == 0].tolist()) == {0} and set(levels[matched == 1].tolist()) == {1}
    # centre sampling: positives lie within 1.5 strides of the centre (x and y), and inside the box
    points = locations.points[matched == 0]
    assert ((points - 20).abs() < 1.5 * 4).all()
    # two boxes around the same centre both claim the finest locations there: the smaller one wins
    nested = assign_targets(locations, torch.tensor([[0.0, 0.0, 40.0, 40.0], [8.0, 8.0, 32.0, 32.0]]))
    near_centre = (locations.level == 0) & ((locations.points - 20).abs() < 6).all(dim=1)
    assert near_centre.sum() == 4 and (nested[near_centre] == 1).all()
    assert (assign_targets(locations, torch.zeros(0, 4)) == -1).all()


def test_centerness_is_one_at_the_centre_and_falls_to_the_sides():
    ltrb = torch.tensor([[5.0, 5.0, 5.0, 5.0], [1.0, 5.0, 9.0, 5.0], [1.0, 1.0, 9.0, 9.0]])
    torch.testing.assert_close(centerness_target(ltrb), torch.tensor([1.0, (1 / 9) ** 0.5, 1 / 9]))


# --- the losses written out, against torchvision.ops ------------------------------------------


def test_focal_loss_and_giou_loss_match_torchvision_ops():
    from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss as reference_focal

    torch.manual_seed(0)
    logits, targets = torch.randn(50, 4) * 3, (torch.rand(50, 4) > 0.8).float()
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets), reference_focal(logits, targets), rtol=1e-6, atol=1e-7)
    xy = torch.rand(40, 2) * 50
    a = torch.cat([xy, xy + torch.rand(40, 2) * 30 + 1], dim=1)
    xy = torch.rand(40, 2) * 50  # some pairs overlap, some do not
    b = torch.cat([xy, xy + torch.rand(40, 2) * 30 + 1], dim=1)
    torch.testing.assert_close(giou_loss(a, b), generalized_box_iou_loss(a, b), rtol=1e-6, atol=1e-7)
    assert giou_loss(a[:1], a[:1]).item() == pytest.approx(0.0, abs=1e-6)  # a perfect box costs nothing


# --- loss, assignment and post-processing against torchvision's FCOS on the same features ---


def separated_area_boxes(generator: torch.Generator, count: int, size: int) -> torch.Tensor:
    """Random boxes of many sizes whose areas differ by more than 8 px^2. (torchvision picks the
    smallest box as 1e8 - area in float32, whose spacing near 1e8 is 8: closer areas tie there.)"""
    boxes = []
    while len(boxes) < count:
        wh = torch.randint(6, size, (2,), generator=generator).float()
        xy = torch.rand(2, generator=generator) * (size - wh)
        box = torch.cat([xy, xy + wh])
        area = float(wh.prod())
        if all(abs(area - float((b[2:] - b[:2]).prod())) > 8 for b in boxes):
            boxes.append(box)
    return torch.stack(boxes) if boxes else torch.zeros(0, 4)


@pytest.fixture(scope="module")
def both_fcos():
    """torchvision's FCOS and ours on one backbone and neck (shared weights), random head weights
    ported through the name map, and a batch of images and targets (an image without boxes too)."""
    torch.manual_seed(0)
    backbone = minibones.create_model("mobilenet_v3_small")
    theirs = torchvision_detector("fcos", backbone, num_classes=4, image_size=IMAGE_SIZE, out_channels=64).eval()
    for parameter in theirs.head.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    ours = FCOS(minibones.create_model("mobilenet_v3_small"), num_classes=4, neck_channels=64).eval()
    ours.backbone.load_state_dict(theirs.backbone.state_dict())  # a DetectionBackbone is a PyramidBackbone
    minibones.load_reference_weights(ours.head, theirs.head)

    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) for _ in range(3)]
    targets = [{"boxes": separated_area_boxes(generator, n, IMAGE_SIZE),
                "labels": torch.randint(1, 4, (n,), generator=generator)} for n in (6, 3, 0)]
    with torch.no_grad():
        batch, targets = theirs.transform(images, targets)  # normalised, not resized (min_size = image size)
        features = list(theirs.backbone(batch.tensors).values())
        anchors = theirs.anchor_generator(batch, features)
        counts = [f.shape[2] * f.shape[3] for f in features]
        return dict(theirs=theirs, ours=ours, batch=batch, targets=targets, features=features, anchors=anchors,
                    counts=counts, their_outputs=theirs.head(features), our_outputs=ours.head(features),
                    locations=Locations.from_anchors(anchors[0], counts))


def test_the_backbone_gives_both_detectors_the_same_features(both_fcos):
    with torch.no_grad():
        ours = both_fcos["ours"].backbone(both_fcos["batch"].tensors)
    for a, b in zip(ours, both_fcos["features"]):
        assert torch.equal(a, b)


def test_assignment_matches_torchvision(both_fcos):
    theirs, captured = both_fcos["theirs"], {}
    compute_loss = theirs.head.compute_loss

    def capture(targets, head_outputs, anchors, matched_idxs):
        captured["matched"] = matched_idxs
        return compute_loss(targets, head_outputs, anchors, matched_idxs)

    theirs.head.compute_loss = capture
    try:
        theirs.compute_loss(both_fcos["targets"], both_fcos["their_outputs"], both_fcos["anchors"], both_fcos["counts"])
    finally:
        del theirs.head.compute_loss
    for target, expected in zip(both_fcos["targets"], captured["matched"]):
        ours = assign_targets(both_fcos["locations"], target["boxes"])
        assert torch.equal(ours, expected)
    assert (captured["matched"][0] >= 0).sum() > 10  # the comparison covers real positives


def test_fcos_loss_matches_torchvision(both_fcos):
    theirs = both_fcos["theirs"].compute_loss(both_fcos["targets"], both_fcos["their_outputs"], both_fcos["anchors"],
                                               both_fcos["counts"])
    ours = fcos_loss(both_fcos["our_outputs"], both_fcos["locations"], both_fcos["targets"])
    assert ours.keys() == theirs.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("settings", [dict(score_thresh=0.2, nms_thresh=0.6, topk_candidates=1000, detections_per_img=100),
                                      dict(score_thresh=0.05, nms_thresh=0.3, topk_candidates=20, detections_per_img=15)])
def test_postprocess_matches_torchvision(both_fcos, settings):
    theirs_model, counts = both_fcos["theirs"], both_fcos["counts"]
    for name, value in settings.items():
        setattr(theirs_model, name, value)
    split = {k: list(v.split(counts, dim=1)) for k, v in both_fcos["their_outputs"].items()}
    theirs = theirs_model.postprocess_detections(split, [list(a.split(counts)) for a in both_fcos["anchors"]],
                                                 both_fcos["batch"].image_sizes)
    ours = postprocess(both_fcos["our_outputs"], both_fcos["locations"], (IMAGE_SIZE, IMAGE_SIZE), **settings)
    for a, b in zip(ours, theirs):
        assert len(b["boxes"]) > 5  # enough detections for the comparison to mean something
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-6, atol=1e-7)
        assert torch.equal(a["labels"], b["labels"])


def test_our_fcos_trains_and_detects():
    model = build_detector("mobilenet_v3_small", 4, neck_channels=32, num_convs=1, score_thresh=0.0)
    images = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model.train()(images, targets)
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    sum(losses.values()).backward()
    assert model.backbone.body.stem.conv.weight.grad.abs().sum() > 0
    detections = model.eval()(images)
    assert len(detections) == 2 and detections[0]["boxes"].shape[1] == 4
    assert set(detections[0]["levels"].tolist()) <= set(range(len(model.strides)))
    with pytest.raises(ValueError, match="targets"):
        model.train()(images)
    with pytest.raises(ValueError, match="batch tensor"):
        model.eval()(list(images))


# --- torchvision's detectors on every family ----------------------------------------------------


# the smallest variant of each family (a family is a file in minibones/models), and the ones the issue names
FAMILIES = ["resnet18", "vgg11", "googlenet", "inception_v3", "xception", "efficientnet_b0", "efficientnet_lite0",
            "mobilenet_v3_small", "convnext_tiny", "vit_b_32"]


def family_backbones() -> list[str]:
    names = [name for name in FAMILIES if name in _BUILDERS]
    missing = {builder.__module__ for builder in _BUILDERS.values()} - {_BUILDERS[name].__module__ for name in names}
    assert not missing, f"add a small variant of {missing} to FAMILIES"
    return names


def image_size_for(name: str) -> int:
    return 128 if name == "inception_v3" else 64  # Inception-v3 needs 75 px; at 96 its unpadded convs leave a 1 x 1 map


@functools.cache
def pyramid_of(name: str):
    """The backbone with its neck, built once per family (torchvision's detectors take a copy), with
    batch-norm statistics measured on random images: with the initial ones (mean 0, variance 1)
    activations grow layer after layer in evaluation mode, and deep nets give no usable boxes."""
    torch.manual_seed(0)
    pyramid = detection_backbone(minibones.create_model(name), out_channels=32)
    size = image_size_for(name)
    return measure_batch_norm_(pyramid, torch.randn(4, 3, size, size))


LOSS_TERMS = {"fcos": {"classification", "bbox_regression", "bbox_ctrness"},
              "retinanet": {"classification", "bbox_regression"},
              "faster_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}}


@pytest.mark.parametrize("detector", ["fcos", "retinanet", "faster_rcnn"])
@pytest.mark.parametrize("name", family_backbones())
def test_torchvision_detectors_train_and_detect_on_every_family(name, detector):
    backbone = copy.deepcopy(pyramid_of(name))
    size = image_size_for(name)
    thresholds = {"box_score_thresh": 0.0} if detector == "faster_rcnn" else {"score_thresh": 0.0}
    model = torchvision_detector(detector, backbone, num_classes=3, image_size=size, **thresholds)
    torch.manual_seed(0)
    images = [torch.rand(3, size, size) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 60.0]]), "labels": torch.tensor([1, 2])},
               {"boxes": torch.tensor([[10.0, 10.0, 20.0, 24.0]]), "labels": torch.tensor([2])}]

    losses = model.train()(images, targets)
    assert set(losses) == LOSS_TERMS[detector] and all(torch.isfinite(v) and v >= 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    first = next(backbone.body.parameters())  # the backbone's first layer: the gradient went all the way down
    assert first.grad is not None and first.grad.abs().sum() > 0

    with torch.no_grad():
        detections = model.eval()(images)
    assert len(detections) == 2
    for d in detections:
        assert len(d["boxes"]) > 0 and d["boxes"].shape[1] == 4 and len(d["scores"]) == len(d["labels"]) == len(d["boxes"])
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= size).all()
        # Faster R-CNN's box head has a background class; the one-stage heads score every class
        lowest = 1 if detector == "faster_rcnn" else 0
        assert ((d["labels"] >= lowest) & (d["labels"] < 3)).all()


def test_anchor_generators_follow_the_papers():
    strides = [8, 16, 32]
    fcos = anchor_generator(strides, "fcos")
    assert fcos.sizes == ((8,), (16,), (32,)) and fcos.num_anchors_per_location() == [1, 1, 1]
    retinanet = anchor_generator(strides, "retinanet")
    assert retinanet.sizes[0] == pytest.approx((32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)))  # 32^2 on P3
    assert retinanet.num_anchors_per_location() == [9, 9, 9]
    faster = anchor_generator([4, 8, 16, 32], "faster_rcnn")
    assert faster.sizes == ((32,), (64,), (128,), (256,)) and faster.num_anchors_per_location() == [3] * 4
    with pytest.raises(ValueError, match="fcos"):
        anchor_generator(strides, "yolo")


# --- the task and its metric ---------------------------------------------------------


def test_shapes_on_photos_gives_tight_boxes_and_keeps_its_masks():
    one = ShapesOnPhotos("train", size=48, length=16, max_shapes=1, min_visible=0.0)
    for mask, target in zip(one.masks, one.targets):
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert target["boxes"].tolist() == [[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]]
        assert target["labels"].tolist() == [int(mask.max())]
    many = ShapesOnPhotos("train", size=48, length=64, radius=(0.05, 0.4))
    again = ShapesOnPhotos("train", size=48, length=64, radius=(0.05, 0.4))
    assert torch.equal(many.images, again.images) and all(
        torch.equal(a["boxes"], b["boxes"]) for a, b in zip(many.targets, again.targets))
    assert max(len(t["boxes"]) for t in many.targets) >= 3
    # the defaults draw the same images and masks as before boxes existed (notebook 10 relies on them)
    default = ShapesOnPhotos("test", size=32, length=8)
    explicit = ShapesOnPhotos("test", size=32, length=8, radius=(0.08, 0.22))
    assert torch.equal(default.masks, explicit.masks)
    with pytest.raises(ValueError, match="radius"):
        ShapesOnPhotos("train", size=32, length=2, radius=(0.3, 0.6))


def test_mean_average_precision_is_cocos():
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]), "labels": torch.tensor([1])}]
    perfect = [{"boxes": targets[0]["boxes"], "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    assert mean_average_precision(perfect, targets) == {"map": pytest.approx(100.0), "map_50": pytest.approx(100.0)}
    shifted = [{"boxes": torch.tensor([[13.0, 10.0, 33.0, 30.0]]), "scores": torch.tensor([0.9]),
                "labels": torch.tensor([1])}]
    result = mean_average_precision(shifted, targets)  # IoU 17/23 = 0.74: a hit at 0.5, a miss from 0.75 on
    assert result["map_50"] == pytest.approx(100.0) and result["map"] == pytest.approx(100.0 * 5 / 10)
    wrong_class = [{**shifted[0], "labels": torch.tensor([2])}]
    assert mean_average_precision(wrong_class, targets)["map_50"] == pytest.approx(0.0)


def test_a_short_run_teaches_fcos_the_shapes():
    torch.manual_seed(0)
    task = dict(size=32, radius=(0.1, 0.3), max_shapes=2)
    train, test = ShapesOnPhotos("train", length=128, **task), ShapesOnPhotos("test", length=32, **task)
    model = build_detector("resnet20", 4, neck_channels=32, num_convs=1, score_thresh=0.05)
    before = evaluate_detector(model, test)
    history = train_detector(model, train, test, epochs=3, batch_size=16, lr=3e-3, evaluate_every=3)
    assert history[-1]["loss"] < 0.75 * history[0]["loss"]
    assert history[-1]["map_50"] > before["map_50"] + 3
