"""Hooks that always come off, feature maps, filters, per-stage statistics, and the display convention."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import minibones  # noqa: E402
from minibones import viz  # noqa: E402


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return minibones.create_model("resnet20").eval()


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_capture_records_stages_and_named_layers_then_removes_its_hooks(resnet20):
    x = torch.randn(2, 3, 32, 32)
    with viz.capture(resnet20, ["conv3_x", "stages.conv4_x.2.relu2"]) as acts:
        assert hook_count(resnet20) == 2
        resnet20(x)
    assert hook_count(resnet20) == 0
    assert acts["conv3_x"].shape == (2, 32, 16, 16) and not acts["conv3_x"].requires_grad
    with torch.no_grad():
        assert torch.equal(acts["stages.conv4_x.2.relu2"], resnet20.forward_features(x))


def test_capture_removes_its_hooks_even_when_the_forward_pass_fails(resnet20):
    with pytest.raises(ValueError, match="expects 3 channels"):
        with viz.capture(resnet20, "conv2_x"):
            resnet20(torch.randn(1, 1, 32, 32))
    assert hook_count(resnet20) == 0


def test_unknown_layer_suggests_close_names(resnet20):
    with pytest.raises(ValueError, match=r"no stage or layer named 'conv3x'.*Did you mean 'conv3_x'"):
        with viz.capture(resnet20, "conv3x"):
            pass


def test_layer_outputs_stop_the_forward_pass_at_the_last_wanted_layer(resnet20):
    calls = []
    handle = resnet20.stages.conv4_x.register_forward_hook(lambda *args: calls.append(1))
    try:
        outputs = viz.layer_outputs(resnet20, torch.randn(1, 3, 32, 32), ["conv1", "conv2_x"])
    finally:
        handle.remove()
    assert calls == [] and set(outputs) == {"conv1", "conv2_x"}
    assert hook_count(resnet20) == 0


def test_vit_stages_come_back_as_grids_and_blocks_as_tokens():
    vit = minibones.create_model("vit_tiny_cifar").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        grid = viz.stage_or_layer_output(vit, x, "block3")
        tokens = viz.layer_outputs(vit, x, ["block3"])["block3"]
    assert grid.shape == (1, 128, 8, 8) and tokens.shape == (1, 65, 128)
    assert torch.equal(grid, tokens[:, 1:].transpose(1, 2).reshape(1, 128, 8, 8))


def test_strongest_channels_come_first():
    activation = torch.zeros(4, 2, 2)
    activation[2] = 3.0
    activation[0] = -2.0  # strength is the mean absolute value
    activation[3] = 1.0
    assert viz.strongest_channels(activation, 3) == [2, 0, 3]


def test_stage_statistics_describe_every_stage(resnet20):
    rows = viz.stage_statistics(resnet20, "cat")
    assert [r["name"] for r in rows] == ["conv1", "conv2_x", "conv3_x", "conv4_x"]
    assert [r["shape"] for r in rows] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert all(r["negative"] == 0 and 0 < r["zeros"] < 1 for r in rows)  # after a ReLU: sparse, never negative


def test_feature_grid_filters_and_stage_comparison_are_figures(resnet20):
    vit = minibones.create_model("vit_tiny_cifar").eval()
    figures = [
        viz.feature_grid(resnet20, "cat", "conv2_x", channels=8),
        viz.first_layer_filters(resnet20),
        viz.first_layer_filters(vit),  # the patch embedding's 4x4 kernels
        viz.compare_stages({"resnet20": resnet20, "vit": vit}, "astronaut"),
    ]
    assert len(figures[0].axes) >= 9 and figures[1].axes[0].images[0].get_array().shape == (3, 3, 3)
    assert figures[2].axes[0].images[0].get_array().shape == (4, 4, 3)
    assert len(figures[3].axes) == 2 * 5 + 1  # photo + 4 stages per row, one shared colour bar
    for fig in figures:
        plt.close(fig)


def test_photos_are_normalised_with_each_models_own_statistics(resnet20):
    x, image = viz.as_input(resnet20, "cat")
    assert x.shape == (1, 3, 32, 32) and image.shape == (32, 32, 3)
    restored = viz.to_image(x, resnet20.config.mean, resnet20.config.std)
    assert np.abs(restored * 255 - image).max() < 1.0
    with pytest.raises(ValueError, match=r"expected one normalised image shaped \(1, 3, H, W\)"):
        viz.as_input(resnet20, torch.randn(2, 3, 32, 32))


def test_one_colour_scale_and_one_sign_convention():
    values = torch.tensor([[-2.0, 0.0], [1.0, 400.0]])
    normalised = viz.normalize_map(values, percentile=50)  # the median |value| (1.5) becomes 1
    assert normalised[0, 0] == -1.0 and normalised[0, 1] == 0 and normalised[1, 1] == 1.0
    assert normalised[1, 0] == pytest.approx(1 / 1.5)
    rgba = viz.overlay_rgba(normalised, normalized=True)
    assert rgba[0, 1, 3] == 0  # zero is fully transparent
    assert rgba[1, 1, 0] > rgba[1, 1, 2] and rgba[0, 0, 2] > rgba[0, 0, 0]  # red for positive, blue for negative
    assert not viz.normalize_map(torch.zeros(3, 3)).any()
