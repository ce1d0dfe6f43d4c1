"""Load a reference implementation's weights into a minibones model, and prove it.

Like nanoGPT's ``from_pretrained``: rename every tensor of the reference through
the family's explicit ``name_map``, check that every name and every shape lines
up with ours, and only then copy. Any mismatch raises an error that lists all of
them, and the model is left exactly as it was (all or nothing).

A ``name_map`` is a list of ``(pattern, replacement)`` regular-expression pairs
applied in order to each reference name; a replacement of ``None`` drops the
tensor (used for parts the reference has and the paper does not, such as an
auxiliary head that was switched off).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn


class WeightLoadError(ValueError):
    """The reference's tensors do not line up with the model's; nothing was loaded."""


def rename(name: str, name_map: list[tuple[str, str | None]]) -> str | None:
    """Apply the family's table to one reference name (``None``: the tensor is dropped)."""
    for pattern, replacement in name_map:
        if replacement is None:
            if re.search(pattern, name):
                return None
        else:
            name = re.sub(pattern, replacement, name)
    return name


def numbered_layers(modules: Iterable[str], names: Iterable[str]) -> list[tuple[str, str]]:
    """Name map rows for a unit the reference builds as an ``nn.Sequential`` and we name:
    in each of ``modules``, child ``0.`` becomes ``names[0]``, ``1.`` ``names[1]`` and so on
    (torchvision's ``Conv2dNormActivation`` is ``0`` the conv and ``1`` the norm: our
    :class:`~minibones.layers.ConvNormAct`'s ``conv`` and ``bn``)."""
    alternatives = "|".join(modules)
    return [(rf"(^|\.)({alternatives})\.{i}\.", rf"\1\2.{name}.") for i, name in enumerate(names)]


@dataclass(frozen=True)
class StateDictDiff:
    """Where two state dicts disagree in names or shapes (values are not compared).

    ``missing``: names ``expected`` has and ``actual`` lacks; ``unexpected``: the reverse;
    ``mis_shaped``: ``(name, actual shape, expected shape)`` for the names both have. Each sorted by name.
    """

    missing: list[str]
    unexpected: list[str]
    mis_shaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    def __bool__(self) -> bool:
        """True when they differ."""
        return bool(self.missing or self.unexpected or self.mis_shaped)


def diff_state_dicts(actual: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> StateDictDiff:
    """Which names and shapes of ``actual`` differ from those of ``expected`` (see :class:`StateDictDiff`)."""
    mis_shaped = [
        (name, tuple(actual[name].shape), tuple(expected[name].shape))
        for name in sorted(set(actual) & set(expected))
        if tuple(actual[name].shape) != tuple(expected[name].shape)
    ]
    return StateDictDiff(sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected)), mis_shaped)


def read_state_dict(reference: nn.Module | Mapping[str, Tensor] | str | os.PathLike) -> tuple[dict[str, Tensor], str]:
    """Turn a module, a state dict or a checkpoint path into a state dict, and say where it came from."""
    if isinstance(reference, nn.Module):
        return dict(reference.state_dict()), f"module {type(reference).__name__}"
    if isinstance(reference, Mapping):
        return dict(reference), "state dict"
    if isinstance(reference, (str, os.PathLike)):
        path = Path(reference)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}: expected a file saved with torch.save(state_dict)")
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling errors come in many types
            raise WeightLoadError(f"could not read {path} as a weights-only checkpoint: {error}") from error
        for key in ("state_dict", "model"):  # training checkpoints nest the weights
            if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
        if not isinstance(loaded, Mapping):
            raise WeightLoadError(f"{path} holds a {type(loaded).__name__}, expected a state dict of tensors")
        return dict(loaded), f"file {path}"
    raise TypeError(f"reference must be an nn.Module, a state dict or a checkpoint path, got {type(reference).__name__}")


def convert_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], name_map: list[tuple[str, str | None]] | None = None
) -> dict[str, Tensor]:
    """Rename a reference state dict into the model's names with ``name_map`` (default: the model's
    ``name_map``; families with layout changes override ``convert_reference`` on the model to
    reshape tensors as well)."""
    if name_map is None and hasattr(model, "convert_reference"):
        return model.convert_reference(state_dict)
    name_map = model.name_map if name_map is None else name_map
    converted = {}
    for name, tensor in state_dict.items():
        new_name = rename(name, name_map)
        if new_name is not None:
            converted[new_name] = tensor
    return converted


def load_reference_weights(
    model: nn.Module,
    reference: nn.Module | Mapping[str, Tensor] | str | os.PathLike,
    name_map: list[tuple[str, str | None]] | None = None,
) -> nn.Module:
    """Copy the weights of ``reference`` (module, state dict or checkpoint path) into ``model``.

    ``name_map`` renames the reference's tensors (default: the model's own ``name_map``, for its
    reference implementation; ``model.name_map_for(layout)`` gives the table of another naming).
    Raises :class:`WeightLoadError` listing every missing, unexpected and mis-shaped
    tensor, and then leaves ``model`` untouched.
    """
    state_dict, source = read_state_dict(reference)
    converted = convert_state_dict(model, state_dict, name_map)
    ours = model.state_dict()

    diff = diff_state_dicts(converted, ours)
    if diff:
        mis_shaped = [f"{name}: reference {theirs} vs model {mine}" for name, theirs, mine in diff.mis_shaped]
        lines = [f"cannot load {source} into {type(model).__name__}; nothing was loaded."]
        for title, names in (("missing", diff.missing), ("unexpected", diff.unexpected), ("mis-shaped", mis_shaped)):
            if names:
                lines.append(f"{len(names)} {title}:")
                lines.extend(f"  {name}" for name in names[:20])
                if len(names) > 20:
                    lines.append(f"  ... and {len(names) - 20} more")
        raise WeightLoadError("\n".join(lines))

    with torch.no_grad():
        for name, tensor in ours.items():
            tensor.copy_(converted[name])
    return model
