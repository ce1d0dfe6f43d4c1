"""One factory for every backbone: ``create_model`` and ``list_models``.

A model family registers its named variants with ``@register_model``; that is
the whole registry (a dict from name to builder function). A learner can go from
``create_model("resnet50")`` to the builder, then to the family's class, in
two jumps.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable

import torch
from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``builder`` under its function name (``def resnet50(...)`` -> ``"resnet50"``)."""
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"a model named {name!r} is already registered")
    _BUILDERS[name] = builder
    return builder


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell-style filter such as ``"resnet*"``."""
    names = sorted(_BUILDERS)
    if pattern is None:
        return names
    return [name for name in names if fnmatch.fnmatch(name, pattern)]


def create_model(name: str, *, num_classes: int | None = None, pretrained: bool = False, **overrides) -> nn.Module:
    """Build the backbone called ``name``.

    ``num_classes`` sizes the classifier: by default the classes of the data the model
    is defined for (1000 for ImageNet models, 10 for the CIFAR variants such as
    ``resnet20``); 0 drops it, and ``forward`` then returns pooled features. ``pretrained=True`` loads the reference's published ImageNet weights
    (see :mod:`minibones.pretrained`). ``overrides`` go to the family's constructor,
    for example ``drop_rate=0.2``.
    """
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, _BUILDERS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} minibones.list_models() lists all {len(_BUILDERS)} names.")
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    model = _BUILDERS[name](**overrides)
    if pretrained:
        from minibones.pretrained import load_pretrained

        load_pretrained(model)
    return model


def build_on_meta(name: str, **overrides) -> nn.Module:
    """``create_model(name)`` on PyTorch's *meta* device: every tensor has its shape and no data.

    Enough to count parameters and multiply-adds, print shapes or trace receptive fields, at no
    cost in memory or time, even for VGG-16's 138M parameters or ViT-H/14's 632M.
    """
    with torch.device("meta"):
        return create_model(name, **overrides)
