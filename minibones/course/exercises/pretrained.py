"""Checkers for notebook 09 (pretrained vs from scratch).

Every truth is computed from the library: the freezing and the per-stage learning
rates from :mod:`minibones.transfer`, the multiply-adds from the counter in
:mod:`minibones.compare`, the reference module from a real port of a randomly
initialised reference. The hints point at the reasoning, not at the number.

Two exercises have the learner write code: :func:`check_port` runs their renaming of
a checkpoint against :func:`minibones.porting.convert_state_dict` (on a torchvision
ResNet-18 and on the Lite0 file installed with the course), and
:func:`check_linear_probe` compares their linear probe with
:func:`minibones.transfer.linear_probe` on the notebook's own features.
"""

from __future__ import annotations

import math

import torch

import minibones
from minibones.course.exercises.answers import as_function, as_number, as_whole_number, verdict


def _model(name: str, **kwargs):
    if not isinstance(name, str):
        raise ValueError(f"model must be a model name such as 'resnet18', got {type(name).__name__}")
    return minibones.create_model(name, **kwargs)


def check_linear_probe_parameters(answer: int, model: str = "resnet18", num_classes: int = 5) -> None:
    """Is ``answer`` the number of parameters a linear probe of ``model`` trains on ``num_classes`` classes?

    Why it matters: a linear probe learns only the new classifier, so its cost (and
    its risk of over-fitting a small dataset) is tiny whatever the backbone's size.
    """
    answer = as_whole_number(answer, "the number of parameters")
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
    answer = as_number(answer, "the learning rate")
    from minibones.transfer import param_groups

    net = _model(model)
    net.stage_index(stage)
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
    answer = as_number(answer, "the GMACs")
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
    from minibones.parity import match_reference_modules
    from minibones.reference import build_reference, randomize_

    torch.manual_seed(0)
    net = _model(model).eval()
    index = net.stage_index(stage)
    reference = randomize_(build_reference(net)).eval()
    minibones.load_reference_weights(net, reference)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    truth = match_reference_modules(net, reference, x)[index][0]
    return verdict(answer.strip() == truth,
                   f"look for the torchvision module whose output ends the stage: print the reference "
                   f"(minibones.reference.build_reference(minibones.create_model({model!r}))) or read the family's "
                   f"name_map, and count: torchvision may number downsampling layers and stages in one list")


# --- code exercises: the learner writes the function ---------------------------------


def _port_cases():
    """(what, state dict, name map, expected) triples: a torchvision ResNet-18, the Lite0 file
    installed with the course in its own naming, and a small table that drops a tensor."""
    from minibones.porting import convert_state_dict
    from minibones.pretrained import fetch, weights_for
    from minibones.reference import build_reference

    torch.manual_seed(0)
    resnet = _model("resnet18")
    reference = dict(build_reference(resnet).state_dict())
    cases = [("torchvision's resnet18 with resnet18.name_map", reference, resnet.name_map,
              convert_state_dict(resnet, reference, resnet.name_map))]
    with torch.device("meta"):  # only its names and table are needed: no memory, no initialisation
        lite = _model("efficientnet_lite0")
    weights = weights_for(lite)
    packaged = torch.load(fetch(weights), map_location="cpu", weights_only=True)
    lite_map = lite.name_map_for(weights.layout)
    cases.append(("the packaged Lite0 file with its efficientnet_pytorch name map", packaged, lite_map,
                  convert_state_dict(lite, packaged, lite_map)))
    small = {"aux.fc.weight": torch.ones(2), "features.0.weight": torch.zeros(3), "fc.bias": torch.arange(4.0)}
    small_map = [(r"^aux\.", None), (r"^features\.", "stem."), (r"^stem\.0\.", "stem.conv."), (r"^fc\.", "head.fc.")]
    cases.append(("a table with a None rule", small, small_map,
                  {"stem.conv.weight": small["features.0.weight"], "head.fc.bias": small["fc.bias"]}))
    return cases


def check_port(port) -> None:
    """Does ``port(state_dict, name_map)`` rename a checkpoint as :func:`minibones.porting.convert_state_dict` does?

    Why it matters: a checkpoint is a dictionary from names to tensors; using another
    implementation's weights is renaming every tensor by the family's table, in order,
    without touching the tensors. Everything else in porting is checking.
    """
    from minibones.porting import rename

    as_function(port, "check_port(port)")
    for what, state_dict, name_map, expected in _port_cases():
        given = dict(state_dict)
        got = port(given, name_map)
        if not isinstance(got, dict):
            return verdict(False, f"return a dict from new names to tensors; for {what} you returned {type(got).__name__}")
        if given != state_dict or list(given) != list(state_dict):
            return verdict(False, "build a new dictionary: your port changed the state dict it was given")
        for name in state_dict:
            target = rename(name, name_map)
            if target is None and any(got.get(key) is state_dict[name] for key in got):
                return verdict(False, f"{what}: {name!r} matches a rule whose replacement is None, "
                               "so it must be dropped, not kept")
            if target is not None and target not in got:
                near = [key for key in got if got[key] is state_dict[name]]
                yours = f"yours gave {near[0]!r}" if near else "yours has no tensor for it"
                return verdict(False, f"{what}: {name!r} should become {target!r}, {yours}; apply every "
                               "(pattern, replacement) pair, in order, each to the result of the previous one")
        extra = sorted(set(got) - set(expected))
        if extra:
            return verdict(False, f"{what}: your port produced {extra[0]!r}, a name the model does not have")
        changed = [name for name in expected if not torch.equal(got[name], expected[name])]
        if changed:
            return verdict(False, f"{what}: {changed[0]!r} holds another tensor than the reference's; "
                           "a port renames, it must not change, copy into the wrong name, or reorder values")
    return verdict(True, "")


def check_linear_probe(fit_probe, features: torch.Tensor, labels: torch.Tensor,
                       test_features: torch.Tensor, test_labels: torch.Tensor) -> None:
    """Does ``fit_probe(features, labels)`` give a linear probe as accurate as the library's?

    ``fit_probe`` returns a function from test features to predicted classes (N,) or logits
    (N, C). It is fit on 3 and on all labelled images per class (the same images as the
    library's :func:`minibones.transfer.linear_probe`, a logistic regression fit to
    convergence) and must reach its test accuracy within 3 points. The test labels are
    only used to score, never given to your function.
    """
    from minibones.transfer import accuracy, labelled_subset, linear_probe

    as_function(fit_probe, "check_linear_probe(fit_probe, features, labels, test_features, test_labels)")
    if features.ndim != 2 or test_features.ndim != 2 or len(features) != len(labels):
        raise ValueError("give the (N, D) training features, their (N,) labels, and the test features and labels "
                         "of section 5: features, train_labels, test_features, test_labels")
    num_classes = int(labels.max()) + 1
    for per_class in (3, "all"):
        chosen = labelled_subset(labels, per_class, seed=0).to(features.device)
        predict = fit_probe(features[chosen].clone(), labels[chosen].clone())
        if not callable(predict):
            return verdict(False, f"fit_probe must return a function of the test features, it returned "
                           f"{type(predict).__name__}")
        with torch.no_grad():
            out = torch.as_tensor(predict(test_features.clone()))
        if out.ndim == 2 and out.shape == (len(test_features), num_classes):
            out = out.argmax(-1)
        if out.shape != (len(test_features),):
            return verdict(False, f"your predictor returned shape {tuple(out.shape)} for {len(test_features)} test "
                           f"images: return one class per image, shape ({len(test_features)},), or logits "
                           f"({len(test_features)}, {num_classes})")
        yours = float((out.to(test_labels.device).long() == test_labels).float().mean())
        truth = accuracy(linear_probe(features[chosen], labels[chosen], num_classes), test_features, test_labels)
        if out.unique().numel() <= 1:
            return verdict(False, f"with {per_class} labelled images per class your probe predicts one class for "
                           "every image: is it trained at all? (zero the gradients, step the optimizer, many steps)")
        if yours < truth - 0.03:
            return verdict(False, f"with {per_class} labelled images per class your probe scores {yours:.1%} on the "
                           f"test features, the library's {truth:.1%}: train until the loss stops falling "
                           "(full batch, a few hundred steps), centre the features (subtract their mean), and "
                           "keep a small L2 penalty on the weights")
    return verdict(True, "")
