"""Checkers for notebook 08 (attributions).

The true answers come from the library and from the model itself: which methods
:func:`minibones.viz.attribute` refuses (it is run), how many occluded images captum
evaluates (they are counted with a hook), the grid Grad-CAM works on (a forward pass on
the meta device), and what Integrated Gradients add up to (two forward passes).
"""

from __future__ import annotations

from numbers import Real
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

import minibones
from minibones.exercises import verdict
from minibones.viz import DEFAULT_METHODS, METHODS, attribute


def _number(answer) -> float:
    if isinstance(answer, bool) or not isinstance(answer, Real):
        raise ValueError(f"give one number, got {answer!r}")
    return float(answer)


def _pair(answer, what: str) -> tuple[int, int]:
    if (not isinstance(answer, (tuple, list)) or len(answer) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in answer)):
        raise ValueError(f"give {what} as a tuple of two integers, got {answer!r}")
    return int(answer[0]), int(answer[1])


def refused_methods(model: nn.Module, size: int | None = None) -> set[str]:
    """The methods of :data:`~minibones.viz.DEFAULT_METHODS` that :func:`~minibones.viz.attribute`
    refuses on ``model`` (it returns no map and a note), found by running each one cheaply."""
    model.eval()
    size = size or max(32, getattr(getattr(model, "config", None), "input_size", (3, 32, 32))[1] // 4)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    options = dict(target=0, steps=2, internal_batch_size=2, samples=2, window=size // 2)
    return {method for method in DEFAULT_METHODS if not attribute(model, x, method, **options).ok}


def check_refused_methods(answer: Iterable[str], model: str = "mobilenet_v3_small") -> None:
    """Is ``answer`` the set of default methods the toolkit refuses to draw on ``model``?

    Why: a method that silently degrades (captum's guided backprop on a network that is not
    all ReLU) draws a convincing, wrong map. Knowing which ones apply is the learner's first
    check, before reading any map.
    """
    if isinstance(answer, str) or not all(isinstance(m, str) for m in answer):
        raise ValueError(f"give a set of method names such as {{'saliency'}}, got {answer!r}")
    answer = set(answer)
    unknown = answer - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; the methods are {list(METHODS)}")
    net = minibones.create_model(model, num_classes=10)
    truth = refused_methods(net)
    if answer - truth:
        return verdict(False, "too many: only a method whose assumptions the model breaks is refused; gradients, "
                              "occlusion and Grad-CAM assume nothing about the activation functions")
    return verdict(answer == truth, "some are missing: which activation functions does the model use besides ReLU "
                                    "(viz.non_relu_activations), and which methods only know how to treat a ReLU?")


def occluded_images(image_size: int, window: int) -> int:
    """How many occluded copies of an ``image_size`` square image captum's Occlusion evaluates
    through :func:`~minibones.viz.attribute` with ``window`` (stride = window): counted with a
    hook on a tiny model, minus the one unoccluded image."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    seen = []
    handle = net.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[0]))
    try:
        attribute(net, torch.zeros(1, 3, image_size, image_size), "occlusion", target=0, window=window)
    finally:
        handle.remove()
    return sum(seen) - 1


def check_occlusion_evaluations(answer: int, image_size: int = 32, window: int = 4) -> None:
    """Is ``answer`` the number of occluded images the model sees for one occlusion map?

    Why: occlusion (Zeiler & Fergus 2014) costs one forward pass per window position, so its
    price grows with the square of image size over stride; that is why the notebooks use large
    strides.
    """
    answer = _number(answer)
    if image_size < 1 or not 1 <= window <= image_size:
        raise ValueError(f"need 1 <= window <= image_size, got window={window}, image_size={image_size}")
    truth = occluded_images(image_size, window)
    return verdict(answer == truth, "count the window positions along one side ((side - window) / stride + 1, "
                                    "rounded up; here stride = window), then along both sides; the unoccluded image "
                                    "is not counted")


@torch.no_grad()
def check_gradcam_grid(answer: Sequence[int], model: str = "resnet50", stage: str = "conv4_x",
                       image_size: int = 224) -> None:
    """Is ``answer`` the (height, width) of the grid Grad-CAM computes on at ``stage``, before upsampling?

    Why: Grad-CAM is exactly as sharp as the stage it reads; choosing an earlier stage trades
    class-specificity for resolution (Selvaraju et al. 2017, section 3).
    """
    answer = _pair(answer, "(height, width)")
    with torch.device("meta"):
        net = minibones.create_model(model).eval()
        names = [info.name for info in net.feature_info]
        if stage not in names:
            raise ValueError(f"{model} has no stage {stage!r}; its stages are {names}")
        feature = net.forward_stages(torch.zeros(1, 3, image_size, image_size))[names.index(stage)]
    truth = tuple(feature.shape[-2:])
    return verdict(answer == truth, f"Grad-CAM weighs the channels of {stage}'s own map: divide the image size by "
                                    "the stage's stride in feature_info")


def check_integrated_gradients_total(answer: float, model: nn.Module, x: Tensor, target: int) -> None:
    """Is ``answer`` (within 1%) what the Integrated Gradients of ``x`` for class ``target`` add up to,
    from the toolkit's baseline (all zeros after normalisation: the dataset's mean colour)?

    Why: completeness (Sundararajan et al. 2017, section 3): the attributions sum to the difference
    of two scores of the model, so a map can be checked by adding it up; the notebook reports
    the gap as the convergence ``delta``.
    """
    answer = _number(answer)
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"x must be one normalised image shaped (1, 3, H, W), got {getattr(x, 'shape', x)!r}")
    model.eval()
    with torch.no_grad():
        truth = float(model(x)[0, target] - model(torch.zeros_like(x))[0, target])
    close = abs(answer - truth) <= 0.01 * max(abs(truth), 1e-6)
    return verdict(close, "Integrated Gradients are complete: their sum equals the difference between two scores of "
                          "the model for the target class; which two inputs does the path join?")


__all__ = [
    "check_gradcam_grid", "check_integrated_gradients_total", "check_occlusion_evaluations", "check_refused_methods",
    "occluded_images", "refused_methods",
]
