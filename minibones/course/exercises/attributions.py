"""Checkers for notebook 08 (attributions).

The true answers come from the library and from the model itself: which methods
:func:`minibones.viz.attribute` refuses (it is run), how many occluded images captum
evaluates (they are counted with a hook), the grid Grad-CAM works on (a forward pass on
the meta device), what Integrated Gradients add up to (two forward passes), and what the
learner's own saliency map and deletion score should return (the library's, on the same
model and image). The code checkers run the learner's function, compare, and when it is
wrong, recognise the usual mistakes to say which one it is.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

import minibones
from minibones.course.exercises.answers import (as_function, as_number, as_whole_number, as_whole_numbers, number_returned,
                                        verdict)
from minibones.viz import DEFAULT_METHODS, METHODS, attribute


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
                                    "(viz.non_relu_activations), and which methods only know how to treat a "
                                    "rectifier (ReLU or ReLU6)?")


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
    answer = as_whole_number(answer, "the number of occluded images")
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
    answer = as_whole_numbers(answer, "the grid (height, width)", count=2)
    with torch.device("meta"):
        net = minibones.create_model(model).eval()
        index = net.stage_index(stage)
        feature = net.forward_stages(torch.zeros(1, 3, image_size, image_size))[index]
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
    answer = as_number(answer, "the total")
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"x must be one normalised image shaped (1, 3, H, W), got {getattr(x, 'shape', x)!r}")
    model.eval()
    with torch.no_grad():
        truth = float(model(x)[0, target] - model(torch.zeros_like(x))[0, target])
    close = abs(answer - truth) <= 0.01 * max(abs(truth), 1e-6)
    return verdict(close, "Integrated Gradients are complete: their sum equals the difference between two scores of "
                          "the model for the target class; which two inputs does the path join?")


def _run_learner(function, *args) -> tuple[object, str | None]:
    """The learner's function's result, or the reason it could not give one."""
    name = getattr(function, "__name__", "your function")
    try:
        return function(*args), None
    except NotImplementedError:
        return None, f"{name} is not written yet: replace the raise by your code"
    except Exception as error:  # the learner's code: any error is a hint, not a crash of the notebook
        return None, f"{name} raised {type(error).__name__}: {error}"


def _close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-6 * float(b.abs().max()))


def check_saliency(function, model: nn.Module, x: Tensor, target: int) -> None:
    """Does ``function(model, x, target)`` return Simonyan et al.'s saliency map, (H, W)?

    The map (Simonyan, Vedaldi & Zisserman 2014, section 3.1) is the gradient of the class
    *score* (the logit, before the softmax) with respect to the input pixels, its absolute
    value, and the largest of the three colours at each pixel. It is compared with
    :func:`minibones.viz.attribute`'s ``"saliency"`` (captum's ``Saliency``); the usual
    mistakes (no absolute value, a sum over colours, the probability instead of the score,
    gradients left on the model's parameters) are recognised and named.
    """
    as_function(function, "check_saliency(my_saliency, model, x, target)")
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"x must be one normalised image shaped (1, 3, H, W), got {getattr(x, 'shape', x)!r}")
    model.eval()
    truth = attribute(model, x, "saliency", target=target).map  # (H, W)
    model.zero_grad(set_to_none=True)
    answer, problem = _run_learner(function, model, x.detach().clone(), target)
    if problem:
        return verdict(False, problem)
    if not isinstance(answer, Tensor):
        return verdict(False, f"return a tensor shaped (H, W) = {tuple(truth.shape)}, not a {type(answer).__name__}")
    answer = answer.detach().cpu()
    if answer.shape != truth.shape:
        return verdict(False, f"your map is shaped {tuple(answer.shape)}; it should be (H, W) = {tuple(truth.shape)}: "
                              "one number per pixel, the largest |gradient| over the three colours")
    left = [name for name, p in model.named_parameters() if p.grad is not None]
    if _close(answer, truth):
        if left:
            model.zero_grad(set_to_none=True)
            return verdict(False, "the map is right, but your function left gradients in the model's parameters "
                                  f"({len(left)} tensors have a .grad): use torch.autograd.grad(score, x), which "
                                  "computes only the gradient you ask for")
        return verdict(True, "")
    gradient, probability_gradient = _input_gradients(model, x, target)
    mistakes = [
        (gradient.amax(0), "the sign matters here: take the absolute value of the gradient before the largest colour"),
        (gradient.abs().sum(0), "you added the three colours: Simonyan et al. take the largest |gradient| over them"),
        (gradient.abs().mean(0), "you averaged the three colours: take the largest |gradient| over them"),
        (gradient.sum(0), "take the absolute value of the gradient, and the largest over the colours (not the sum)"),
        (probability_gradient.abs().amax(0), "that is the gradient of the softmax probability; differentiate the "
                                             "class score (the logit, model(x)[0, target]) instead"),
    ]
    for candidate, hint in mistakes:
        if _close(answer, candidate):
            return verdict(False, hint)
    return verdict(False, "the values differ from the saliency map: differentiate model(x)[0, target] with respect "
                          "to x (a copy with requires_grad), then take |gradient| and its largest value over colours")


def _input_gradients(model: nn.Module, x: Tensor, target: int) -> tuple[Tensor, Tensor]:
    """d logit / d x and d probability / d x, each (3, H, W)."""
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    (logit_gradient,) = torch.autograd.grad(logits[0, target], x, retain_graph=True)
    (probability_gradient,) = torch.autograd.grad(logits.softmax(1)[0, target], x)
    return logit_gradient[0], probability_gradient[0]


def check_deletion_auc(function, model: nn.Module, x: Tensor, target: int, steps: int = 10) -> None:
    """Does ``function(model, x, ranking, target, steps)`` return the area under Petsiuk et al.'s
    deletion curve?

    The protocol (the one :func:`minibones.viz.deletion_insertion` follows): rank the pixels by
    ``ranking`` (an (H, W) map, highest first); for k = 0 .. ``steps``, set the first
    k / steps of them (all three colours) to 0, the mean colour after normalisation, and
    record the softmax probability of ``target``; the score is the area under that curve
    over the fraction of pixels, from 0 to 1, by the trapezoid rule. The ranking given to
    ``function`` is random in float64, so that no two pixels tie (with ties, the order, and so
    the curve, would depend on the sorting algorithm).
    """
    as_function(function, "check_deletion_auc(my_deletion_auc, model, x, target)")
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"x must be one normalised image shaped (1, 3, H, W), got {getattr(x, 'shape', x)!r}")
    from minibones.viz.sanity import deletion_insertion

    model.eval()
    ranking = torch.rand(tuple(x.shape[-2:]), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    truth = deletion_insertion(model, x, ranking, target, steps=steps)
    answer, problem = _run_learner(function, model, x.detach().clone(), ranking.clone(), target, steps)
    if problem:
        return verdict(False, problem)
    if (number := number_returned(answer)) is None:
        return verdict(False, f"return one number (the area), not a {type(answer).__name__}")
    answer = float(number)
    if abs(answer - truth.deletion_auc) <= 1e-4:
        return verdict(True, "")
    reversed_order = deletion_insertion(model, x, -ranking, target, steps=steps).deletion_auc
    mistakes = [
        (reversed_order, "you deleted the least important pixels first: sort the ranking in descending order"),
        (float(truth.deletion.mean()), "you averaged the points of the curve: integrate over the fraction of pixels "
                                       "(0 to 1) with the trapezoid rule, np.trapezoid(probabilities, fractions)"),
        (float(truth.deletion[1:].mean()), "integrate the curve with the trapezoid rule over fractions 0 to 1, "
                                           "starting from the untouched image (fraction 0)"),
        (float(np.trapezoid(truth.deletion, dx=1.0)), "the x axis is the fraction of pixels deleted (0 to 1), not "
                                                      "the step number"),
        (float(truth.insertion_auc), "that is the insertion curve: delete pixels from the image instead"),
    ]
    for value, hint in mistakes:
        if abs(answer - value) <= 1e-4:
            return verdict(False, hint)
    return verdict(False, "the area differs: at step k set the top k/steps of the pixels (all three colours) to 0, "
                          "the mean colour after normalisation, and record the softmax probability of the target "
                          "class; then integrate the steps + 1 probabilities over the fractions 0, 1/steps, ..., 1")


__all__ = [
    "check_deletion_auc", "check_gradcam_grid", "check_integrated_gradients_total", "check_occlusion_evaluations",
    "check_refused_methods", "check_saliency", "occluded_images", "refused_methods",
]
