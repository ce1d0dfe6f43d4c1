"""Grade a learner's block against the library's: is it their own work, does it compute the
same thing, and if not, what is wrong, in words.

This module holds what each assignment grades (``A1`` to ``A5``, one :class:`Part` per block)
and the conditions the learner's code runs in; the checks themselves live in two modules:

1. **Own work** (:mod:`minibones.course.own_work`): a block that is, subclasses, holds or runs the
   implementation it was asked to write scores nothing, and the message says which it did.
2. **Same computation** (:mod:`minibones.course.same_computation`): parameters (names and shapes),
   outputs after copying the library's weights, gradients; separate tests, so that one mistake
   costs once. A later block is graded with the library's earlier block swapped in
   (:attr:`Part.swaps`).
3. **Fair conditions** (here): what the learner's code writes to stderr (warnings, logging,
   progress bars) is printed on stdout instead, because nbgrader gives no points to a test cell
   with anything on stderr; under the autograder, memory is capped so that running out raises
   an error in one test instead of killing the notebook (which would drop the whole submission).

Test cells import what they call in every cell (``from minibones.course.grading import A1``): a
notebook that rebinds a name (``A1 = None``, ``check_savings = lambda *a: None``) changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minibones.backbone import count_parameters
from minibones.layers import ConvNormAct, SqueezeExcite
from minibones.models import efficientnet, resnet, vit, xception
from minibones.course.exercises.answers import number_returned
from minibones.course.own_work import Rules, own_functions
from minibones.course.same_computation import (Mismatch, check_same_parameters, compare_gradients, compare_outputs,
                                        copy_weights, gradients)


# --- fair conditions ---------------------------------------------------------------------

MEMORY_LIMIT_GB = 4
"""Memory the autograder gives a notebook on top of what Python, torch and minibones use."""


def limit_memory(extra_gb: float = MEMORY_LIMIT_GB) -> None:
    """Under the autograder, cap the kernel's memory (RLIMIT_DATA) at its current use plus ``extra_gb``.

    Without a cap, a learner's block that allocates too much gets the kernel killed, and
    nbgrader then drops the whole submission (no graded notebook, no feedback). With it,
    the allocation fails with an error inside one test, which costs that test only. Only
    under ``nbgrader autograde`` (which sets ``NBGRADER_EXECUTION``): learners' own runs are
    not limited. Idempotent.
    """
    if os.environ.get("NBGRADER_EXECUTION") != "autograde" or not os.path.exists(f"/proc/{os.getpid()}/status"):
        return
    import resource  # Unix only, as the autograder's limit is

    if resource.getrlimit(resource.RLIMIT_DATA)[0] != resource.RLIM_INFINITY:
        return
    with open(f"/proc/{os.getpid()}/status") as status:
        used_kb = next(int(line.split()[1]) for line in status if line.startswith("VmData:"))
    limit = used_kb * 1024 + int(extra_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


@contextlib.contextmanager
def stderr_to_stdout() -> Iterator[None]:
    """What the learner's code writes to stderr appears on stdout: nbgrader gives no points to a
    test cell with stderr output, and a warning or a progress bar is no mistake."""
    with contextlib.redirect_stderr(sys.stdout):
        yield


def _namespace(student) -> dict | None:
    """The notebook's global names, as the learner's code sees them."""
    functions = [student] if isinstance(student, types.FunctionType) else list(own_functions(student, student.__module__))
    return functions[0].__globals__ if functions else None


@contextlib.contextmanager
def swapped(namespace: dict | None, swaps: dict) -> Iterator[None]:
    """Bind notebook names to the library's blocks for a while (``SqueezeExcite`` inside ``MBConv``)."""
    if namespace is None or not swaps:
        yield
        return
    missing = object()
    before = {name: namespace.get(name, missing) for name in swaps}
    namespace.update(swaps)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = value


@contextlib.contextmanager
def learner_code(rules: Rules, what: str, namespace: dict | None = None, swaps: dict | None = None) -> Iterator[None]:
    """The conditions the learner's code runs in: the memory cap, the library's blocks swapped in
    (``swaps``), stderr on stdout, the watch over what runs; and a block left to write (it raises
    ``NotImplementedError``) told in words."""
    limit_memory()
    with swapped(namespace, swaps or {}), stderr_to_stdout(), rules.watch(what):
        try:
            yield
        except NotImplementedError:
            raise Mismatch(f"{what} is not implemented yet (it raised NotImplementedError)") from None


def _call_args(args: tuple, kwargs: dict) -> str:
    return ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])


# --- one graded part of an assignment ----------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One block of an assignment, graded against the library's block built from the same arguments.

    ``reference(*args, **kwargs)`` builds the library's block; ``rules`` say what the learner's
    may not use; ``swaps`` bind notebook names to the library's earlier blocks while this part
    is graded, so that a mistake in an earlier part does not cost points here too.
    """

    name: str
    reference: Callable[..., nn.Module]
    rules: Rules
    swaps: dict = field(default_factory=dict)
    rtol: float = 1e-5
    atol: float = 1e-6

    def graded(self, student, what: str):
        """:func:`learner_code` with this part's rules and swaps."""
        return learner_code(self.rules, what, _namespace(student), self.swaps)

    def build(self, student: type, args: tuple, kwargs: dict) -> tuple[nn.Module, nn.Module, str]:
        """The learner's block and the library's, from the same arguments, after the own-work checks."""
        what = f"{self.name}({_call_args(args, kwargs)})"
        if not callable(student):
            raise Mismatch(f"{self.name} should be a class, got {type(student).__name__}")
        if isinstance(student, type):
            self.rules.check_class(student, what)
        self.rules.check_code(student, what)
        reference = self.reference(*args, **kwargs)
        with self.graded(student, what):
            module = student(*args, **kwargs)
        if not isinstance(module, nn.Module):
            raise Mismatch(f"{what} built a {type(module).__name__}, expected an nn.Module")
        self.rules.check_module(module, what)
        return module, reference, what

    def check_parameters(self, student: type, *args, **kwargs) -> None:
        """The same parameter names and shapes as the library's block."""
        module, reference, what = self.build(student, args, kwargs)
        check_same_parameters(module, reference, what)
        print(f"{what}: {count_parameters(module):,} parameters, named as in the library")

    def check_output(self, student: type, *args, input_shape: tuple[int, ...], **kwargs) -> None:
        """The same output as the library's block with the same weights (evaluation mode)."""
        module, reference, what = self.build(student, args, kwargs)
        self._check_output(module, reference, what, input_shape)
        print(f"{what}: the same output as the library for an input of shape {input_shape}")

    def check_gradients(self, student: type, *args, input_shape: tuple[int, ...], **kwargs) -> None:
        """The same gradients, for the input and every parameter (training mode)."""
        module, reference, what = self.build(student, args, kwargs)
        self._check_gradients(module, reference, what, input_shape)
        print(f"{what}: the same gradients as the library")

    def check(self, student: type, *args, input_shape: tuple[int, ...], **kwargs) -> None:
        """Parameters, output and gradients at once (the hidden tests)."""
        module, reference, what = self.build(student, args, kwargs)
        check_same_parameters(module, reference, what)
        self._check_output(module, reference, what, input_shape)
        self._check_gradients(module, reference, what, input_shape)
        print(f"{what} matches the library on an input of shape {input_shape}")

    def _check_output(self, module: nn.Module, reference: nn.Module, what: str, input_shape) -> None:
        copy_weights(module, reference, what)
        x = _input(input_shape)
        module.eval(), reference.eval()
        with torch.no_grad():
            expected = reference(x)
            with self.graded(module, what):
                output = module(x)
        compare_outputs(output, expected, x, what, self.rtol, self.atol)

    def _check_gradients(self, module: nn.Module, reference: nn.Module, what: str, input_shape) -> None:
        names = copy_weights(module, reference, what)
        x = _input(input_shape)
        theirs = gradients(reference, x)
        with self.graded(module, what):
            ours = gradients(module, x)
        compare_gradients(ours, theirs, names, what, max(self.rtol, 1e-4), self.atol)


def _input(shape: tuple[int, ...]) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


# --- the assignments' rules --------------------------------------------------------------

LIBRARIES = ("minibones.models", "minibones.layers", "minibones.viz", "minibones.course.exercises",
             "torchvision.models", "torchvision.ops", "timm", "captum")
"""Where blocks like the assignments' live: a learner's block must not come from there."""

A1 = SimpleNamespace(
    basic_block=Part("BasicBlock", resnet.BasicBlock, Rules(
        LIBRARIES, allowed=(resnet.ProjectionShortcut,),
        hint="Build it from nn.Conv2d, nn.BatchNorm2d, nn.ReLU and the ProjectionShortcut the setup cell imports.")),
    bottleneck=Part("Bottleneck", resnet.Bottleneck, Rules(
        LIBRARIES, allowed=(resnet.ProjectionShortcut,),
        hint="Build it from nn.Conv2d, nn.BatchNorm2d, nn.ReLU and the ProjectionShortcut the setup cell imports.")),
)

_SEPARABLE_HINT = "Build it from nn.Conv2d (groups=...), nn.BatchNorm2d and nn.ReLU."
A2 = SimpleNamespace(
    separable_conv=Part("SeparableConv", xception.SeparableConv, Rules(LIBRARIES, hint=_SEPARABLE_HINT)),
    # graded with the library's SeparableConv in place of the learner's: a mistake there costs once
    middle_flow=Part("MiddleFlowBlock", lambda channels: xception.XceptionBlock(channels, channels, reps=3), Rules(
        LIBRARIES, allowed=(xception.SeparableConv,), hint=_SEPARABLE_HINT),
        swaps={"SeparableConv": xception.SeparableConv}),
)

_library_se = partial(SqueezeExcite, act=nn.SiLU, gate=nn.Sigmoid)  # EfficientNet's squeeze-and-excitation
_MBCONV_RULES = Rules(LIBRARIES, allowed=(ConvNormAct, SqueezeExcite),
                      hint="Build it from the ConvNormAct the setup cell imports and your SqueezeExcite.")
A3 = SimpleNamespace(
    squeeze_excite=Part("SqueezeExcite", _library_se, Rules(
        LIBRARIES, hint="Build it from nn.AdaptiveAvgPool2d, nn.Conv2d, nn.SiLU and nn.Sigmoid.")),
    mbconv=Part("MBConv", efficientnet.MBConv, _MBCONV_RULES, swaps={"SqueezeExcite": _library_se}),
)

_FUSED_ATTENTION = (F.scaled_dot_product_attention, F.multi_head_attention_forward, nn.MultiheadAttention)
_ATTENTION_HINT = "Write it with nn.Linear, matrix products (@) and torch.softmax."
A4 = SimpleNamespace(
    patch_embed=Part("PatchEmbed", vit.PatchEmbed, Rules(LIBRARIES, hint="One nn.Conv2d does it.")),
    attention=Part("MultiHeadSelfAttention", vit.MultiHeadSelfAttention, Rules(
        LIBRARIES + _FUSED_ATTENTION, hint=_ATTENTION_HINT), rtol=1e-4, atol=1e-5),
    encoder_block=Part("EncoderBlock", vit.EncoderBlock, Rules(
        LIBRARIES, allowed=(vit.MultiHeadSelfAttention,),
        hint="Build it from nn.LayerNorm, your attention, nn.Linear and nn.GELU."),
        swaps={"MultiHeadSelfAttention": vit.MultiHeadSelfAttention}, rtol=1e-4, atol=1e-5),
)


def check_savings(savings: Callable[[int], float], channels: int) -> None:
    """A2: ``savings(channels)`` is the weights of a full 3x3 conv over those of a separable one."""
    what = f"separable_savings({channels})"
    part = A2.middle_flow  # the library's SeparableConv is swapped in: a mistake there costs once
    part.rules.check_code(savings, what)
    with part.graded(savings, what):
        ratio = savings(channels)
    expected = 9 * channels / (9 + channels)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or abs(ratio - expected) > 1e-9 * expected:
        raise Mismatch(f"{what} returned {ratio!r}; a standard 3x3 conv has 9*C*C weights, a separable one "
                       "9*C + C*C: count them with sum(p.numel() for p in module.parameters())")
    print(f"{what} = {ratio:.2f}: the separable conv has {ratio:.2f}x fewer weights")


def check_attention_weights(student: type, dim: int, heads: int, tokens: int) -> None:
    """A4: ``attention(z)`` returns A = softmax(q k^T / sqrt(D_h)), (B, heads, N, N), as the library's."""
    module, reference, what = A4.attention.build(student, (dim, heads), {})
    copy_weights(module, reference, what)
    z = _input((2, tokens, dim))
    with torch.no_grad():
        _, expected = reference.eval().forward_attention(z)
        with A4.attention.graded(module, what):
            weights = module.eval().attention(z)
    if not isinstance(weights, Tensor) or weights.shape != expected.shape:
        shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise Mismatch(f"{what}.attention returned {shape}, expected (B, heads, N, N) = {tuple(expected.shape)}")
    if not torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)), atol=1e-5):
        raise Mismatch(f"every row of A must sum to 1 ({what}): softmax over the last dimension")
    if not torch.allclose(weights, expected, rtol=1e-4, atol=1e-6):
        raise Mismatch(f"the attention weights of {what} differ from the library's: did you scale by 1/sqrt(D_h), per head?")
    print(f"{what}: the attention weights match the library's, every row sums to 1")


# --- A5: Grad-CAM ------------------------------------------------------------------------


def reference_grad_cam(model: nn.Module, x: Tensor, target: int, layer: nn.Module) -> Tensor:
    """captum's Grad-CAM with the ReLU of equation 2, upsampled bilinearly: what A5 is checked against."""
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, x.shape[2:], interpolate_mode="bilinear").detach()


def _reference_rank_correlation(a: Tensor, b: Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy())[0])


_GRAD_CAM_RULES = Rules(
    ("captum", "minibones.viz", "minibones.course.exercises", "pytorch_grad_cam", reference_grad_cam),
    hint="Use a forward hook (layer.register_forward_hook) and torch.autograd.grad.")
_RANK_RULES = Rules(("scipy", "pandas", "minibones.viz", _reference_rank_correlation),
                    hint="Rank with torch.argsort, average the ranks of ties, then correlate.")


def grading_model() -> tuple[nn.Module, Tensor]:
    """A5's test model and photograph: a ResNet-18 (10 classes, fixed random weights) and the cat at 96 x 96."""
    from minibones.data.photos import load_photo
    from minibones.registry import create_model

    torch.manual_seed(0)
    return create_model("resnet18", num_classes=10).eval(), load_photo("cat", size=96).tensor


def _run_grad_cam(grad_cam: Callable, model: nn.Module, x: Tensor, target: int, layer: nn.Module, what: str) -> Tensor:
    _GRAD_CAM_RULES.check_code(grad_cam, what)
    with learner_code(_GRAD_CAM_RULES, what):
        return grad_cam(model, x, target, layer)


def check_grad_cam(grad_cam: Callable, stage: str, targets: tuple[int, ...], batch: bool = False) -> None:
    """A5: the learner's maps equal captum's Grad-CAM at ``stage`` for each class in ``targets``."""
    model, x = grading_model()
    if batch:
        x = torch.cat([x, x.flip(-1)])
    layer = model.get_submodule(f"stages.{stage}")
    for target in targets:
        what = f"grad_cam(model, x, {target}, model.stages.{stage})" + (" on a batch of two images" if batch else "")
        ours = _run_grad_cam(grad_cam, model, x, target, layer, what)
        theirs = reference_grad_cam(model, x, target, layer)
        if not isinstance(ours, Tensor):
            raise Mismatch(f"{what} returned a {type(ours).__name__}, expected a tensor")
        if ours.shape != theirs.shape:
            raise Mismatch(f"{what} returned shape {tuple(ours.shape)}, expected {tuple(theirs.shape)}: "
                           "one channel, upsampled to the input's height and width")
        if not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6):
            hint = ("average over positions, not over the batch" if batch else
                    "check the average over positions (equation 1), the ReLU after the sum (equation 2), "
                    "bilinear upsampling, and that you use the layer you are given")
            raise Mismatch(f"{what} differs from captum's Grad-CAM (largest difference "
                           f"{float((ours - theirs).abs().max()):.3g}): {hint}")
    print(f"Grad-CAM at {stage} matches captum for classes {targets}" + (" on a batch" if batch else ""))


def check_grad_cam_cleans_up(grad_cam: Callable, failing_input: bool = False) -> None:
    """A5: no hooks left on the model, even when the forward pass fails, and no .grad on its parameters."""
    model, x = grading_model()
    if failing_input:
        x = torch.randn(1, 1, 64, 64)  # one channel: the model's first conv raises
    what = "grad_cam" + (" on an input the model rejects" if failing_input else "")
    with contextlib.suppress(RuntimeError, ValueError) if failing_input else contextlib.nullcontext():
        _run_grad_cam(grad_cam, model, x, 1, model.stages.conv5_x, what)
    left = [name or "the model" for name, module in model.named_modules() if module._forward_hooks]
    if left:
        when = "when the model raises, " if failing_input else ""
        raise Mismatch(f"{when}forward hooks are still registered on {left} after {what}: "
                       "remove them (handle.remove()) in a finally block")
    dirty = [name for name, p in model.named_parameters() if p.grad is not None]
    if dirty:
        raise Mismatch(f"{len(dirty)} parameters have a .grad after {what} (e.g. {dirty[0]}): use torch.autograd.grad "
                       "instead of .backward(), so that explaining a model does not change its gradients")
    print(f"{what} leaves the model as it found it")


def check_rank_correlation(rank_correlation: Callable, hidden: bool = False) -> None:
    """A5: Spearman's rank correlation of two maps, ties given their average rank, as scipy computes it."""
    generator = torch.Generator().manual_seed(5 if hidden else 1)
    a = F.relu(torch.randn(12, 10, generator=generator))  # about half zeros: many ties, as in Grad-CAM maps
    cases = [(a, a), (a, -a), (a, a + 0.5 * torch.randn(12, 10, generator=generator))]
    if hidden:
        cases += [(a.round(), F.relu(torch.randn(12, 10, generator=generator)).round()), (a, a * 3 + 1)]
    for left, right in cases:
        what = f"rank_correlation on two {tuple(left.shape)} maps"
        _RANK_RULES.check_code(rank_correlation, what)
        with learner_code(_RANK_RULES, what):
            rho = rank_correlation(left.clone(), right.clone())
        expected = _reference_rank_correlation(left, right)
        number = number_returned(rho)  # a float, or a one-element tensor; anything else is refused
        if number is None or abs(number - expected) > 1e-5:
            shown = f"a tensor of shape {tuple(rho.shape)}" if isinstance(rho, Tensor) and rho.numel() != 1 else repr(rho)
            raise Mismatch(f"{what} returned {shown}, expected one number, {expected:.6f}: rank each map (ties get "
                           "the average of their ranks), then take the Pearson correlation of the ranks")
    print("rank_correlation matches Spearman's rho" + (" on other maps" if hidden else ""))


A5 = SimpleNamespace(
    check_grad_cam=check_grad_cam, check_clean_up=check_grad_cam_cleans_up, check_rank_correlation=check_rank_correlation,
)
