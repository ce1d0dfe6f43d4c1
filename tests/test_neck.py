"""Backbone + neck + head: an FPN on every family, equal to torchvision's, and a segmenter that learns."""

import math
from collections import OrderedDict

import pytest
import torch

import minibones
from minibones.backbone import ModelConfig
from minibones.neck import (
    FPN,
    ShapesOnPhotos,
    PyramidBackbone,
    SimpleFeaturePyramid,
    build_segmenter,
    evaluate_segmenter,
    pyramid_levels,
    train_segmenter,
)
from minibones.registry import _BUILDERS

# the smallest variant of each family (a family is a file in minibones/models)
SMALL = ["resnet18", "vgg11", "googlenet", "inception_v3", "xception", "efficientnet_b0",
         "mobilenet_v3_small", "mobilenet_v2", "convnext_tiny", "vit_b_32", "vit_tiny_cifar", "resnet20"]


def one_small_variant_per_family() -> list[str]:
    families = {}
    for name in SMALL:
        if name in _BUILDERS:
            families.setdefault(_BUILDERS[name].__module__, []).append(name)
    missing = {builder.__module__ for builder in _BUILDERS.values()} - set(families)
    assert not missing, f"add a small variant of {missing} to SMALL"
    return [name for names in families.values() for name in names]


def test_fpn_equals_torchvisions_feature_pyramid_network():
    from torchvision.ops import FeaturePyramidNetwork

    reference = FeaturePyramidNetwork([64, 128, 256, 512], 32)
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter)
    fpn = FPN([64, 128, 256, 512], 32)
    minibones.load_reference_weights(fpn, reference)
    features = [torch.randn(2, c, s, s) for c, s in zip([64, 128, 256, 512], [31, 16, 8, 4])]  # odd sizes too
    expected = reference(OrderedDict((str(i), f) for i, f in enumerate(features)))
    for ours, theirs in zip(fpn(features), expected.values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_the_neck_reads_c2_to_c5_of_a_resnet():
    backbone = minibones.create_model("resnet18")
    assert pyramid_levels(backbone) == [1, 2, 3, 4]  # conv2_x .. conv5_x; the stride-2 conv1 is left out
    assert isinstance(PyramidBackbone(backbone).neck, FPN)


def test_a_plain_vit_gets_a_simple_feature_pyramid_at_strides_4_to_32():
    from minibones.models.vit import VisionTransformer

    config = ModelConfig("vit_mini", "none", "test", (3, 64, 64))
    vit = VisionTransformer(patch_size=16, depth=4, num_heads=2, dim=32, mlp_dim=64, config=config)
    pyramid = PyramidBackbone(vit, out_channels=8).eval()
    assert isinstance(pyramid.neck, SimpleFeaturePyramid) and pyramid.strides == [4, 8, 16, 32]
    with torch.no_grad():
        maps = pyramid(torch.randn(2, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(2, 8, 16, 24), (2, 8, 8, 12), (2, 8, 4, 6), (2, 8, 2, 3)]


@pytest.mark.parametrize("name", one_small_variant_per_family())
def test_every_family_gets_a_pyramid_and_a_segmenter(name):
    size = 96  # Inception-v3 needs at least 75x75
    with torch.device("meta"):  # shapes only: no weights initialised, nothing computed
        model = build_segmenter(name, num_classes=3, neck_channels=16, head_channels=8).eval()
        x = torch.empty(2, 3, size, size)
        maps = model.backbone(x)
        logits = model(x)
    strides = model.backbone.strides
    assert len(maps) == len(strides) and strides == sorted(strides)
    assert all(m.shape[:2] == (2, 16) for m in maps)
    # each level is smaller than the previous by the ratio of their strides (to a pixel or two:
    # Inception and Xception lose borders to unpadded convs)
    widths = [m.shape[-1] for m in maps]
    assert widths[0] <= math.ceil(size / strides[0])
    for s0, w0, s1, w1 in zip(strides, widths, strides[1:], widths[1:]):
        assert abs(w0 * s0 / s1 - w1) <= 1.5, (strides, widths)
    assert logits.shape == (2, 3, size, size)


def test_shapes_on_photos_is_deterministic_and_the_test_crops_differ():
    a, b = ShapesOnPhotos("train", size=32, length=8), ShapesOnPhotos("train", size=32, length=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    test = ShapesOnPhotos("test", size=32, length=8)
    assert not torch.equal(a.images, test.images)
    assert set(a.masks.unique().tolist()) <= {0, 1, 2, 3} and (a.masks > 0).any()


def test_a_short_run_teaches_the_segmenter_the_shapes():
    torch.manual_seed(0)
    train, test = ShapesOnPhotos("train", size=32, length=128), ShapesOnPhotos("test", size=32, length=32)
    model = build_segmenter("resnet20", num_classes=4, neck_channels=16, head_channels=16)
    before = evaluate_segmenter(model, test)
    history = train_segmenter(model, train, test, epochs=3, batch_size=16, lr=3e-3)
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["pixel_accuracy"] > before["pixel_accuracy"] + 20
    assert history[-1]["mean_iou"] > before["mean_iou"] + 5
