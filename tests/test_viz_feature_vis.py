"""Activation maximization and embeddings of pooled features."""

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
def test_image_parameterizations_give_images_in_0_1(fourier, decorrelate):
    image = viz.ImageParameterization(16, fourier=fourier, decorrelate=decorrelate)()
    assert image.shape == (1, 3, 16, 16) and image.min() >= 0 and image.max() <= 1


def test_activation_maximization_raises_the_channels_activation(resnet20):
    image, history = viz.maximize_activation(resnet20, "conv3_x", channel=5, steps=12, lr=0.1)
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
    assert history[-1] > history[0]
    assert all(p.requires_grad for p in resnet20.parameters())  # switched back on afterwards


def test_activation_maximization_reads_vit_tokens_channel_by_channel():
    vit = minibones.create_model("vit_tiny_cifar").eval()
    image, history = viz.maximize_activation(vit, "block3", channel=7, steps=3)
    assert image.shape == (3, 32, 32) and len(history) == 3
    with pytest.raises(ValueError, match="block3' has 128 channels; channel 500 does not exist"):
        viz.maximize_activation(vit, "block3", channel=500, steps=1)


def test_feature_visualization_figure(resnet20):
    fig = viz.plot_feature_visualization(resnet20, "conv2_x", channels=(0, 1), steps=2)
    assert len(fig.axes) == 2
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
