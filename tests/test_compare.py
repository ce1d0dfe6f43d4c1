"""The comparison table counts what it reports: parameters, multiply-adds, activation memory, time."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import minibones
from minibones.compare import (
    ModelReport,
    activation_bytes,
    compare_models,
    count_flops,
    count_macs,
    format_table,
    plot_tradeoffs,
    seconds_per_batch,
    seconds_per_training_step,
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
    images = torch.randn(8, 3, 32, 32)
    models = [minibones.create_model(name).eval() for name in ("resnet20", "vit_tiny_cifar")]
    with torch.no_grad():
        labels = models[0](images).argmax(1)  # resnet20's own predictions: all right for it
        vit_top1 = 100 * float((models[1](images).argmax(1) == labels).float().mean())
    reports = compare_models(models, data=[(images, labels)], device="cpu", rounds=1, batch_size=2)
    assert [r.name for r in reports] == ["resnet20", "vit_tiny_cifar"]
    for report in reports:
        assert report.params == minibones.count_parameters(minibones.create_model(report.name))
        assert report.gflops > 0 and report.activation_mb > 0 and report.latency_ms > 0 and report.throughput > 0
        assert report.published_top1 is None  # teaching variants: no weights
    assert reports[0].accuracy == 100 and reports[1].accuracy == pytest.approx(vit_top1)
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


def test_seconds_per_batch_times_inference_and_gives_the_model_back_its_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5)).train()
    seconds = seconds_per_batch(model, 8, batch_size=2, rounds=2)
    assert 0 < seconds < 1 and model.training


def test_seconds_per_training_step_times_a_real_step():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    before = model[1].weight.detach().clone()
    seconds = seconds_per_training_step(model, torch.randn(4, 3, 2, 2), rounds=2)
    assert 0 < seconds < 1 and not torch.equal(model[1].weight, before)  # the step updated the weights


def test_count_macs_is_half_the_counted_flops_for_a_model_or_one_block():
    model = minibones.build_on_meta("resnet18")
    assert model.stem.conv.weight.is_meta
    assert count_macs(model, 224) * 2 == count_flops(model, 224)
    # one 3x3 conv of conv3_x's first block: 128 x 64 x 9 multiply-adds at each of 28 x 28 positions
    conv = model.stages.conv3_x[0].conv1
    assert count_macs(conv, (1, 64, 56, 56)) == 128 * 64 * 9 * 28 * 28
