"""Small checkers for the exercises at the end of each notebook.

Each checker computes the true answer from the library itself (never from a
stored table), says whether the learner's answer is right, and if not gives a
hint rather than the answer. The checkers shared by several notebooks live
here; those of one notebook live in a module named after its topic
(``minibones.course.exercises.vgg`` for notebook 01, and so on). All of them read the
learner's answer, and print their verdict, through :mod:`minibones.course.exercises.answers`.
"""

from __future__ import annotations

import torch

import minibones
from minibones.backbone import count_parameters
from minibones.course.exercises.answers import as_function, as_whole_number, as_whole_numbers, number_returned, verdict


@torch.no_grad()
def check_stage_shape(answer: tuple[int, ...], model: str, stage: str, image_size: tuple[int, int]) -> None:
    """Is ``answer`` the (C, H, W) of ``stage`` of ``model`` for an image of ``image_size`` = (H, W)?"""
    net = minibones.create_model(model).eval()
    index = net.stage_index(stage)
    truth = tuple(net.forward_stages(torch.zeros(1, 3, *image_size))[index].shape[1:])
    info = net.feature_info[index]
    answer = as_whole_numbers(answer, "(channels, height, width)", count=3)
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
    answer = as_whole_number(answer, "the number of parameters")
    return verdict(answer == truth, f"count weights and biases of every layer in {where}; "
                   "a Linear(a, b) has a*b + b, a Conv2d(a, b, k) without bias has a*b*k*k")


def check_receptive_field(answer: int, layers: list[tuple[int, int]]) -> None:
    """Is ``answer`` the receptive field of a stack of (kernel, stride) layers?

    r grows by (k - 1) times the product of all earlier strides (the 'jump').
    """
    answer = as_whole_number(answer, "the receptive field")
    return verdict(answer == receptive_field_of(layers),
                   "start from 1; each layer adds (kernel - 1) x (product of the strides before it)")


def receptive_field_of(layers: list[tuple[int, int]]) -> int:
    """The recurrence the checkers compare with: r grows by (k - 1) times the jump (the product of
    all earlier strides)."""
    size, jump = 1, 1
    for kernel, stride in layers:
        size += (kernel - 1) * jump
        jump *= stride
    return size


def check_receptive_field_function(function) -> None:
    """Does ``function(layers)`` give the receptive field of every stack of (kernel, stride) layers?

    It is tried on the stems of the course's backbones and on 200 random stacks, so a function that
    only knows one answer does not pass.
    """
    as_function(function, "check_receptive_field_function(receptive_field)")
    generator = torch.Generator().manual_seed(0)
    cases = [[], [(3, 1)], [(7, 2), (3, 2)], [(3, 2), (3, 1), (3, 2), (3, 1)], [(1, 1), (1, 2), (1, 1)]]
    for _ in range(200):
        depth = int(torch.randint(1, 9, (1,), generator=generator))
        kernels = torch.randint(0, 4, (depth,), generator=generator) * 2 + 1  # 1, 3, 5, 7
        strides = torch.randint(1, 3, (depth,), generator=generator)
        cases.append(list(zip(kernels.tolist(), strides.tolist())))
    for layers in cases:
        answer = function(list(layers))
        truth = receptive_field_of(layers)
        if number_returned(answer, whole=True) != truth:
            hint = ("a stack with no layers sees 1 pixel: start from 1" if not layers else
                    f"for layers {layers} the answer is {truth}, yours gave {answer!r}; "
                    "each layer adds (kernel - 1) x jump, then multiplies the jump by its stride")
            return verdict(False, hint)
    return verdict(True, "")


@torch.no_grad()
def check_measured_strides(function, models: tuple[str, ...] = ("resnet18", "efficientnet_lite0", "vgg11", "vit_b_16")) -> None:
    """Does ``function(model, size)`` measure each stage's stride from the shapes of ``forward_stages``,
    as ``feature_info`` states them? Tried on several families (ViT's stages all share one stride)."""
    as_function(function, "check_measured_strides(measured_strides)")
    for name in models:
        net = minibones.create_model(name).eval()
        size = 224
        truth = [info.stride for info in net.feature_info]
        net.feature_info = _Hidden()  # the point is to measure them
        answer = function(net, size)
        if not isinstance(answer, (list, tuple)) or len(answer) != len(truth):
            return verdict(False, f"{name} has {len(truth)} stages: return one stride per map of forward_stages")
        if [int(a) if not isinstance(a, bool) else a for a in answer] != truth:
            return verdict(False, f"{name}: {list(answer)} differs from feature_info's strides; the stride of a map is "
                                  "the input's size divided by the map's size (run forward_stages on torch.zeros(1, 3, size, size))")
    return verdict(True, "")


class _Hidden:
    """Stands in for ``feature_info`` while a function that must measure the strides is checked."""

    def _refuse(self, *args):
        raise ValueError("feature_info is hidden during this check: measure the strides from the shapes "
                         "that forward_stages returns")

    __iter__ = __len__ = __getitem__ = _refuse
