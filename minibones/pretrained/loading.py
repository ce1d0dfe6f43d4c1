"""Using the weights: loading them into a model with the preprocessing they expect, and predicting.

:func:`load_pretrained` is where ``create_model(name, pretrained=True)`` ends: the checkpoint
that :func:`~minibones.pretrained.weights.weights_for` names is fetched and verified
(:func:`~minibones.pretrained.fetching.fetch`), converted with the family's name map (all or
nothing) and the reference's evaluation transform is attached as ``model.transforms``.
:func:`predict` then gives the top-k ImageNet classes of an image, with that preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minibones.backbone import Backbone, ModelConfig, mode
from minibones.porting import load_reference_weights
from minibones.pretrained.fetching import PretrainedWeightsError, fetch
from minibones.pretrained.weights import Preprocess, PretrainedWeights, imagenet_categories, weights_for


def load_pretrained(
    model: Backbone,
    *,
    weights: str | PretrainedWeights | None = None,
    progress: bool = True,
    check_hash: bool = True,
    offline: bool | None = None,
) -> Backbone:
    """Load the reference's published ImageNet weights into ``model`` and attach their preprocessing.

    ``weights``: a torchvision tag (``"IMAGENET1K_V1"``) or a :class:`PretrainedWeights`;
    by default :func:`weights_for` decides. A model built with another number of classes
    (``create_model("resnet18", num_classes=10, pretrained=True)``) gets every pretrained
    tensor except the classifier, which keeps its fresh initialisation: transfer learning.
    """
    if not isinstance(weights, PretrainedWeights):
        weights = weights_for(model, weights)
    path = fetch(weights, progress=progress, check_hash=check_hash, offline=offline)

    own_classifiers = model.classifier_layers() if model.num_classes != len(weights.categories) else {}
    if own_classifiers:
        model.reset_classifier(len(weights.categories))  # load into heads of the checkpoint's size ...
    try:
        load_reference_weights(model, path, model.name_map_for(weights.layout))
    finally:
        for layer_path, layer in own_classifiers.items():
            model.set_submodule(layer_path, layer)  # ... then put the model's own classifiers back
    for name, value in weights.reference_kwargs.items():
        if hasattr(model, name):  # e.g. GoogLeNet's transform_input, switched on with the weights
            setattr(model, name, value)
    model.pretrained_weights = weights
    model.transforms = weights.preprocess
    return model


def preprocess_for(model: nn.Module) -> Preprocess:
    """The preprocessing ``model`` expects: its pretrained weights' if loaded, else its reference's
    published one, else (teaching variants) resize by 1/0.875 and crop to ``config.input_size``."""
    if isinstance(getattr(model, "transforms", None), Preprocess):
        return model.transforms
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"{type(model).__name__} is not a minibones model, so its preprocessing is unknown: "
                        "pass preprocess=preprocess_for(the minibones model), or a Preprocess of your own")
    try:
        return weights_for(model).preprocess
    except (PretrainedWeightsError, ImportError, ValueError):
        size = config.input_size[1]
        return Preprocess(round(size / 0.875), size, tuple(config.mean), tuple(config.std))


# --- predictions ------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float

    def __str__(self) -> str:
        return f"{self.probability:6.1%}  {self.label} ({self.index})"


@torch.no_grad()
def predict(
    model: nn.Module,
    image,
    topk: int = 5,
    *,
    preprocess: Preprocess | None = None,
    categories: tuple[str, ...] | None = None,
) -> list[Prediction]:
    """The ``topk`` most probable classes of one image (PIL, (H, W, 3) array or (3, H, W) tensor).

    ``model`` can be a minibones model or its reference: pass ``preprocess=preprocess_for(ours)``
    for the reference, so both see exactly the same input.
    """
    preprocess = preprocess or preprocess_for(model)
    categories = categories_for(model) if categories is None else categories
    parameter = next(model.parameters())
    x = preprocess(image).unsqueeze(0).to(parameter.device, parameter.dtype)
    with mode(model, training=False):
        logits = model(x)
    if logits.shape[-1] != len(categories):
        raise ValueError(
            f"the model has {logits.shape[-1]} outputs but {len(categories)} class names were given; "
            "pass categories=[...] with one name per output"
        )
    return top_predictions(logits.float().softmax(-1)[0], categories, topk)


def categories_for(model: nn.Module) -> tuple[str, ...]:
    """The class names of the model's pretrained weights, else ImageNet's."""
    weights = getattr(model, "pretrained_weights", None)
    return tuple(weights.categories) if weights is not None else tuple(imagenet_categories())


def top_predictions(probabilities: torch.Tensor, categories, k: int = 5) -> list[Prediction]:
    """The ``k`` most probable classes of one image's (num_classes,) probabilities, with their names."""
    top = probabilities.topk(min(k, len(categories)))
    return [Prediction(int(i), categories[int(i)], float(p)) for p, i in zip(top.values, top.indices)]
