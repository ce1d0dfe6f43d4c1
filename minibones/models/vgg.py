"""VGG: Very Deep Convolutional Networks for Large-Scale Image Recognition
(Simonyan & Zisserman, ICLR 2015).

The whole idea fits in one sentence: use only 3x3 convolutions, and go deep.
Two stacked 3x3 convs see a 5x5 window, three see 7x7, but with fewer parameters
(3 * 3^2 C^2 = 27 C^2 instead of 7^2 C^2 = 49 C^2) and a ReLU between each
(section 2.3). Five stages of such convs, each closed by a 2x2 max pool, halve the
resolution and (up to 512) double the width; three fully connected layers classify.

Read this file next to the paper:
  * ``VGGConv`` - one 3x3 conv, padding 1, and its ReLU (section 2.1);
  * ``VGG``     - the five conv stages and the three fully connected layers;
  * ``CONFIGS`` - table 1, columns A (VGG-11), B (VGG-13), D (VGG-16), E (VGG-19).

Where the parameters live: in VGG-16, 14.7M sit in the 13 convs and 123.6M in the
three fully connected layers, 102.8M of them in fc6 alone (512 x 7 x 7 -> 4096).

Two differences from the paper, both from torchvision (the reference):
  * the ``_bn`` variants put a batch norm (Ioffe & Szegedy 2015, later than VGG)
    between each conv and its ReLU, and *keep* the conv bias;
  * an ``AdaptiveAvgPool2d((7, 7))`` before fc6 turns any input size into the
    7x7 grid fc6 expects (at 224x224 it does nothing). The paper instead turns the
    fully connected layers into convolutions at test time (section 3.2).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from minibones.backbone import Backbone, ModelConfig, StageInfo, classifier
from minibones.layers import he_init_
from minibones.registry import register_model

PAPER = (
    "Simonyan, Zisserman. Very Deep Convolutional Networks for Large-Scale Image Recognition. "
    "ICLR 2015. arXiv:1409.1556"
)

# Table 1: the number of 3x3 convs in each of the five stages. Widths are the same for all.
WIDTHS = (64, 128, 256, 512, 512)
CONFIGS = {
    "A": (1, 1, 2, 2, 2),  # VGG-11: 8 convs + 3 fully connected layers
    "B": (2, 2, 2, 2, 2),  # VGG-13
    "D": (2, 2, 3, 3, 3),  # VGG-16
    "E": (2, 2, 4, 4, 4),  # VGG-19
}


class VGGConv(nn.Sequential):
    """A 3x3 conv with padding 1 (so the resolution is kept, section 2.1), an optional
    batch norm, and a ReLU. The conv keeps its bias even before a batch norm, as in torchvision."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool):
        layers = OrderedDict(conv=nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers["bn"] = nn.BatchNorm2d(out_channels)
        layers["relu"] = nn.ReLU()
        super().__init__(layers)


def vgg_name_map(depths: tuple[int, ...], batch_norm: bool) -> list[tuple[str, str | None]]:
    """torchvision keeps every layer in one flat ``features`` list: conv, (bn,) relu for each
    conv, and one max pool at the end of each stage. Walk that list in the same order and
    give each index its name here (``features.7.`` -> ``stages.conv2.conv2_2.conv.`` in VGG-16)."""
    name_map = []
    index = 0
    for stage, depth in enumerate(depths, start=1):
        for conv in range(1, depth + 1):
            prefix = f"stages.conv{stage}.conv{stage}_{conv}."
            name_map.append((rf"^features\.{index}\.", prefix + "conv."))
            if batch_norm:
                name_map.append((rf"^features\.{index + 1}\.", prefix + "bn."))
            index += 3 if batch_norm else 2  # conv, (bn,) relu
        index += 1  # the max pool
    name_map += [
        (r"^classifier\.0\.", "head.fc6."),
        (r"^classifier\.3\.", "head.fc7."),
        (r"^classifier\.6\.", "head.fc."),
    ]
    return name_map


class VGG(Backbone):
    """Five stages of 3x3 convs, each closed by a 2x2/2 max pool, then fc6, fc7 and the classifier.

    A stage's output is taken after its max pool, so the pyramid sits at strides 2, 4, 8, 16, 32
    with widths 64, 128, 256, 512, 512. Layers are named as in the original Caffe model
    (``conv3_2`` is the second conv of the third stage).
    """

    min_input_size = 32  # five 2x2 pools: anything smaller leaves an empty map

    def __init__(
        self,
        depths: tuple[int, ...],
        batch_norm: bool,
        config: ModelConfig,
        num_classes: int = 1000,
        dropout: float = 0.5,
        init_weights: bool = True,
    ):
        super().__init__()
        self.config = config
        self.name_map = vgg_name_map(depths, batch_norm)

        stages = OrderedDict()
        self.feature_info = []
        in_channels = 3
        for i, (depth, width) in enumerate(zip(depths, WIDTHS), start=1):
            layers = OrderedDict()
            for j in range(1, depth + 1):
                layers[f"conv{i}_{j}"] = VGGConv(in_channels, width, batch_norm)
                in_channels = width
            layers["pool"] = nn.MaxPool2d(kernel_size=2, stride=2)
            stages[f"conv{i}"] = nn.Sequential(layers)
            self.feature_info.append(StageInfo(f"conv{i}", width, 2**i, f"stages.conv{i}"))
        self.stages = nn.Sequential(stages)

        self.num_features = 4096  # the classifier reads fc7's output
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d((7, 7)),  # torchvision's addition, see the module docstring
                flatten=nn.Flatten(1),
                fc6=nn.Linear(512 * 7 * 7, 4096),
                relu6=nn.ReLU(),
                drop6=nn.Dropout(dropout),  # dropout ratio 0.5 on fc6 and fc7 (section 3.1)
                fc7=nn.Linear(4096, 4096),
                relu7=nn.ReLU(),
                drop7=nn.Dropout(dropout),
                fc=classifier(4096, num_classes),
            )
        )
        if init_weights:  # False skips the (slow: 123M values) random init when weights are loaded next
            self.init_weights()

    def init_weights(self) -> None:
        """He initialisation for convs, N(0, 0.01) for the fully connected layers, as torchvision does.
        (The paper trained VGG-11 first and copied its layers into the deeper nets, section 3.1;
        He et al. 2015 later showed that a good random init makes this unnecessary.)"""
        he_init_(self, linear=lambda weight: nn.init.normal_(weight, 0.0, 0.01))

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        self.check_input(x)
        features = []
        for stage in self.stages:  # conv1 (B, 64, H/2, W/2) ... conv5 (B, 512, H/32, W/32)
            x = stage(x)
            features.append(x)
        return features


# --- the variants: table 1 ------------------------------------------------------------


def _vgg(name: str, depths: tuple[int, ...], batch_norm: bool, init_weights: bool = True, **kwargs) -> VGG:
    config = ModelConfig(
        name=name,
        reference=f"torchvision.models.{name}",
        paper=PAPER,
        reference_kwargs={"init_weights": init_weights},  # the reference skips its init too
    )
    return VGG(depths, batch_norm, config, init_weights=init_weights, **kwargs)


@register_model
def vgg11(**kwargs) -> VGG:
    return _vgg("vgg11", CONFIGS["A"], False, **kwargs)


@register_model
def vgg11_bn(**kwargs) -> VGG:
    return _vgg("vgg11_bn", CONFIGS["A"], True, **kwargs)


@register_model
def vgg13(**kwargs) -> VGG:
    return _vgg("vgg13", CONFIGS["B"], False, **kwargs)


@register_model
def vgg13_bn(**kwargs) -> VGG:
    return _vgg("vgg13_bn", CONFIGS["B"], True, **kwargs)


@register_model
def vgg16(**kwargs) -> VGG:
    return _vgg("vgg16", CONFIGS["D"], False, **kwargs)


@register_model
def vgg16_bn(**kwargs) -> VGG:
    return _vgg("vgg16_bn", CONFIGS["D"], True, **kwargs)


@register_model
def vgg19(**kwargs) -> VGG:
    return _vgg("vgg19", CONFIGS["E"], False, **kwargs)


@register_model
def vgg19_bn(**kwargs) -> VGG:
    return _vgg("vgg19_bn", CONFIGS["E"], True, **kwargs)
