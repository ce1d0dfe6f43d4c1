"""Shared checks that a minibones model reproduces its reference implementation."""

from __future__ import annotations

import torch

import minibones
from minibones.reference import build_reference, randomize_, relative_error

TOLERANCE = 1e-5  # relative error of the logits, float32


def ported_pair(name: str, **kwargs):
    """A reference with random (but informative) weights, and the minibones model loaded from it."""
    torch.manual_seed(0)
    model = minibones.create_model(name, **kwargs)
    reference = randomize_(build_reference(model))
    minibones.load_reference_weights(model, reference)
    return model.eval(), reference.eval()


def parity_error(name: str, sizes: list[tuple[int, int]], batch: int = 2, **kwargs) -> float:
    """Largest relative error of the logits over the input ``sizes``."""
    model, reference = ported_pair(name, **kwargs)
    worst = 0.0
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for height, width in sizes:
            x = torch.randn(batch, 3, height, width, generator=generator)
            worst = max(worst, relative_error(model(x), reference(x)))
    return worst
