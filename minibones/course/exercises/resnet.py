"""Checkers for the exercises of notebook 02 (ResNet, He et al. 2016).

Every true answer is computed from the library: the layers of a network built
with the learner's answer, the parameters of a real ``BasicBlock``/``Bottleneck``
or shortcut module. Nothing is read from a stored table.
"""

from __future__ import annotations

import torch
from torch import nn

from minibones.backbone import ModelConfig, count_parameters
from minibones.course.exercises.answers import as_function, as_whole_number, positive_int, verdict
from minibones.models.resnet import PAPER, BasicBlock, Bottleneck, ProjectionShortcut, ResNet, ZeroPadShortcut

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
SHORTCUTS = {"identity": None, "zero-pad": ZeroPadShortcut, "projection": ProjectionShortcut}


def weighted_layers(model: nn.Module) -> int:
    """Convs and fully connected layers on the main path, as the papers count depth
    (the 1x1 projection shortcuts are not counted: ResNet-50 has 50, not 54)."""
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and ".shortcut." not in f".{name}.":
            count += 1
    return count


def check_blocks_per_stage(answer: int, depth: int) -> None:
    """Is ``answer`` the number n of basic blocks per stage that gives He et al.'s CIFAR
    network (section 4.2: three stages of n blocks, widths 16/32/64) ``depth`` weighted layers?

    The truth is not a formula typed here: the network is built with n = ``answer``
    blocks per stage and its weighted layers are counted (:func:`weighted_layers`).

    Why: the paper's 110- and 1202-layer nets are the same design with a larger n;
    depth is the one thing that changes.
    """
    depth = positive_int(depth, "depth")
    answer = as_whole_number(answer, "the number of blocks per stage")
    if answer < 1:
        return verdict(False, "every stage has at least one block; each block has two 3x3 convs, and the "
                              "network adds a stem conv and a fully connected layer")
    config = ModelConfig(name=f"cifar_resnet_n{answer}", reference="none", paper=PAPER)
    net = ResNet(BasicBlock, (answer,) * 3, config, num_classes=10, widths=(1, 2, 4), stem="cifar")  # tiny widths:
    built = weighted_layers(net)  # the count does not depend on them
    if built == depth:
        return verdict(True, "")
    more_or_less = "too many" if built > depth else "too few"
    return verdict(False, f"with n = {answer} the network has {built} weighted layers, {more_or_less}; "
                          "count the convs of one stage, then of three, then add the stem conv and the fc layer")


def check_block_parameters(answer: int, block: str, in_channels: int, channels: int) -> None:
    """Is ``answer`` the number of parameters of ``block`` (``"basic"`` or ``"bottleneck"``)
    built as ``Block(in_channels, channels)`` (stride 1), batch-norm scales and shifts included?

    Why: a bottleneck does its 3x3 conv at a quarter of the block's width; comparing the
    two blocks at the same output width shows what that saves.
    """
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
    in_channels = positive_int(in_channels, "in_channels")
    channels = positive_int(channels, "channels")
    answer = as_whole_number(answer, "the number of parameters")
    module = BLOCKS[block](in_channels, channels)
    truth = count_parameters(module)
    shortcut = count_parameters(module.shortcut)
    if shortcut and answer != truth and answer == truth - shortcut:
        return verdict(False, "in_channels differs from the block's output width, so its shortcut is a 1x1 "
                              "projection conv with a batch norm: count it too")
    convs = "3x3, 3x3" if block == "basic" else "1x1, 3x3, 1x1 (the last one expands by 4)"
    return verdict(answer == truth, f"the convs ({convs}) have no bias; each batch norm has 2 parameters per "
                                    "channel (its scale and shift)")


def check_shortcut_parameters(answer: int, kind: str, in_channels: int, out_channels: int, stride: int = 2) -> None:
    """Is ``answer`` the number of parameters of a shortcut of ``kind`` (``"identity"``,
    ``"zero-pad"``: option A of section 3.3, ``"projection"``: option B) from
    ``in_channels`` to ``out_channels`` at ``stride``?

    Why: the paper's three options differ in cost, and the CIFAR nets (option A) add
    no parameter at all.
    """
    if kind not in SHORTCUTS:
        raise ValueError(f"kind must be one of {sorted(SHORTCUTS)}, got {kind!r}")
    in_channels = positive_int(in_channels, "in_channels")
    out_channels = positive_int(out_channels, "out_channels")
    stride = positive_int(stride, "stride")
    answer = as_whole_number(answer, "the number of parameters")
    if SHORTCUTS[kind] is None:
        if in_channels != out_channels or stride != 1:
            raise ValueError("an identity shortcut needs in_channels == out_channels and stride 1")
        module = nn.Identity()
    else:
        module = SHORTCUTS[kind](in_channels, out_channels, stride)
    truth = count_parameters(module)
    return verdict(answer == truth, f"read the {type(module).__name__} class: which layers does it have, and "
                                    "which of them have weights? (a 1x1 conv has in*out weights, no bias)")


def main_path_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight of every conv and fc layer on the main path, input to output (the layers
    :func:`weighted_layers` counts)."""
    return [m.weight for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and ".shortcut." not in f".{name}."]


def reference_gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The norms :func:`check_gradient_norms` expects: the gradient of this batch's cross-entropy
    with respect to every main-path weight, input to output (notebook 02 measures with it)."""
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(images), labels).backward()
    return torch.stack([w.grad.norm() for w in main_path_weights(model)])


def check_gradient_norms(gradient_norms) -> None:
    """Does the learner's ``gradient_norms(model, images, labels)`` return, as a 1-D tensor,
    the norm of the gradient of the cross-entropy loss of this one batch with respect to the
    weight of every main-path conv and fc layer, input to output (shortcut projections left out)?

    The truth is computed here on a small ResNet with projection shortcuts, whose parameters
    already hold gradients from an earlier batch: a function that does not clear them first
    returns the sum of two batches' gradients.

    Why: a gradient-norm profile is the measurement behind section 4 of notebook 02 (and
    He et al.'s section 4.1); it is only meaningful per layer, per batch, in depth order.
    """
    as_function(gradient_norms, "check_gradient_norms(gradient_norms)")
    config = ModelConfig(name="tiny_resnet", reference="none", paper=PAPER)
    torch.manual_seed(0)
    model = ResNet(BasicBlock, (1, 1), config, num_classes=5, widths=(4, 8), stem="imagenet").train()
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 5
    nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), labels.flip(0)).backward()  # stale gradients
    stale = torch.stack([w.grad.norm() for w in main_path_weights(model)])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    answer = gradient_norms(model, images, labels)
    model.load_state_dict(state)  # undo any batch-norm statistics the learner's forward pass updated
    truth = reference_gradient_norms(model, images, labels)

    if not isinstance(answer, torch.Tensor):
        try:
            answer = torch.stack([torch.as_tensor(a, dtype=torch.float32) for a in answer])
        except (TypeError, RuntimeError, ValueError):
            return verdict(False, f"return a 1-D tensor of {len(truth)} norms (one per layer), got {type(answer).__name__}")
    answer = answer.detach().float().flatten()
    if len(answer) != len(truth):
        every = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
        hint = (" (the shortcut projections are not on the main path: leave them out)" if len(answer) == every else "")
        return verdict(False, f"this network has {len(truth)} main-path conv and fc layers, your function returned "
                              f"{len(answer)} norms{hint}")
    close = lambda a, b: torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    if close(answer, truth):
        return verdict(True, "")
    if close(answer, truth.flip(0)):
        return verdict(False, "the norms are in reverse order: the first one must be the stem conv's, the last the fc's")
    if close(answer, torch.stack([w.detach().norm() for w in main_path_weights(model)])):
        return verdict(False, "these are the norms of the weights themselves; measure the weights' .grad")
    if not close(stale, truth) and close(answer, stale):
        return verdict(False, "these are the gradients of an earlier batch: run the forward and backward pass first")
    return verdict(False, "the norms differ from those of this batch's gradients: clear the gradients the model "
                          "already holds (model.zero_grad()) before the backward pass, and use the cross-entropy "
                          "of model(images) against labels")


__all__ = ["check_block_parameters", "check_blocks_per_stage", "check_gradient_norms", "check_shortcut_parameters",
           "main_path_weights", "reference_gradient_norms", "weighted_layers"]
