"""Shared checks that a minibones model reproduces its reference implementation."""

from __future__ import annotations

import torch

import minibones
from minibones.reference import build_reference, calibrate_batch_norm_, randomize_, relative_error

TOLERANCE = 1e-5  # relative error of the logits, float32


def ported_pair(name: str, **kwargs):
    """A reference with random but informative weights (batch norms calibrated on a random image),
    and the minibones model loaded from it, both in eval mode."""
    torch.manual_seed(0)
    model = minibones.create_model(name, **kwargs)
    reference = randomize_(build_reference(model))
    size = model.config.input_size[1] if getattr(model, "fixed_input_size", False) else 112
    calibrate_batch_norm_(reference, torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2)))
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
