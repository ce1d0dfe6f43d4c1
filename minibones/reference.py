"""Build the reference implementation a minibones model is checked against.

``config.reference`` names a constructor such as ``"torchvision.models.resnet50"``
or ``"timm.legacy_xception"``; this module builds it (random weights, never a
download) so that tests, benchmarks and notebooks can compare the two side by side.
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor, nn

from minibones.backbone import Backbone


def has_reference(model: Backbone) -> bool:
    """Teaching variants (``resnet20``) have only a paper, no reference implementation."""
    return model.config.reference.startswith(("torchvision.", "timm."))


def build_reference(model: Backbone, **kwargs) -> nn.Module:
    """A freshly initialised reference model with the same classifier size as ``model``.

    ``timm`` is needed only for the models torchvision lacks (Xception).
    """
    reference = model.config.reference
    if not has_reference(model):
        raise ValueError(f"{model.config.name} has no reference implementation (reference: {reference})")
    options = {"num_classes": model.num_classes, **model.config.reference_kwargs, **kwargs}
    if reference.startswith("timm."):
        try:
            timm = importlib.import_module("timm")
        except ImportError as error:
            raise ImportError(f"{reference} needs timm: pip install 'minibones[test]'") from error
        return timm.create_model(reference.removeprefix("timm."), pretrained=False, **options)
    module_name, _, function = reference.rpartition(".")
    builder = getattr(importlib.import_module(module_name), function)
    return builder(weights=None, **options)


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every tensor an informative random value, in place.

    Fresh models are too kind to a parity test: batch-norm statistics are 0 and 1,
    norm affines are 1 and 0, class tokens and many biases are 0, so a wrong eps,
    a missing bias or a swapped buffer would go unnoticed. After this, every
    mismatch shows in the outputs.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor: Tensor, low: float, high: float) -> None:
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.running_mean is not None:
            sub.running_mean.copy_(torch.randn(sub.running_mean.shape, generator=generator) * 0.1)
            uniform(sub.running_var, 0.5, 1.5)
    for name, tensor in module.named_parameters():
        if name.endswith("weight") and tensor.ndim == 1:  # norm scales
            uniform(tensor, 0.5, 1.5)
        elif torch.count_nonzero(tensor) == 0 or tensor.ndim == 1:  # biases, tokens, zero-init parameters
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return module


def relative_error(output: Tensor, expected: Tensor) -> float:
    """||output - expected|| / ||expected||: 0 for identical tensors, independent of scale."""
    if output.shape != expected.shape:
        raise ValueError(f"shapes differ: {tuple(output.shape)} vs {tuple(expected.shape)}")
    difference = (output.double() - expected.double()).norm()
    return float(difference / expected.double().norm().clamp_min(1e-30))

