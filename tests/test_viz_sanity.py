"""Sanity checks of the maps: cascading model randomization and deletion/insertion curves."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import minibones  # noqa: E402
from minibones import viz  # noqa: E402


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return minibones.create_model("resnet20").eval()


def test_randomization_cascades_from_the_classifier_down(resnet20):
    assert viz.cascading_layers(resnet20) == ["head", "stages.conv4_x", "stages.conv3_x", "stages.conv2_x", "stem"]


def test_the_cascade_covers_every_trained_block_not_only_the_named_stages():
    lite = minibones.create_model("efficientnet_lite0")  # feature_info names stage1, 2, 3, 5 and conv_head only
    layers = viz.cascading_layers(lite)
    assert layers == ["head", "conv_head"] + [f"stages.stage{k}" for k in range(7, 0, -1)] + ["stem"]
    covered = {name for name, _ in lite.named_parameters() if any(name.startswith(layer + ".") for layer in layers)}
    assert covered == {name for name, _ in lite.named_parameters()}


def test_guided_backprop_ignores_the_classifier_and_the_gradient_does_not(resnet20):
    # Adebayo et al. 2018, figure 2: guided backprop barely changes when the top layers are
    # re-initialised (it reconstructs the image), the plain gradient does.
    x, _ = viz.as_input(resnet20, "cat")
    before = {k: v.clone() for k, v in resnet20.state_dict().items()}
    _, guided = viz.model_randomization_test(resnet20, x, "guided_backprop", target=3, layers=["head"])
    _, gradient = viz.model_randomization_test(resnet20, x, "saliency", target=3, layers=["head"])
    assert guided[0].spearman_abs > 0.9 and gradient[0].spearman_abs < 0.7
    assert all(torch.equal(before[k], v) for k, v in resnet20.state_dict().items())  # the model itself is untouched


def test_randomization_of_a_method_that_does_not_apply_says_why():
    model = minibones.create_model("mobilenet_v3_small", num_classes=10).eval()
    message = "guided_backprop does not apply to mobilenet_v3_small.*rule for ReLU and ReLU6 only"
    with pytest.raises(ValueError, match=message):
        viz.model_randomization_test(model, torch.randn(1, 3, 32, 32), "guided_backprop")


class TopLeftDetector(nn.Module):
    """Class 0 is 'bright top-left 8x8 corner'; nothing else in the image matters."""

    def forward(self, x):
        score = 10 * x[:, :, :8, :8].mean((1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], 1)


def test_deletion_and_insertion_reward_a_faithful_map():
    model = TopLeftDetector()
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, :8, :8] = 1.0
    faithful = torch.zeros(32, 32)
    faithful[:8, :8] = 1.0
    good = viz.deletion_insertion(model, x, faithful, target=0, steps=16)
    bad = viz.deletion_insertion(model, x, -faithful, target=0, steps=16)  # the corner last
    assert good.fractions[0] == 0 and good.fractions[-1] == 1
    assert good.deletion[0] == pytest.approx(good.insertion[-1])  # both are p(class | x)
    assert good.deletion[1] == pytest.approx(0.5)  # the corner is 1/16 of the image: gone after one step
    assert good.deletion_auc < bad.deletion_auc and good.insertion_auc > bad.insertion_auc
    # the trapezoids: one step from p(class | x) down to 1/2, then 1/2 for the other fifteen sixteenths
    assert good.deletion_auc == pytest.approx((good.deletion[0] + 0.5) / 2 / 16 + 0.5 * 15 / 16)
    assert np.all(np.diff(bad.insertion[:-1]) == 0)
    with pytest.raises(ValueError, match="upsample it first"):
        viz.deletion_insertion(model, x, faithful[:8, :8], target=0)


def test_model_randomization_runs_every_method_on_one_copy_and_keeps_the_target(resnet20):
    x, image = viz.as_input(resnet20, "cat")
    run = viz.sanity.model_randomization(resnet20, x, ("gradcam", "guided_backprop"), target=3, layers=["head", "stem"])
    assert run.target == 3 and run.layers == ["head", "stem"]
    assert set(run.original) == {"gradcam", "guided_backprop"} and all(len(m) == 2 for m in run.maps.values())
    assert all(len(rho) == 2 for rho in run.spearman_abs.values())
    # Adebayo et al.: a new classifier changes Grad-CAM (its channel weights come from it), not guided backprop
    assert run.spearman_abs["gradcam"][0] < 0.9 < run.spearman_abs["guided_backprop"][0]
    same = viz.model_randomization_test(resnet20, x, "gradcam", target=3, layers=["head", "stem"])[1]
    assert [step.spearman_abs for step in same] == pytest.approx(list(run.spearman_abs["gradcam"]))
    fig = viz.plot_model_randomization(run, image, model=resnet20)
    assert len(fig.axes) == 2 * 3
    plt.close(fig)
    rho = np.stack([[run.spearman_abs[m] for m in run.original]] * 2)  # (images, methods, layers)
    fig = viz.sanity.plot_randomization_curves(rho, list(run.original), run.layers, resnet20)
    assert len(fig.axes[0].get_lines()) == 2 + 1  # one per method, and the zero line
    plt.close(fig)


def test_faithfulness_over_images_ranks_a_faithful_map_above_a_random_one():
    model = TopLeftDetector()
    images = []
    for seed, brightness in enumerate((0.1, 0.2, 0.3)):  # class 0 at 73% to 95%: far from saturated
        x = 0.02 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
        x[:, :, :8, :8] += brightness
        images.append(x)
    scores = viz.sanity.faithfulness(model, images, ["saliency", "random"], targets=[0, 0, 0], curve_steps=8)
    assert scores.deletion.shape == (3, 2, 9) and scores.deletion_auc.shape == (3, 2)
    assert np.all(scores.deletion_auc[:, 0] < scores.deletion_auc[:, 1])
    assert np.all(scores.insertion_auc[:, 0] > scores.insertion_auc[:, 1])
    fig = viz.sanity.plot_faithfulness(scores)
    plt.close(fig)


def test_bootstrap_ranking_says_how_often_the_order_survives_resampling():
    rng = np.random.default_rng(0)
    clear = np.column_stack([rng.normal(0.2, 0.01, 20), rng.normal(0.5, 0.01, 20)])  # method 1 always higher
    ranking = viz.sanity.bootstrap_ranking(clear, higher_is_better=True, resamples=200)
    assert list(ranking.order) == [1, 0] and ranking.same_order == 1.0 and list(ranking.ahead) == [1.0]
    assert ranking.low[1] < ranking.mean[1] < ranking.high[1]
    assert list(viz.sanity.bootstrap_ranking(clear, higher_is_better=False, resamples=50).order) == [0, 1]
    noise = rng.normal(0, 1, (20, 2))  # no difference: either order, about half the time
    assert 0.2 < viz.sanity.bootstrap_ranking(noise, higher_is_better=True, resamples=400).same_order < 0.8
    groups = np.repeat(np.arange(5), 4)  # 5 photographs, 4 crops each: 5 units, not 20
    grouped = viz.sanity.bootstrap_ranking(noise, higher_is_better=True, resamples=50, groups=groups)
    assert grouped.sem == pytest.approx(noise.std(0, ddof=1) / np.sqrt(5))


def test_perturbed_images_delete_to_the_mean_and_insert_into_a_blur():
    x = torch.randn(1, 3, 16, 16)
    ranking = torch.arange(256.0).view(16, 16)  # the bottom rows first
    deleted, inserted = viz.sanity.perturbed_images(x, ranking, [0.0, 0.5, 1.0])
    assert torch.equal(deleted[0], x[0]) and not deleted[2].any() and torch.equal(inserted[2], x[0])
    assert not deleted[1, :, 8:].any() and torch.equal(deleted[1, :, :8], x[0, :, :8])
    assert torch.equal(inserted[1, :, 8:], x[0, :, 8:])


def test_sanity_figures(resnet20):
    fig = viz.plot_deletion_insertion(resnet20, "cat", methods=("saliency", "gradcam"), curve_steps=4)
    assert len(fig.axes[-1].get_lines()) == 2
    plt.close(fig)


def test_more_photographs_side_by_side_and_dataset_images():
    from minibones.data import Data, ImageTensors
    from minibones.data.photos import MORE_PHOTOS, dataset_inputs, load_photo, side_by_side

    for name in MORE_PHOTOS:
        assert load_photo(name, size=32).tensor.shape == (1, 3, 32, 32)
    pair = side_by_side("cat", "coffee", 32)
    assert pair.image.shape == (32, 64, 3) and pair.tensor.shape == (1, 3, 32, 64)
    assert torch.equal(pair.tensor[..., :32], load_photo("cat", 32).tensor)
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 4, 4).contiguous()
    split = ImageTensors(images, torch.zeros(10, dtype=torch.long))
    data = Data("toy", split, split, ["a"], (0.0,) * 3, (1.0,) * 3, 4, "a test")
    inputs = dataset_inputs(data, 4, mean=(0.0,) * 3, std=(1.0,) * 3)
    assert [round(float(x[0, 0, 0, 0]) * 255) for x in inputs] == [0, 3, 6, 9]  # spread over the split
    with pytest.raises(ValueError, match="positive whole number"):
        dataset_inputs(data, 0)
