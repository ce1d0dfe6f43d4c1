"""Shared checks that a minibones model reproduces its reference implementation."""

from __future__ import annotations

import torch

import minibones
from minibones.backbone import measure_batch_norm_
from minibones.reference import build_reference, randomize_, relative_error

TOLERANCE = 1e-5  # relative error of the logits, float32


def small_input_size(model, preferred: int = 64) -> int:
    """The smallest convenient square size the model accepts, near ``preferred``: its own size if it
    only takes one, at least its ``min_input_size``, and a multiple of its patch size (ViT)."""
    if getattr(model, "fixed_input_size", False):
        return model.config.input_size[1]
    size = max(min(model.config.input_size[1], preferred), getattr(model, "min_input_size", 1))
    patch = getattr(model, "patch_size", 1)
    return -(-size // patch) * patch  # round up to a multiple of the patch


def build_pair(name: str, meta_init: bool = False, **kwargs):
    """The model and a freshly initialised reference.

    ``meta_init``: build both on the meta device (shapes only) and fill only the reference
    with random numbers (every tensor is overwritten afterwards anyway); for ViT-H/14 or
    EfficientNet-B7 this saves seconds per model.
    """
    if not meta_init:
        model = minibones.create_model(name, **kwargs)
        return model, build_reference(model)
    with torch.device("meta"):
        model = minibones.create_model(name, **kwargs)
        reference = build_reference(model)
    reference.to_empty(device="cpu")
    fill_random_(reference)
    for module in reference.modules():  # to_empty leaves buffers unset: the only ones are batch-norm statistics
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    assert all(torch.isfinite(t).all() for t in reference.state_dict().values() if t.is_floating_point())
    return model.to_empty(device="cpu"), reference


@torch.no_grad()
def fill_random_(module: torch.nn.Module, seed: int = 0) -> None:
    """Uniform weights in +-1/sqrt(fan-in), fast. Drawing 632M random numbers takes seconds, so every
    tensor is a slice of one random pool at its own random offset: as informative for a parity test
    (no two tensors alike, no structure to hide a swapped or transposed weight)."""
    generator = torch.Generator().manual_seed(seed)
    largest = max(p.numel() for p in module.parameters())
    pool = torch.rand(2 * largest, generator=generator) * 2 - 1
    for tensor in module.parameters():
        fan_in = tensor[0].numel() if tensor.ndim > 1 and tensor.shape[0] > 1 else tensor.shape[-1]
        start = int(torch.randint(largest, (1,), generator=generator))
        torch.mul(pool[start : start + tensor.numel()], fan_in**-0.5, out=tensor.view(-1))


def ported_pair(name: str, meta_init: bool = False, **kwargs):
    """A reference with random but informative weights (batch norms calibrated on a random image),
    and the minibones model loaded from it, both in eval mode."""
    torch.manual_seed(0)
    model, reference = build_pair(name, meta_init, **kwargs)
    randomize_(reference)
    size = model.config.input_size[1] if getattr(model, "fixed_input_size", False) else 112
    measure_batch_norm_(reference, torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2)))
    minibones.load_reference_weights(model, reference)
    return model.eval(), reference.eval()


def parity_error(name: str, sizes: list[tuple[int, int]], batch: int = 2, **kwargs) -> float:
    """Largest relative error of the logits over the input ``sizes``.

    It also checks that the logits depend on the input (another image moves them by more
    than 5%): otherwise an error of 0 would prove nothing.
    """
    model, reference = ported_pair(name, **kwargs)
    worst = 0.0
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for height, width in sizes:
            x, other = torch.randn(2, batch, 3, height, width, generator=generator)
            expected = reference(x)
            assert relative_error(reference(other), expected) > 0.05, f"{name}: the logits barely depend on the input"
            worst = max(worst, relative_error(model(x), expected))
    return worst


def assert_activations_used_once(model: torch.nn.Module, x: torch.Tensor, kinds, count: int | None = None) -> None:
    """Every activation module of ``kinds`` runs exactly once per forward, and none works in place.

    Captum's hook-based methods (guided backprop, DeepLift) attach to activation
    *modules*: a module reused at two places, or one that overwrites its input,
    silently gives wrong attributions. ``count`` also pins how many there are.
    """
    calls = {}
    hooks = [m.register_forward_hook(lambda m, i, o: calls.__setitem__(m, calls.get(m, 0) + 1))
             for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls, f"no {kinds} module ran"
    assert len(calls) == len(hooks), f"{len(hooks) - len(calls)} activation modules never ran"
    assert set(calls.values()) == {1}, "an activation module ran more than once"
    if count is not None:
        assert len(calls) == count
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def assert_compiles(model: torch.nn.Module, x: torch.Tensor, wrt: torch.Tensor | None = None,
                    backend: str = "aot_eager") -> None:
    """``torch.compile(fullgraph=True)`` gives the eager output and gradient.

    fullgraph fails on any graph break; aot_eager traces forward *and* backward
    through AOTAutograd as inductor does, without inductor's code generation
    (20 s or more per model on 2 CPU cores; tests/test_resnet.py runs inductor once).
    The gradient is taken with respect to ``wrt`` (default: the input).
    """
    torch._dynamo.reset()  # a fresh start: compiling after another model's compilation takes longer
    if wrt is None:
        x = x.clone().requires_grad_(True)
        wrt = x
    expected = model(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), wrt)
    output = torch.compile(model, fullgraph=True, backend=backend)(x)
    (grad,) = torch.autograd.grad(output.sum(), wrt)
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)
