"""Checkers for notebook 09 (pretrained vs from scratch).

Every truth is computed from the library: the freezing and the per-stage learning
rates from :mod:`minibones.transfer`, the FLOPs from the counter in
:mod:`minibones.compare`, the reference module from a real port of a randomly
initialised reference. The hints point at the reasoning, not at the number.
"""

from __future__ import annotations

import math

import torch

import minibones
from minibones.exercises import verdict


def _model(name: str, **kwargs):
    if not isinstance(name, str):
        raise ValueError(f"model must be a model name such as 'resnet18', got {type(name).__name__}")
    return minibones.create_model(name, **kwargs)


def _stage(net, stage: str) -> int:
    names = net.stage_names()
    if stage not in names:
        raise ValueError(f"{net.config.name} has no stage {stage!r}; its stages are {names}")
    return names.index(stage)


def _number(answer, what: str) -> float:
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        raise ValueError(f"give {what} as a number, got {type(answer).__name__}")
    return float(answer)


def check_linear_probe_parameters(answer: int, model: str = "resnet18", num_classes: int = 5) -> None:
    """Is ``answer`` the number of parameters a linear probe of ``model`` trains on ``num_classes`` classes?

    Why it matters: a linear probe learns only the new classifier, so its cost (and
    its risk of over-fitting a small dataset) is tiny whatever the backbone's size.
    """
    answer = _number(answer, "a parameter count")
    from minibones.transfer import freeze

    net = _model(model)
    net.reset_classifier(num_classes)
    freeze(net)
    truth = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return verdict(answer == truth, f"only the new classifier trains: a Linear(a, b) has a*b + b parameters, "
                   f"and a is the width of the vector {model}'s classifier reads (model.num_features)")


def check_stage_learning_rate(answer: float, model: str = "resnet18", stage: str = "conv2_x",
                              lr: float = 0.01, decay: float = 0.5) -> None:
    """Is ``answer`` the learning rate that ``param_groups(model, lr, decay=decay)`` gives ``stage``?

    Why it matters: discriminative fine-tuning moves the early, generic stages least;
    knowing the rule lets you choose ``decay`` instead of trusting it.
    """
    answer = _number(answer, "a learning rate")
    from minibones.transfer import param_groups

    net = _model(model)
    _stage(net, stage)
    rates = {group["name"]: group["lr"] for group in param_groups(net, lr, decay=decay)}
    truth = rates[stage]
    return verdict(math.isclose(answer, truth, rel_tol=1e-6),
                   f"the last stage gets lr * decay, and each earlier stage decay times the rate of the stage after it; "
                   f"count how many stages lie from {stage} to the end")


def check_gmacs(answer: float, model: str = "resnet18", image_size: int = 160) -> None:
    """Is ``answer`` the multiply-adds (in billions) of one ``image_size`` x ``image_size`` image through ``model``?
    Within 2%.

    Why it matters: the cost of a convolutional network grows with the number of
    positions, so halving the side divides it by about four; only the classifier does
    not scale.
    """
    answer = _number(answer, "GMACs")
    from minibones.compare import count_flops

    net = _model(model)
    truth = count_flops(net, image_size) / 2e9
    return verdict(abs(answer - truth) <= 0.02 * truth,
                   f"count_flops(model, 224) / 2e9 is the figure at 224; every convolution's cost is proportional "
                   f"to the number of positions of its output, and {image_size} x {image_size} has "
                   f"({image_size}/224)^2 as many")


@torch.no_grad()
def check_reference_module(answer: str, model: str = "resnet50", stage: str = "conv4_x") -> None:
    """Is ``answer`` the name of the reference's module whose output equals ``stage`` of ``model``?

    Why it matters: porting is a renaming. Knowing which reference module computes each
    stage is what the family's name map encodes, and what lets you take features from a
    reference model (torchvision's ``create_feature_extractor``) at the same places.
    """
    if not isinstance(answer, str):
        raise ValueError(f"give the module's name as a string such as 'layer1', got {type(answer).__name__}")
    from minibones.compare import match_reference_modules
    from minibones.reference import build_reference, randomize_

    torch.manual_seed(0)
    net = _model(model).eval()
    index = _stage(net, stage)
    reference = randomize_(build_reference(net)).eval()
    minibones.load_reference_weights(net, reference)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    stages = net.forward_stages(x)
    truth = match_reference_modules(reference, stages, x)[index][0]
    return verdict(answer.strip() == truth,
                   f"look for the torchvision module that ends the stage: print(reference) or the family's name_map; "
                   f"{model}'s stages after the stem are numbered from 1 in torchvision")
