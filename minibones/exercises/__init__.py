"""Small checkers for the exercises at the end of each notebook.

Each checker computes the true answer from the library itself (never from a
stored table), says whether the learner's answer is right, and if not gives a
hint rather than the answer. The checkers shared by several notebooks live
here; those of one notebook live in a module named after its topic
(``minibones.exercises.vgg`` for notebook 01, and so on).
"""

from __future__ import annotations

import torch

import minibones
from minibones.backbone import count_parameters


def positive_int(value, what: str) -> int:
    """``value`` if it is a whole number of at least 1 (a size, a count), else a clear error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive whole number, got {value!r}")
    return value


def as_number(answer, what: str) -> float:
    """A learner's numeric answer as a float; anything else (a string, a tuple) gets a clear error."""
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        raise ValueError(f"give {what} as a number, got {answer!r}")
    return float(answer)


def verdict(correct: bool, hint: str) -> None:
    """Print the one-line verdict every checker gives: "correct", or "not yet: <hint>"."""
    print("correct" if correct else f"not yet: {hint}")


@torch.no_grad()
def check_stage_shape(answer: tuple[int, ...], model: str, stage: str, image_size: tuple[int, int]) -> None:
    """Is ``answer`` the (C, H, W) of ``stage`` of ``model`` for an image of ``image_size`` = (H, W)?"""
    net = minibones.create_model(model).eval()
    names = [info.name for info in net.feature_info]
    if stage not in names:
        raise ValueError(f"{model} has no stage {stage!r}; its stages are {names}")
    index = names.index(stage)
    truth = tuple(net.forward_stages(torch.zeros(1, 3, *image_size))[index].shape[1:])
    info = net.feature_info[index]
    answer = tuple(answer)
    if len(answer) != 3:
        return verdict(False, "give three numbers: (channels, height, width)")
    if answer[0] != truth[0]:
        return verdict(False, "look at the channels in model.feature_info")
    hint = (f"{stage} sits at stride {info.stride}: divide height and width by it "
            "(each stride-2 layer rounds an odd size up)")
    return verdict(answer == truth, hint)


def check_parameter_count(answer: int, model: str, module: str = "") -> None:
    """Is ``answer`` the number of parameters of ``module`` (a dotted path, '' = whole model) of ``model``?"""
    net = minibones.create_model(model)
    truth = count_parameters(net.get_submodule(module) if module else net)
    where = f"{model}.{module}" if module else model
    return verdict(int(answer) == truth, f"count weights and biases of every layer in {where}; "
                    "a Linear(a, b) has a*b + b, a Conv2d(a, b, k) without bias has a*b*k*k")


def check_receptive_field(answer: int, layers: list[tuple[int, int]]) -> None:
    """Is ``answer`` the receptive field of a stack of (kernel, stride) layers?

    r grows by (k - 1) times the product of all earlier strides (the 'jump').
    """
    size, jump = 1, 1
    for kernel, stride in layers:
        size += (kernel - 1) * jump
        jump *= stride
    return verdict(int(answer) == size, "start from 1; each layer adds (kernel - 1) x (product of the strides before it)")
