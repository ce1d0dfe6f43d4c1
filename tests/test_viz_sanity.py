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
    message = "guided_backprop does not apply to mobilenet_v3_small.*only overrides nn.ReLU"
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
    assert 0 <= good.deletion_auc <= 1 and np.all(np.diff(bad.insertion[:-1]) == 0)
    with pytest.raises(ValueError, match="upsample it first"):
        viz.deletion_insertion(model, x, faithful[:8, :8], target=0)


def test_sanity_figures(resnet20):
    fig = viz.plot_model_randomization(resnet20, "cat", methods=("gradcam", "guided_backprop"))
    assert any(ax.get_lines() for ax in fig.axes)
    plt.close(fig)
    fig = viz.plot_deletion_insertion(resnet20, "cat", methods=("saliency", "gradcam"), steps=4)
    assert len(fig.axes[-1].get_lines()) == 2
    plt.close(fig)
