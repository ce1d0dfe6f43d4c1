"""captum's gradient, path and rule-based methods run on every model.

Hook-based methods (GuidedBackprop, DeepLift) break on a module used twice in one
forward or on in-place activations (PITFALLS.md); these tests are what keeps every
family honest about that. DeepLift has rules for ReLU but not for SiLU, GELU or
hardswish: there its attributions only approximate the output difference, so the
test records the convergence delta instead of hiding it.
"""

import pytest
import torch
from captum.attr import DeepLift, GuidedBackprop, IntegratedGradients

import minibones
from parity import small_input_size

ALL_MODELS = minibones.list_models()

# ReLU-only networks where captum's DeepLift is still not exact: its max-pool rule does not
# conserve the output difference when pooled and unpooled paths are added or concatenated
# (Inception's pool branch, Xception's pooled residual branch). Measured: deltas up to ~100%.
DEEPLIFT_NOT_EXACT = {"googlenet", "inception_v3", "xception"}


def small_input(model) -> torch.Tensor:
    size = small_input_size(model)
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=ALL_MODELS)
def model_and_input(request):
    torch.manual_seed(0)
    # captum needs gradients with respect to the input only: frozen weights skip the weight gradients
    model = minibones.create_model(request.param, num_classes=10).eval().requires_grad_(False)
    return model, small_input(model)


def test_integrated_gradients_runs(model_and_input):
    model, x = model_and_input
    attributions = IntegratedGradients(model).attribute(x, target=3, n_steps=4, internal_batch_size=2)
    assert attributions.shape == x.shape and torch.isfinite(attributions).all()


def test_guided_backprop_runs(model_and_input):
    model, x = model_and_input
    attributions = GuidedBackprop(model).attribute(x, target=3)
    assert attributions.shape == x.shape and torch.isfinite(attributions).all()


def test_deeplift_runs_and_reports_its_convergence_delta(model_and_input, record_property):
    model, x = model_and_input
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
