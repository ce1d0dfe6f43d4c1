"""Attributions through captum: every method gives a map or says why not, in one display."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import minibones  # noqa: E402
from minibones import viz  # noqa: E402

FAST = dict(steps=8, internal_batch_size=4, samples=2, window=8)


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return minibones.create_model("resnet20").eval()


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = minibones.create_model("vit_tiny_cifar").eval()
    nn.init.normal_(model.head.fc.weight, std=0.02)  # torchvision's init zeroes the classifier: no gradient at all
    return model


@pytest.mark.parametrize("method", viz.METHODS)
def test_every_method_gives_a_map_at_input_resolution_on_resnet(resnet20, method):
    x, _ = viz.as_input(resnet20, "cat")
    result = viz.attribute(resnet20, x, method, target=3, **FAST)
    if method.startswith("attention"):
        assert not result.ok and "only for ViT" in result.note
    else:
        assert result.ok and result.map.shape == (32, 32)
        assert torch.isfinite(result.map).all() and result.map.abs().sum() > 0


def test_unsigned_methods_are_never_negative(resnet20):
    x, _ = viz.as_input(resnet20, "cat")
    for method in ["saliency", "smoothgrad", "gradcam"]:
        assert viz.attribute(resnet20, x, method, target=3, **FAST).map.min() >= 0


def test_integrated_gradients_and_deeplift_are_complete_on_a_relu_network(resnet20):
    # Completeness: the attributions sum to f(x) - f(baseline); DeepLift's rescale rule is exact
    # on ReLU and max pooling, Integrated Gradients up to its Riemann sum.
    x, _ = viz.as_input(resnet20, "cat")
    deeplift = viz.attribute(resnet20, x, "deeplift", target=3)
    assert deeplift.ok and deeplift.delta < 1e-4 and deeplift.note is None
    ig = viz.attribute(resnet20, x, "integrated_gradients", target=3, steps=64, internal_batch_size=16)
    assert ig.delta < 0.05


@pytest.mark.parametrize("name, activation", [("vit_tiny_cifar", "GELU"), ("efficientnet_b0", "SiLU"),
                                              ("mobilenet_v3_small", "Hardswish")])
def test_guided_backprop_is_refused_on_activations_it_has_no_rule_for(name, activation):
    model = minibones.create_model(name, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    for method in ["guided_backprop", "guided_gradcam"]:
        result = viz.attribute(model, x, method, target=1)
        assert not result.ok and "rule for ReLU and ReLU6 only" in result.note and activation in result.note


def test_guided_backprop_and_guided_gradcam_equal_captums_on_a_relu_network(resnet20):
    from captum.attr import GuidedBackprop, GuidedGradCam

    x, _ = viz.as_input(resnet20, "cat")
    ours = viz.attribution.guided_gradients(resnet20, x, 3)
    theirs = GuidedBackprop(resnet20).attribute(x.clone().requires_grad_(True), target=3)
    assert torch.equal(ours, theirs)
    guided_gradcam = viz.attribute(resnet20, x, "guided_gradcam", target=3)
    theirs = GuidedGradCam(resnet20, resnet20.get_submodule("stages.conv4_x")).attribute(
        x.clone().requires_grad_(True), target=3, interpolate_mode="bilinear")
    assert guided_gradcam.layer == "conv4_x"
    assert torch.allclose(guided_gradcam.map, theirs[0].sum(0).detach(), atol=1e-7)
    assert not [m for m in resnet20.modules() if m._backward_hooks]  # every hook removed


def test_gradcam_equals_captums_layer_gradcam_and_its_copy_survives_an_in_place_relu(resnet20):
    from captum.attr import LayerAttribution, LayerGradCam

    x, _ = viz.as_input(resnet20, "cat")
    ours = viz.attribute(resnet20, x, "gradcam", target=3, layer="conv3_x").map
    layer = resnet20.get_submodule("stages.conv3_x")
    theirs = LayerGradCam(resnet20, layer).attribute(x.clone().requires_grad_(True), target=3, relu_attributions=True)
    assert torch.equal(ours, LayerAttribution.interpolate(theirs, (32, 32), interpolate_mode="bilinear")[0, 0])
    # a network that rectifies the layer's output in place: the map reads the output before it
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    cam, depends = viz.grad_cam(net, net[0], x, target=1)
    before_relu = net[0](x).detach()  # (2, 4, 8, 8); d logit_1 / d map = 1/64 on channel 1 where positive
    expected = torch.relu(((before_relu[:, 1] > 0).float().mean((1, 2)) / 64)[:, None, None] * before_relu[:, 1])
    assert depends and cam.shape == (2, 8, 8) and torch.allclose(cam, expected)


def small_net(activation):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), activation(), nn.Conv2d(8, 8, 3, padding=1), activation(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_relu6_is_guided_where_captum_returns_the_plain_gradient():
    from captum.attr import GuidedBackprop, Saliency

    relu6, relu = small_net(nn.ReLU6), small_net(nn.ReLU)  # the same weights
    x = 0.5 * torch.randn(1, 3, 16, 16)
    assert relu6[:2](x).max() < 6  # no unit saturates: ReLU6 acts as ReLU here
    plain = Saliency(relu6).attribute(x.clone().requires_grad_(True), target=1, abs=False)
    assert torch.equal(GuidedBackprop(relu6).attribute(x.clone().requires_grad_(True), target=1), plain)  # captum
    guided = viz.attribution.guided_gradients(relu6, x, 1)
    assert not torch.allclose(guided, plain)
    assert torch.allclose(guided, GuidedBackprop(relu).attribute(x.clone().requires_grad_(True), target=1))
    lite = minibones.create_model("efficientnet_lite0", num_classes=10).eval()  # ReLU6 only: both guided maps drawn
    assert viz.attribution.unguided_activations(lite) == [] and viz.non_relu_activations(lite) == ["ReLU6"]
    assert all(viz.attribute(lite, torch.randn(1, 3, 32, 32), m, target=1).ok
               for m in ["guided_backprop", "guided_gradcam"])


def test_signed_methods_are_drawn_diverging_and_the_others_sequential(resnet20):
    assert set(viz.attribution.SIGNED_METHODS) == {"integrated_gradients", "occlusion", "guided_backprop", "deeplift",
                                       "guided_gradcam"}
    x, image = viz.as_input(resnet20, "cat")
    signed = viz.attribute(resnet20, x, "integrated_gradients", target=3, **FAST)
    assert signed.signed and signed.map.min() < 0
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="signed=True"):
        viz.show_overlay(ax, image, signed.map, signed=False)
    signed.show(ax, image)
    plt.close(fig)
    rgba = viz.overlay_rgba(torch.tensor([[0.0, 1.0]]), normalized=True, signed=False)
    assert rgba[0, 0, 3] == 0 and rgba[0, 1, 3] > 0  # transparent at zero, opaque at the top


def test_mass_inside_a_region_is_the_share_of_the_positive_map():
    values = torch.tensor([[1.0, 3.0], [-5.0, 0.0]])
    left = viz.attribution.region_mask((2, 2), cols=(0, 0.5))
    assert left.tolist() == [[True, False], [True, False]]
    assert viz.attribution.mass_inside(values, left) == pytest.approx(0.25)  # the negative value counts for nothing
    with pytest.raises(ValueError, match="boolean mask"):
        viz.attribution.mass_inside(values, left.float())
    with pytest.raises(ValueError, match="fractions"):
        viz.attribution.region_mask((2, 2), rows=(0.5, 0.5))


def test_top_classes_are_the_most_probable_on_the_input_as_given(resnet20):
    x, _ = viz.as_input(resnet20, "cat")
    top = viz.attribution.top_classes(resnet20, x, 3)
    with torch.no_grad():
        probabilities = resnet20(x).softmax(1)[0]
    assert [p.index for p in top] == probabilities.topk(3).indices.tolist()
    assert top[0].probability == pytest.approx(float(probabilities.max()))


def test_deeplift_without_rules_shows_its_convergence_delta_instead_of_a_map(vit):
    x, _ = viz.as_input(vit, "cat")
    result = viz.attribute(vit, x, "deeplift", target=3)
    assert "no rule for GELU" in result.note and result.delta > viz.attribution.DEEPLIFT_MAX_DELTA
    assert not result.ok and "Not drawn" in result.note


def test_vit_gradcam_reshapes_patch_tokens_and_avoids_the_last_block(vit):
    x, _ = viz.as_input(vit, "cat")
    result = viz.attribute(vit, x, "gradcam", target=3)
    assert result.layer == "blocks.6" and "no gradient" in result.note  # block7 is the last block
    assert result.ok and result.map.shape == (32, 32) and result.map.min() >= 0 and result.map.max() > 0
    # the reason: the last block's patch tokens do not reach the class token
    with viz.capture(vit, "block7", detach=False) as store:
        logits = vit(x)
    (grad,) = torch.autograd.grad(logits[0, 3], store["block7"])
    assert grad[0, 1:].abs().max() == 0 and grad[0, 0].abs().max() > 0
    middle = viz.attribute(vit, x, "gradcam", target=3, layer="block3")
    assert middle.layer == "block3" and middle.note is None
    assert viz.attribute(vit, x, "gradcam", target=3, layer=-3).layer == "block3"  # a stage index


def test_attention_rollout_follows_abnar_and_zuidema():
    identity = torch.eye(5).expand(1, 2, 5, 5)  # attention to oneself only: nothing flows
    assert torch.allclose(viz.attention_rollout([identity, identity])[0], torch.eye(5))
    uniform = torch.full((1, 2, 5, 5), 0.2)
    rollout = viz.attention_rollout([uniform] * 3)
    assert torch.allclose(rollout.sum(-1), torch.ones(1, 5))  # rows stay distributions
    # one block: half residual identity, half uniform attention
    assert torch.allclose(viz.attention_rollout([uniform])[0], 0.5 * torch.eye(5) + 0.1)


def test_vit_attention_maps_come_from_the_explicit_path(vit):
    x, _ = viz.as_input(vit, "cat")
    logits, attentions = viz.attention_maps(vit, x)
    assert len(attentions) == 8 and attentions[0].shape == (1, 4, 65, 65)
    with torch.no_grad():
        assert torch.allclose(logits, vit(x), atol=1e-5)
    for method in ["attention", "attention_rollout"]:
        result = viz.attribute(vit, x, method)
        assert result.ok and result.map.shape == (32, 32) and "not class-specific" in result.note


def test_the_grid_draws_methods_by_backbones_with_notes_where_a_method_does_not_apply(resnet20, vit):
    fig = viz.attribution_grid({"resnet20": resnet20, "vit": vit}, "cat",
                               methods=["saliency", "guided_backprop", "attention_rollout"], **FAST)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 4 * 2
    notes = [ax for ax in panels if ax.texts]
    assert len(notes) == 2  # guided backprop on ViT (GELU), attention rollout on ResNet
    plt.close(fig)
    fig = viz.plot_attention(vit, "cat", heads=2)
    plt.close(fig)


def test_wrong_inputs_say_what_is_expected(resnet20):
    with pytest.raises(ValueError, match="unknown method 'gradcam\\+\\+'"):
        viz.attribute(resnet20, torch.randn(1, 3, 32, 32), "gradcam++")
    with pytest.raises(ValueError, match=r"explains one image: expected \(1, 3, H, W\)"):
        viz.attribute(resnet20, torch.randn(2, 3, 32, 32), "saliency")
    with pytest.raises(ValueError, match="attention maps need a ViT"):
        viz.attention_maps(resnet20, torch.randn(1, 3, 32, 32))


def test_a_map_that_is_exactly_zero_is_refused_with_the_reason():
    torch.manual_seed(0)
    vit = minibones.create_model("vit_tiny_cifar")  # torchvision's init: the classifier starts at zero
    result = viz.attribute(vit, torch.randn(1, 3, 32, 32), "saliency", target=3)
    assert not result.ok and "exactly zero" in result.note
