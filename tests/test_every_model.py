"""What every registered model promises: the contract (COURSE.md, 'The library contract'),
and captum's gradient, path and rule-based methods run on it.

Each model is built once for this module (the largest take seconds to build); a test
that changes it (``reset_classifier``) gives it back as it was.

Hook-based methods (GuidedBackprop, DeepLift) break on a module used twice in one
forward or on in-place activations (PITFALLS.md); the captum tests are what keeps every
family honest about that. DeepLift has rules for ReLU but not for SiLU, GELU or
hardswish: there its attributions only approximate the output difference, so the
test records the convergence delta instead of hiding it.
"""

import pytest
import torch
from captum.attr import DeepLift, GuidedBackprop, IntegratedGradients

import minibones
from minibones.backbone import ModelConfig
from parity import small_input_size

ALL_MODELS = minibones.list_models()


def test_list_models_filters_by_pattern():
    assert minibones.list_models("resnet1*") == ["resnet101", "resnet152", "resnet18"]
    assert minibones.list_models("no_such_*") == []


def test_unknown_name_suggests_the_closest_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet5'.*'resnet50'"):
        minibones.create_model("resnet5")


# ReLU-only networks where captum's DeepLift is still not exact: its max-pool rule does not
# conserve the output difference when pooled and unpooled paths are added or concatenated
# (Inception's pool branch, Xception's pooled residual branch). Measured: deltas up to ~100%.
DEEPLIFT_NOT_EXACT = {"googlenet", "inception_v3", "xception"}


def input_size(model) -> int:
    """Small inputs keep 39 models x 6 checks quick: at 32 x 32 every CNN still has a 1 x 1
    map after its last stage, and a ViT at least one patch; larger when a model needs it."""
    return small_input_size(model, preferred=32)


@pytest.fixture(scope="module", params=ALL_MODELS)
def model(request):
    torch.manual_seed(0)
    # captum needs gradients with respect to the input only: frozen weights skip the weight gradients
    return minibones.create_model(request.param, num_classes=7).eval().requires_grad_(False)


def test_model_keeps_the_contract(model):
    config = model.config
    assert isinstance(config, ModelConfig) and config.paper and config.reference
    assert config.name in ALL_MODELS
    assert len(config.mean) == len(config.std) == 3 and config.input_size[0] == 3
    size = input_size(model)
    x = torch.randn(2, 3, size, size)
    outputs = {}  # what each stage's module returns, caught by a hook
    hooks = [model.get_submodule(info.module).register_forward_hook(
        lambda module, args, output, name=info.module: outputs.setdefault(name, output)) for info in model.feature_info]
    try:
        with torch.no_grad():
            stages = model.forward_stages(x)
            logits = model(x)
            features = model.forward_features(x)
    finally:
        for hook in hooks:
            hook.remove()
    assert logits.shape == (2, 7)
    if features.ndim == 4:  # a CNN's last map (a ViT's features are its normalised tokens, tested in test_vit.py)
        assert torch.equal(features, stages[-1])
    assert len(stages) == len(model.feature_info)
    for feature, info in zip(stages, model.feature_info):
        assert feature.shape[1] == info.channels, info
        output = outputs[info.module]
        if output.ndim == 3:  # a transformer's tokens (B, 1 + N, D): the stage is the patch tokens' grid
            output = output[:, 1:].transpose(1, 2).reshape(feature.shape)
        assert torch.equal(output, feature), f"{info.module} does not compute stage {info.name}"
    strides = [info.stride for info in model.feature_info]
    assert strides == sorted(strides)


def test_wrong_number_of_channels_says_three_are_expected(model):
    size = input_size(model)
    with pytest.raises(ValueError, match="expects 3 channels"):
        model(torch.randn(1, 1, size, size))
    with pytest.raises(ValueError, match=r"batch of images shaped \(B, 3, H, W\)"):
        model(torch.randn(3, size, size))


def small_input(model) -> torch.Tensor:
    size = input_size(model)
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_integrated_gradients_runs(model):
    x = small_input(model)
    attributions = IntegratedGradients(model).attribute(x, target=3, n_steps=4, internal_batch_size=2)
    assert attributions.shape == x.shape and torch.isfinite(attributions).all()


def test_guided_backprop_runs(model):
    x = small_input(model)
    attributions = GuidedBackprop(model).attribute(x, target=3)
    assert attributions.shape == x.shape and torch.isfinite(attributions).all()


def test_deeplift_runs_and_reports_its_convergence_delta(model, record_property):
    x = small_input(model)
    attributions, delta = DeepLift(model).attribute(x, target=3, return_convergence_delta=True)
    assert attributions.shape == x.shape and torch.isfinite(attributions).all()
    record_property("deeplift_convergence_delta", float(delta.abs().max()))
    relu_only = all(isinstance(m, torch.nn.ReLU) or not _is_activation(m) for m in model.modules())
    if relu_only and model.config.name not in DEEPLIFT_NOT_EXACT:
        # only ReLU nonlinearities: DeepLift's rescale rule is exact (completeness)
        with torch.no_grad():
            out = model(x)[0, 3] - model(torch.zeros_like(x))[0, 3]
        assert float(delta.abs().max()) <= 1e-3 * max(1.0, float(out.abs()))


def _is_activation(module: torch.nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation"


def test_reset_classifier_replaces_the_head(model):
    x = torch.randn(1, 3, input_size(model), input_size(model))
    classifier = model.head.fc
    try:
        model.reset_classifier(5)
        assert model.num_classes == 5 and model.head.fc is not classifier
        with torch.no_grad():
            assert model(x).shape == (1, 5)
        model.reset_classifier(0)
        with torch.no_grad():
            assert model(x).shape == (1, model.num_features)
        assert model.num_classes == 0
    finally:
        model.head.fc = classifier  # the module-scoped model, as the other tests expect it
