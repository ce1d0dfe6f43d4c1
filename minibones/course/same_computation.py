"""Does the learner's block compute the same thing as the library's? And if not, what differs, in words.

Three separate checks, so that one mistake costs once: the parameters (names and shapes), the
outputs once the library's weights are copied in, and the gradients with respect to the input
and to every parameter. Each failure raises :class:`Mismatch` with a message that points at
the likely cause (a bias where a batch norm follows, a stride, the order of the layers),
never at the answer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minibones.backbone import count_parameters
from minibones.porting import diff_state_dicts


class Mismatch(AssertionError):
    """The learner's module differs from the library's; the message says how."""


def _one_side(name: str, shape: tuple[int, ...], other: dict, missing: bool) -> str:
    """A tensor only one side has, in words: a bias next to a weight the other side has is a bias switch."""
    layer, _, kind = name.rpartition(".")
    if kind == "bias" and f"{layer}.weight" in other:
        return (f"{layer} has no bias but should (bias=True)" if missing
                else f"{layer} has a bias it should not have (bias=False: a batch norm follows)")
    return (f"missing {name} with shape {shape}" if missing
            else f"unexpected {name} with shape {shape} (check the attribute names)")


def check_same_parameters(student: nn.Module, reference: nn.Module, what: str = "your module") -> None:
    """Same tensors, with the same names and shapes, as the library's module."""
    ours, theirs = student.state_dict(), reference.state_dict()
    diff = diff_state_dicts(ours, theirs)
    problems = [_one_side(name, tuple(theirs[name].shape), ours, missing=True) for name in diff.missing]
    problems += [_one_side(name, tuple(ours[name].shape), theirs, missing=False) for name in diff.unexpected]
    problems += [f"{name} has shape {mine}, expected {expected}" for name, mine, expected in diff.mis_shaped]
    if problems:
        raise Mismatch(f"{what} has {count_parameters(student):,} parameters, the library's has "
                       f"{count_parameters(reference):,}:\n  - " + "\n  - ".join(problems))


def copy_weights(student: nn.Module, reference: nn.Module, what: str = "your module") -> dict[str, str]:
    """Give the student's module the library's weights; returns {student name: library name}.

    By name when the names agree; otherwise in order of registration when the shapes agree
    one by one (a naming mistake then costs the parameter test only, not the outputs too).
    """
    ours, theirs = student.state_dict(), reference.state_dict()
    if list(ours) == list(theirs) or set(ours) == set(theirs):
        names = {name: name for name in theirs}
    elif [t.shape for t in ours.values()] == [t.shape for t in theirs.values()]:
        names = dict(zip(ours, theirs))
        print(f"(the parameter names of {what} differ from the library's: its weights were copied in order)")
    else:
        raise Mismatch(f"{what}'s parameters do not match the library's (see the parameter test), "
                       "so its outputs cannot be compared: " + _first_difference(ours, theirs))
    with torch.no_grad():
        for mine, library in names.items():
            ours[mine].copy_(theirs[library])
    return names


def _first_difference(ours: dict, theirs: dict) -> str:
    for (a, x), (b, y) in zip(ours.items(), theirs.items()):
        if x.shape != y.shape:
            return f"yours has {a} {tuple(x.shape)} where the library has {b} {tuple(y.shape)}"
    return f"yours has {len(ours)} tensors, the library's {len(theirs)}"


def compare_outputs(output, expected: Tensor, x: Tensor, what: str, rtol: float, atol: float) -> None:
    """The same shape and values; the message points at strides, widths or layer order."""
    if not isinstance(output, Tensor):
        raise Mismatch(f"{what} returned a {type(output).__name__}, expected a tensor")
    if output.shape != expected.shape:
        hint = ""
        if output.ndim == 4 and output.shape[:2] == expected.shape[:2]:
            hint = " The channels agree but not the height and width: check the strides."
        elif output.ndim == 4 and output.shape[2:] == expected.shape[2:]:
            hint = " Height and width agree but not the channels: check the output width (expansion)."
        raise Mismatch(f"for an input of shape {tuple(x.shape)}, {what} returned shape {tuple(output.shape)}, "
                       f"expected {tuple(expected.shape)}.{hint}")
    if not torch.allclose(output, expected, rtol=rtol, atol=atol):
        worst = float((output - expected).abs().max())
        raise Mismatch(f"{what} has the right shapes but different values (largest difference {worst:.3g}): "
                       "check the order of the layers, where the activations go, and what is added to what.")


def gradients(module: nn.Module, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """In training mode, the gradients of a weighted sum of the outputs with respect to ``x`` and to every
    parameter (by name); each output gets its own weight, so that two outputs swapped show."""
    module.train()
    inp = x.clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    out = module(inp)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return inp.grad, {n: p.grad for n, p in module.named_parameters()}


def compare_gradients(ours: tuple, theirs: tuple, names: dict[str, str], what: str, rtol: float, atol: float) -> None:
    (ours_x, ours_p), (theirs_x, theirs_p) = ours, theirs
    if ours_x is None or not torch.allclose(ours_x, theirs_x, rtol=rtol, atol=atol):
        raise Mismatch(f"{what} gives a different gradient with respect to its input: "
                       "something in the forward pass is detached, in place, or in a different order.")
    for mine, library in names.items():
        if library not in theirs_p:
            continue  # a buffer (batch-norm statistics)
        grad = ours_p.get(mine)
        if grad is None or not torch.allclose(grad, theirs_p[library], rtol=rtol, atol=atol):
            raise Mismatch(f"{what}: the gradient of {mine} differs (or is missing): is {mine} used in forward?")
