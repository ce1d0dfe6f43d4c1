"""Activation maximization, and embeddings of pooled features measured by nearest neighbours."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import minibones  # noqa: E402
from minibones import viz  # noqa: E402


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return minibones.create_model("resnet20").eval()


@pytest.mark.parametrize("fourier, decorrelate", [(True, True), (False, False)])
def test_image_parameterizations_give_a_batch_of_images_in_0_1(fourier, decorrelate):
    image = viz.ImageParameterization(16, fourier=fourier, decorrelate=decorrelate, batch=3)()
    assert image.shape == (3, 3, 16, 16) and image.min() >= 0 and image.max() <= 1


def test_fourier_parameterization_puts_its_steps_in_the_low_frequencies():
    # equal steps on every coefficient: after a 1/f scaling, most of the image's energy is at low frequencies
    image = viz.ImageParameterization(32, decorrelate=False, decay_power=1.0)
    with torch.no_grad():
        image.spectrum.normal_()
        pixels = torch.logit(image()[0].clamp(1e-6, 1 - 1e-6))
    power = torch.fft.rfft2(pixels).abs().pow(2).mean(0)  # (32, 17)
    fy, fx = torch.fft.fftfreq(32).abs()[:, None], torch.fft.rfftfreq(32)[None, :]
    low = (fy <= 4 / 32) & (fx <= 4 / 32)
    assert power[low].sum() > power[~low].sum()


def test_robust_transforms_keep_the_size_and_move_the_image():
    images = torch.rand(2, 3, 24, 24)
    moved = viz.transform_robustly(images, torch.Generator().manual_seed(0), pad=3)
    assert moved.shape == images.shape and not torch.allclose(moved, images)
    assert viz.transform_robustly(images, torch.Generator().manual_seed(1), pad=0).shape == images.shape


def test_activation_maximization_raises_the_channels_activation(resnet20):
    image, history = viz.maximize_activation(resnet20, "conv3_x", channel=5, steps=12, lr=0.1)
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
    assert history[-1] > history[0]
    assert all(p.requires_grad for p in resnet20.parameters())  # switched back on afterwards


def test_several_channels_are_optimised_in_one_batch_each_for_its_own(resnet20):
    result = viz.visualize_channels(resnet20, "conv3_x", [5, 9], steps=15, lr=0.1)
    assert result.images.shape == (2, 3, 32, 32) and result.history.shape == (15, 2)
    assert (result.history[-1] > result.history[0]).all()
    response = viz.channel_response(resnet20, "conv3_x", result.images, [5, 9])  # (images, channels)
    assert response.shape == (2, 2)
    assert response[0, 0] > response[1, 0] and response[1, 1] > response[0, 1]  # each image excites its own channel


def test_naive_ascent_is_the_pixel_space_without_transforms(resnet20):
    result = viz.visualize_channels(resnet20, "conv2_x", [0], steps=3, fourier=False, decorrelate=False, robust=False)
    assert result.images.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="at least one channel"):
        viz.visualize_channels(resnet20, "conv2_x", [], steps=1)


def test_activation_maximization_reads_vit_tokens_channel_by_channel():
    vit = minibones.create_model("vit_tiny_cifar").eval()
    image, history = viz.maximize_activation(vit, "block3", channel=7, steps=3)
    assert image.shape == (3, 32, 32) and len(history) == 3
    with pytest.raises(ValueError, match="block3' has 128 channels; channel 500 does not exist"):
        viz.maximize_activation(vit, "block3", channel=500, steps=1)


def test_feature_visualization_figures(resnet20):
    fig = viz.plot_feature_visualization(resnet20, "conv2_x", channels=(0, 1), steps=2)
    assert len(fig.axes) == 2
    plt.close(fig)
    rows = [viz.visualize_channels(resnet20, layer, channels, steps=1) for layer, channels in
            [("conv2_x", [0, 1, 2]), ("conv4_x", [3])]]
    fig = viz.plot_visualizations(rows)
    assert len(fig.axes) == 6 and sum(bool(ax.images) for ax in fig.axes) == 4
    plt.close(fig)


def test_pooled_features_are_what_the_classifier_reads(resnet20):
    images = torch.randn(6, 3, 32, 32)
    features = viz.pooled_features(resnet20, images, batch_size=4)
    assert features.shape == (6, 64)
    with torch.no_grad():
        logits = resnet20(images)
    assert torch.allclose(resnet20.head.fc(features), logits, atol=1e-5)
    loader = [(images[:3], torch.zeros(3)), (images[3:], torch.zeros(3))]  # a DataLoader's (images, labels)
    assert torch.allclose(viz.pooled_features(resnet20, loader), features)


def test_vit_pooled_features_are_the_class_token():
    vit = minibones.create_model("vit_tiny_cifar").eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        cls = vit.forward_features(images)[:, 0]
    assert torch.allclose(viz.pooled_features(vit, images), cls)


def test_stage_features_average_every_stage_over_its_positions(resnet20):
    images = torch.randn(5, 3, 32, 32)
    features = viz.stage_features(resnet20, images, batch_size=2)
    with torch.no_grad():
        maps = resnet20.forward_stages(images)
    assert [f.shape for f in features] == [(5, m.shape[1]) for m in maps]
    assert torch.allclose(features[-1], maps[-1].mean((2, 3)), atol=1e-6)


def test_knn_accuracy_reads_whether_classes_lie_together():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    apart = centres[labels] + torch.randn(60, 2, generator=generator)
    mixed = torch.randn(60, 2, generator=generator)
    assert viz.knn_accuracy(apart[:40], labels[:40], apart[40:], labels[40:]) == 1.0
    assert viz.knn_accuracy(mixed[:40], labels[:40], mixed[40:], labels[40:]) < 0.7
    scaled = apart * torch.tensor([1e-6, 1e3])  # standardised first: the scale of a feature does not matter
    assert viz.knn_accuracy(scaled[:40], labels[:40], scaled[40:], labels[40:]) == 1.0
    with pytest.raises(ValueError, match="one label per vector"):
        viz.knn_accuracy(apart, labels[:10], apart, labels)


def test_embeddings_project_to_two_dimensions_and_plot_by_class(resnet20):
    features = torch.randn(40, 64)
    assert viz.embed_2d(features, "pca").shape == (40, 2)
    assert viz.embed_2d(features, "tsne").shape == (40, 2)
    with pytest.raises(ValueError, match="'pca' or 'tsne'"):
        viz.embed_2d(features, "umap")
    images, labels = torch.randn(24, 3, 32, 32), torch.arange(24) % 3
    fig = viz.plot_embedding([resnet20], images, labels, class_names=["a", "b", "c"])
    assert len(fig.axes) == 2 and len(fig.axes[0].collections) == 3
    plt.close(fig)
    fig = viz.plot_feature_embedding({"a": torch.randn(24, 5), "b": torch.randn(24, 7)}, labels, methods=("pca",),
                                     titles={"a": "5-NN accuracy 1.0%"})
    assert len(fig.axes) == 2 and "5-NN accuracy" in fig.axes[0].get_title()  # side by side with one projection
    plt.close(fig)
