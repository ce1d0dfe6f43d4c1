"""Compare a learner's module with the library's, and say what is wrong in words.

Used by the exercises and by the autograded assignments: a bare ``assert`` tells
a student nothing, so every check here explains what differs (a missing bias,
a wrong stride, a misplaced activation) and what to look at.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Mismatch(AssertionError):
    """The learner's module differs from the library's; the message says how."""


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def check_same_parameters(student: nn.Module, reference: nn.Module, what: str = "your module") -> None:
    """Same tensors, with the same names and shapes, as the library's module."""
    ours, theirs = _shapes(student), _shapes(reference)
    problems = []
    for name in sorted(set(theirs) - set(ours)):
        layer, _, kind = name.rpartition(".")
        if kind == "bias" and f"{layer}.weight" in ours:
            problems.append(f"{layer} has no bias but should (bias=True)")
        else:
            problems.append(f"missing {name} with shape {theirs[name]}")
    for name in sorted(set(ours) - set(theirs)):
        layer, _, kind = name.rpartition(".")
        if kind == "bias" and f"{layer}.weight" in theirs:
            problems.append(f"{layer} has a bias it should not have (bias=False: a batch norm follows)")
        else:
            problems.append(f"unexpected {name} with shape {ours[name]} (check the attribute names)")
    for name in sorted(set(ours) & set(theirs)):
        if ours[name] != theirs[name]:
            problems.append(f"{name} has shape {ours[name]}, expected {theirs[name]}")
    if problems:
        count = lambda m: sum(p.numel() for p in m.parameters())
        raise Mismatch(
            f"{what} has {count(student):,} parameters, the library's has {count(reference):,}:\n  - "
            + "\n  - ".join(problems)
        )


def copy_weights(student: nn.Module, reference: nn.Module) -> None:
    """Give the student's module the library module's weights (names must already match)."""
    student.load_state_dict(reference.state_dict())


def check_same_output(student: nn.Module, reference: nn.Module, x: Tensor, what: str = "your module",
                      rtol: float = 1e-5, atol: float = 1e-6) -> Tensor:
    """After copying the weights, the same output for the same input (eval mode)."""
    student.eval(), reference.eval()
    with torch.no_grad():
        expected = reference(x)
        try:
            output = student(x)
        except NotImplementedError:
            raise Mismatch(f"{what} is not implemented yet (it raised NotImplementedError)") from None
    if not isinstance(output, Tensor):
        raise Mismatch(f"{what} returned a {type(output).__name__}, expected a tensor")
    if output.shape != expected.shape:
        hint = ""
        if output.shape[:2] == expected.shape[:2] and output.ndim == 4:
            hint = " The channels agree but not the height and width: check the strides."
        elif output.ndim == 4 and output.shape[2:] == expected.shape[2:]:
            hint = " Height and width agree but not the channels: check the output width (expansion)."
        raise Mismatch(f"for an input of shape {tuple(x.shape)}, {what} returned shape {tuple(output.shape)}, "
                       f"expected {tuple(expected.shape)}.{hint}")
    if not torch.allclose(output, expected, rtol=rtol, atol=atol):
        worst = float((output - expected).abs().max())
        raise Mismatch(f"{what} has the right shapes but different values (largest difference {worst:.3g}): "
                       "check the order of the layers, where the activations go, and what is added to what.")
    return output


def check_same_gradients(student: nn.Module, reference: nn.Module, x: Tensor, what: str = "your module",
                         rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """The same gradient with respect to the input and to every parameter (training mode)."""
    grads = []
    for module in (student, reference):
        module.train()
        inp = x.clone().requires_grad_(True)
        module.zero_grad(set_to_none=True)
        out = module(inp)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((inp.grad, {n: p.grad for n, p in module.named_parameters()}))
    (ours_x, ours_p), (theirs_x, theirs_p) = grads
    if not torch.allclose(ours_x, theirs_x, rtol=rtol, atol=atol):
        raise Mismatch(f"{what} gives a different gradient with respect to its input: "
                       "something in the forward pass is detached, in place, or in a different order.")
    for name, grad in theirs_p.items():
        mine = ours_p.get(name)
        if mine is None or not torch.allclose(mine, grad, rtol=rtol, atol=atol):
            raise Mismatch(f"{what}: the gradient of {name} differs (or is missing): is {name} used in forward?")


def check_module(student: nn.Module, reference: nn.Module, x: Tensor, what: str = "your module",
                 rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """All three checks, in the order that gives the most useful message first.

    Loosen ``rtol``/``atol`` only where the library uses a fused kernel that rounds
    differently from the textbook formula (attention through scaled_dot_product_attention).
    """
    check_same_parameters(student, reference, what)
    copy_weights(student, reference)
    check_same_output(student, reference, x, what, rtol=rtol, atol=atol)
    check_same_gradients(student, reference, x, what, rtol=max(rtol, 1e-4), atol=atol)
