"""The contract every minibones model keeps, written once.

A backbone turns an image into a pyramid of feature maps (one per *stage*, each
at a known stride and width), and a *head* turns the last map into logits.
Necks (FPN) read the pyramid through ``forward_stages`` and ``feature_info``;
classification reads ``forward``. Families subclass :class:`Backbone` and write
their own ``forward_stages`` top to bottom, so the data flow stays on one screen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10's training images, for the 32x32 teaching variants
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ModelConfig:
    """What a model expects and what it is checked against.

    ``reference`` names the constructor whose weights this model reproduces
    (``"torchvision.models.resnet50"``); ``reference_kwargs`` are passed to it.
    """

    name: str
    reference: str
    paper: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    reference_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StageInfo:
    """One level of the feature pyramid: its name, width, stride, and the module producing it."""

    name: str
    channels: int
    stride: int
    module: str


class Backbone(nn.Module):
    """Base class: subclasses set ``config``, ``feature_info``, ``num_features``, ``head``
    and ``name_map``, and implement ``forward_stages``.

    ``head`` is the classifier; its last layer is called ``fc`` so that
    :meth:`reset_classifier` works the same for every family.
    ``name_map`` is the family's explicit table from the reference checkpoint's
    parameter names to ours (see :mod:`minibones.porting`).
    """

    config: ModelConfig
    feature_info: list[StageInfo]
    name_map: list[tuple[str, str | None]] = []
    num_features: int  # width of the vector the classifier reads
    in_chans: int = 3
    min_input_size: int = 1  # smallest height and width the architecture accepts (Inception-v3: 75)

    def check_input(self, x: Tensor) -> None:
        """Fail early, with a message a learner can act on, instead of deep inside a conv."""
        if not isinstance(x, Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{self.config.name} expects a batch of images shaped (B, {self.in_chans}, H, W), got {shape}; "
                "add a batch dimension with x.unsqueeze(0)."
            )
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"{self.config.name} expects {self.in_chans} channels (RGB), got {x.shape[1]} in an input of shape "
                f"{tuple(x.shape)}; convert grayscale with x.expand(-1, 3, -1, -1) or images with .convert('RGB')."
            )
        if min(x.shape[-2:]) < self.min_input_size:
            size = self.config.input_size[1]
            raise ValueError(
                f"{self.config.name} needs images of at least {self.min_input_size}x{self.min_input_size}, got "
                f"{x.shape[-2]}x{x.shape[-1]}; resize the input first (it was designed for {size}x{size})."
            )

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """One feature map per stage, finest first, as described by ``feature_info``."""
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map, before pooling and the classifier."""
        return self.forward_stages(x)[-1]

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def num_classes(self) -> int:
        fc = self.head.fc
        return fc.out_features if isinstance(fc, nn.Linear) else 0

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer by a fresh one with ``num_classes`` outputs (0: no classifier).

        This is the first step of transfer learning: keep the backbone, learn a new head.
        """
        like = next(self.parameters())
        self.head.fc = classifier(self.num_features, num_classes, device=like.device, dtype=like.dtype)

    def classifier_layers(self) -> dict[str, nn.Module]:
        """Every layer :meth:`reset_classifier` replaces, by its path: what pretrained weights
        for another number of classes must leave alone."""
        return {"head.fc": self.head.fc}

    def name_map_for(self, layout: str = "reference") -> list[tuple[str, str | None]]:
        """The table from a checkpoint's tensor names to ours. ``"reference"``: the reference
        implementation's own state dict (``name_map``). A family whose weights also circulate in
        another naming adds that layout here (EfficientNet-Lite: ``"efficientnet_pytorch"``)."""
        if layout != "reference":
            raise ValueError(f"{self.config.name} has no name map for checkpoints in the {layout!r} layout; "
                             "it reads its reference's own state dicts (layout 'reference')")
        return self.name_map

    def stage_names(self) -> list[str]:
        return [info.name for info in self.feature_info]

    def stage_index(self, name: str) -> int:
        """The position of stage ``name`` in :attr:`feature_info` (and in ``forward_stages``' list),
        or an error that lists the stages this model has."""
        names = self.stage_names()
        if name not in names:
            raise ValueError(f"{self.config.name} has no stage {name!r}; its stages are {names}")
        return names.index(name)


def classifier(in_features: int, num_classes: int, **factory) -> nn.Module:
    """The last layer of a head: a linear map to ``num_classes`` logits, or, for 0, no classifier
    at all (the identity, so that ``forward`` returns the pooled features). ``factory``
    (``device``, ``dtype``) goes to ``nn.Linear``."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
    return nn.Linear(in_features, num_classes, **factory) if num_classes else nn.Identity()


def pooled_classifier(num_features: int, num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """The head most CNNs end with: global average pooling (one vector per image, whatever the
    input size), flatten, dropout, then the :func:`classifier`."""
    return nn.Sequential(
        OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(1),
            drop=nn.Dropout(dropout),
            fc=classifier(num_features, num_classes),
        )
    )


@contextmanager
def mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put ``model`` in training or evaluation mode for a block, then give it back the mode it
    had: measuring a model (its cost, its receptive field, its accuracy) must not change how
    the caller's next forward pass behaves (dropout, batch-norm statistics)."""
    was_training = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def measure_batch_norm_(model: nn.Module, inputs: Tensor, batch_size: int = 256) -> nn.Module:
    """Set every batch norm's running statistics to those measured on ``inputs``, in place (one
    pass, a cumulative average over its batches); no weight changes, and the model gets its
    mode back. Only the batch norms run in training mode: dropout and stochastic depth stay
    off, so they cannot bias the statistics.

    Why: a network with made-up or initial statistics lets its activations shrink or grow
    block after block, until its output hardly depends on the input. Measured statistics put
    every normalised layer back at zero mean and unit variance, without training a weight.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model  # nothing to measure (a ViT): not even a forward pass
    momenta = [norm.momentum for norm in norms]
    with mode(model, False):
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the batches, not an exponential one
            norm.train()
        try:
            for batch in inputs.split(batch_size):
                model(batch)
        finally:
            for norm, momentum in zip(norms, momenta):
                norm.momentum = momentum
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def output_shapes(model: Backbone, input_size: tuple[int, int, int] | None = None) -> list[tuple[int, ...]]:
    """Shapes of every stage for one input of ``input_size`` (default: the model's own)."""
    size = input_size or model.config.input_size
    return [tuple(f.shape) for f in model.forward_stages(torch.zeros(1, *size))]
