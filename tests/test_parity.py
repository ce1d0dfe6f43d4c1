"""minibones equals its reference: logits, every stage's map and Grad-CAM with random weights,
and the same predictions with the same trained checkpoint."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

import minibones
from minibones.backbone import ModelConfig
from minibones.parity import (
    compare_predictions,
    packaged_reference,
    plot_side_by_side,
    predictions_side_by_side,
    side_by_side,
)


def test_resnet18_logits_feature_maps_and_gradcam_equal_torchvisions():
    result = side_by_side("resnet18", torch.randn(1, 3, 64, 64))
    assert result.logits_error < 1e-5 and result.top5_ours == result.top5_reference
    assert result.reference_modules == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert max(result.stage_errors) < 1e-5
    assert result.gradcam_stage == "conv5_x" and result.gradcam_error < 1e-5
    assert "Grad-CAM at conv5_x" in result.summary()
    figure = plot_side_by_side(result)
    assert len(figure.axes) == 3 * 6


def test_vit_stages_are_found_as_token_grids_and_gradcam_skips_the_last_block():
    # a ViT small enough for a unit test, and torchvision's ViT of the same shape
    from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

    from minibones.models.vit import VisionTransformer
    from minibones.reference import randomize_

    torch.manual_seed(0)
    config = ModelConfig("vit_mini", "torchvision.models.vision_transformer.VisionTransformer", "test", (3, 32, 32))
    model = VisionTransformer(patch_size=8, depth=4, num_heads=2, dim=32, mlp_dim=64, config=config)
    reference = randomize_(TorchvisionViT(image_size=32, patch_size=8, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64))
    minibones.load_reference_weights(model, reference)
    result = side_by_side(model, torch.randn(1, 3, 32, 32), reference=reference)
    assert result.logits_error < 1e-5
    assert result.reference_modules[:3] == [f"encoder.layers.encoder_layer_{i}" for i in (0, 1, 2)]
    assert max(result.stage_errors) < 1e-5
    # the last block's patch tokens never reach the class token: Grad-CAM is taken one stage earlier
    assert result.gradcam_stage == "block2" and result.gradcam_error < 1e-4


def test_predictions_side_by_side_put_the_references_next_to_ours():
    from minibones.data.photos import read_photo
    from minibones.reference import build_reference, randomize_

    torch.manual_seed(0)
    model = minibones.create_model("resnet18").eval()
    reference = randomize_(build_reference(model)).eval()
    minibones.load_reference_weights(model, reference)
    image = read_photo("coffee")
    lines = predictions_side_by_side(model, reference, image, topk=3).splitlines()
    assert len(lines) == 4 and lines[0].split("|")[0].strip() == "minibones"
    assert all(ours.strip() == theirs.strip() for ours, theirs in (line.split("|") for line in lines[1:]))
    stranger = randomize_(build_reference(model), seed=1).eval()  # other weights: other predictions
    lines = predictions_side_by_side(model, stranger, image, topk=3).splitlines()
    assert any(ours.strip() != theirs.strip() for ours, theirs in (line.split("|") for line in lines[1:]))


def test_lite0_predictions_equal_timms_loaded_with_the_same_file():
    from minibones.data.photos import PHOTOS, read_photo

    model = minibones.create_model("efficientnet_lite0", pretrained=True).eval()
    reference = packaged_reference(model)
    assert type(reference).__module__.startswith("timm.")
    matches = compare_predictions(model, reference, {name: read_photo(name) for name in PHOTOS})
    assert [m.image for m in matches] == list(PHOTOS)
    assert all(m.same_top5 for m in matches)
    assert max(m.max_probability_difference for m in matches) < 1e-5
    cat = next(m for m in matches if m.image == "cat")
    assert cat.top5_ours[0].label == "tiger cat"


def test_packaged_reference_says_what_to_install_without_timm(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with torch.device("meta"):
        model = minibones.create_model("efficientnet_lite0")
    with pytest.raises(ImportError, match=r"pip install 'minibones\[test\]'"):
        packaged_reference(model)
    with pytest.raises(ValueError, match="no weights installed"):
        packaged_reference(minibones.create_model("resnet20"))
