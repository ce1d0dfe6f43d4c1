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


def test_first_layer_filters_side_by_side_with_unused_filters_drawn_flat():
    torch.manual_seed(0)
    trained, random = minibones.create_model("resnet20").eval(), minibones.create_model("resnet20").eval()
    with torch.no_grad():
        viz.first_conv(trained).weight[3] = 0.0  # an unused filter
    fig = viz.first_layer_filters({"random": random, "trained": trained})
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 2 * 16
    unused = drawn[16 + 3]
    assert unused.get_title() == "3=0" and np.allclose(unused.images[0].get_array(), 0.5)
    assert drawn[16 + 4].images[0].get_array().max() == pytest.approx(1.0)  # stretched to its own range
    plt.close(fig)
    with pytest.raises(ValueError, match="'filter' or 'layer'"):
        viz.first_layer_filters(random, scale="each")


def test_first_layer_statistics_tell_grey_edges_and_colour_blobs_from_noise():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3))
    ramp = torch.linspace(-1, 1, 3).expand(3, 3)  # a soft vertical edge
    with torch.no_grad():
        net[0].weight[0] = ramp.expand(3, 3, 3)  # the same in R, G and B: brightness only
        net[0].weight[1] = torch.tensor([1.0, -1.0, 0.0]).view(3, 1, 1).expand(3, 3, 3)  # red against green, flat
        net[0].weight[2] = torch.randn(3, 3, 3, generator=torch.Generator().manual_seed(0))
    stats = viz.first_layer_statistics(net)
    assert stats["grey"][0] == pytest.approx(1.0) and stats["smooth"][0] == pytest.approx(1.0)
    assert stats["grey"][1] == pytest.approx(0.0, abs=1e-6) and stats["smooth"][1] == pytest.approx(1.0)
    assert 0.05 < stats["grey"][2] < 0.8 and stats["smooth"][2] < 0.8
    assert stats["norm"].shape == (3,)


def test_crop_field_clips_the_receptive_field_to_the_picture():
    picture = torch.arange(3 * 10 * 12, dtype=torch.float32).view(3, 10, 12)
    field = viz.ReceptiveField("x", (5, 5), (2, 2), (2, 2))
    assert torch.equal(viz.crop_field(picture, field, 2, 3), picture[:, 2:7, 4:9])  # inside: 5 x 5
    assert torch.equal(viz.crop_field(picture, field, 0, 0), picture[:, 0:3, 0:3])  # the corner: clipped
    assert viz.crop_field(picture, field, 4, 5).shape == (3, 4, 4)  # rows 6-10 and columns 8-12, clipped


def test_strongest_units_find_the_unit_that_sees_a_planted_spot(resnet20):
    pictures = [torch.full((3, 32, 32), 0.5) for _ in range(3)]
    pictures[1] = pictures[1].clone()
    pictures[1][:, 20:23, 8:11] = 1.0  # a bright spot in the second picture only
    banks = viz.strongest_units(resnet20, pictures, ["conv1", "conv3_x"])
    assert banks["conv1"].values.shape == (3, 16) and banks["conv3_x"].units.shape == (3, 32, 2)
    bank = banks["conv1"]
    channel = int((bank.values[1] - bank.values[0]).argmax())  # the channel the spot excites most
    (patch,) = bank.top_patches(channel, pictures, count=1)
    assert patch.picture == 1 and patch.pixels.shape == (3, 3, 3)  # conv1's field: 3 x 3
    i, j = patch.unit
    assert 19 <= i <= 23 and 7 <= j <= 11 and (patch.pixels == 1.0).any()
    patches = bank.top_patches(channel, pictures, count=3)
    assert [p.value for p in patches] == sorted((p.value for p in patches), reverse=True)
    assert len({p.picture for p in patches}) == 3  # one patch per picture
    with pytest.raises(ValueError, match="channel 99 does not exist"):
        bank.top_patches(99, pictures)
    with pytest.raises(ValueError, match=r"\(3, H, W\) float pictures"):
        viz.strongest_units(resnet20, [torch.zeros(32, 32)], ["conv1"])


def test_channels_are_drawn_by_a_seeded_rule_among_those_that_respond():
    values = torch.tensor([[1.0, 0.0, 2.0, 0.0, 3.0], [0.5, 0.0, 0.1, 0.0, 0.2]])  # channels 1 and 3 never respond
    bank = viz.UnitBank("x", values, torch.zeros(2, 5, 2, dtype=torch.long), (None, None))
    assert bank.responsive_channels() == [0, 2, 4]
    drawn = bank.sample_channels(2, seed=0)
    assert drawn == bank.sample_channels(2, seed=0) and set(drawn) <= {0, 2, 4} and len(set(drawn)) == 2


def test_top_patches_figure_and_the_norm_of_each_stage(resnet20):
    pictures = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    bank = viz.strongest_units(resnet20, pictures, ["conv2_x"])["conv2_x"]
    rows = [(f"ch {c}", bank.top_patches(c, pictures, 3)) for c in (0, 1, 2)]
    fig = viz.plot_top_patches(rows, labels=["a", "b", "c", "d"], blocks=2)
    assert sum(bool(ax.images) for ax in fig.axes) == 9
    plt.close(fig)
    fig = viz.compare_stages(resnet20, "cat", reduce="norm")
    assert len(fig.axes) == 5 + 1
    plt.close(fig)
    with pytest.raises(ValueError, match="'mean' or 'norm'"):
        viz.compare_stages(resnet20, "cat", reduce="max")


def test_input_shapes_records_what_each_module_reads_and_removes_its_hooks():
    import minibones
    from minibones.viz import input_shapes

    model = minibones.build_on_meta("resnet18")
    shapes = input_shapes(model, ["stages.conv3_x.0", "head.fc"], torch.zeros(2, 3, 96, 128, device="meta"))
    assert shapes == {"stages.conv3_x.0": (2, 64, 24, 32), "head.fc": (2, 512)}
    assert not any(m._forward_pre_hooks for m in model.modules())
