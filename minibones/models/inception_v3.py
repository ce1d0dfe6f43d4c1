"""Inception-v3: Rethinking the Inception Architecture for Computer Vision (Szegedy et al., CVPR 2016).

GoogLeNet's Inception module (:mod:`minibones.models.inception`) runs filters of several sizes
side by side. Inception-v3 makes the big filters cheaper by *factorizing* them: a 5x5 into two
3x3s, a 7x7 into a 1x7 followed by a 7x1 (sections 3 and 3.2), and shrinks the grid with a
*grid reduction* block that pools and convolves in parallel instead of one after the other
(section 5, figure 10).

Read this file next to the paper:
  * ``FactorizedInception``    - figure 5 (the 35x35 grid);
  * ``GridReduction17``        - figure 10 (35x35 -> 17x17);
  * ``Factorized7x7Inception`` - figure 6 with n = 7 (the 17x17 grid);
  * ``GridReduction8``         - the second grid reduction (17x17 -> 8x8);
  * ``ExpandedInception``      - figure 7 (the 8x8 grid): the filter bank is widened with 1x3 and 3x1 convs;
  * ``InceptionV3``            - table 1, as released by Google.

It follows torchvision, whose checkpoint was converted from Google's original; where the
released network differs from the paper, a comment says so. Grid sizes in comments are those
of the default 299x299 input. The auxiliary classifier (``aux_logits``) and ``transform_input``
work as for GoogLeNet (see :mod:`minibones.models.inception`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor, nn

from minibones.backbone import ModelConfig, StageInfo, classifier
from minibones.models.inception import InceptionNet, branch, conv_bn
from minibones.registry import register_model

INCEPTION_V3_PAPER = (
    "Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. Rethinking the Inception Architecture for Computer Vision. "
    "CVPR 2016. arXiv:1512.00567"
)


class InceptionOutputs(NamedTuple):
    """What Inception-v3 returns in training mode with ``aux_logits=True`` (same fields as torchvision's)."""

    logits: Tensor
    aux_logits: Tensor


class FactorizedInception(nn.Module):
    """Figure 5, on the 35x35 grid: the 5x5 conv factorized into two 3x3s (section 3.1),
    which see the same window with 18/25 of the cost.

    The released network (torchvision's ``InceptionA``) keeps a real 5x5 branch next to
    the double-3x3 one; figure 5 has only the latter. Pooling is a 3x3 *average* pool.
    Output width: 64 + 64 + 96 + ``pool_proj``.
    """

    def __init__(self, in_channels: int, pool_proj: int):
        super().__init__()
        self.branch1x1 = conv_bn(in_channels, 64, 1)
        self.branch5x5 = branch(reduce=conv_bn(in_channels, 48, 1), conv=conv_bn(48, 64, 5, padding=2))
        self.branch3x3dbl = branch(
            reduce=conv_bn(in_channels, 64, 1),
            conv1=conv_bn(64, 96, 3, padding=1),
            conv2=conv_bn(96, 96, 3, padding=1),
        )
        self.branch_pool = branch(pool=nn.AvgPool2d(3, stride=1, padding=1), proj=conv_bn(in_channels, pool_proj, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5(x), self.branch3x3dbl(x), self.branch_pool(x)], 1)


class GridReduction17(nn.Module):
    """Figure 10, 35x35 -> 17x17 (torchvision's ``InceptionB``).

    Pooling first loses information, convolving first costs 4x more (section 5, figure 9).
    Instead, strided convs and a strided max pool run side by side and are concatenated:
    the width grows (288 -> 384 + 96 + 288 = 768) while the grid halves.
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = conv_bn(in_channels, 384, 3, stride=2)
        self.branch3x3dbl = branch(
            reduce=conv_bn(in_channels, 64, 1),
            conv1=conv_bn(64, 96, 3, padding=1),
            conv2=conv_bn(96, 96, 3, stride=2),
        )
        self.branch_pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)], 1)


class Factorized7x7Inception(nn.Module):
    """Figure 6 with n = 7, on the 17x17 grid: each 7x7 conv factorized into a 1x7 and a 7x1
    (asymmetric factorization, section 3.2): 7 + 7 instead of 49 weights per channel pair.

    ``channels_7x7`` is the width inside the factorized branches (128, 160, 160, 192 in
    mixed6b-e). Output width: 4 x 192 = 768.
    """

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = conv_bn(in_channels, 192, 1)
        self.branch7x7 = branch(
            reduce=conv_bn(in_channels, c7, 1),
            conv1x7=conv_bn(c7, c7, (1, 7), padding=(0, 3)),
            conv7x1=conv_bn(c7, 192, (7, 1), padding=(3, 0)),
        )
        self.branch7x7dbl = branch(
            reduce=conv_bn(in_channels, c7, 1),
            conv7x1a=conv_bn(c7, c7, (7, 1), padding=(3, 0)),
            conv1x7a=conv_bn(c7, c7, (1, 7), padding=(0, 3)),
            conv7x1b=conv_bn(c7, c7, (7, 1), padding=(3, 0)),
            conv1x7b=conv_bn(c7, 192, (1, 7), padding=(0, 3)),
        )
        self.branch_pool = branch(pool=nn.AvgPool2d(3, stride=1, padding=1), proj=conv_bn(in_channels, 192, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x), self.branch_pool(x)], 1)


class GridReduction8(nn.Module):
    """The second grid reduction, 17x17 -> 8x8 (torchvision's ``InceptionD``): the same idea as
    figure 10, with a factorized 7x7 before the last strided 3x3. Width 768 -> 320 + 192 + 768 = 1280."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = branch(reduce=conv_bn(in_channels, 192, 1), conv=conv_bn(192, 320, 3, stride=2))
        self.branch7x7x3 = branch(
            reduce=conv_bn(in_channels, 192, 1),
            conv1x7=conv_bn(192, 192, (1, 7), padding=(0, 3)),
            conv7x1=conv_bn(192, 192, (7, 1), padding=(3, 0)),
            conv3x3=conv_bn(192, 192, 3, stride=2),
        )
        self.branch_pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch7x7x3(x), self.branch_pool(x)], 1)


class SplitConv(nn.Module):
    """The end of a figure-7 branch: a 1x3 and a 3x1 conv *side by side* on the same input,
    concatenated, instead of one after the other."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1x3 = conv_bn(in_channels, out_channels, (1, 3), padding=(0, 1))
        self.conv3x1 = conv_bn(in_channels, out_channels, (3, 1), padding=(1, 0))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv1x3(x), self.conv3x1(x)], 1)


class ExpandedInception(nn.Module):
    """Figure 7, on the 8x8 grid: the filter bank is *expanded* (wider, not deeper) to give
    high-dimensional representations on the coarsest grid (principle 2, section 2).
    Output width: 320 + 2 x 384 + 2 x 384 + 192 = 2048."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch1x1 = conv_bn(in_channels, 320, 1)
        self.branch3x3 = branch(reduce=conv_bn(in_channels, 384, 1), split=SplitConv(384, 384))
        self.branch3x3dbl = branch(
            reduce=conv_bn(in_channels, 448, 1),
            conv1=conv_bn(448, 384, 3, padding=1),
            split=SplitConv(384, 384),
        )
        self.branch_pool = branch(pool=nn.AvgPool2d(3, stride=1, padding=1), proj=conv_bn(in_channels, 192, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)], 1)


class InceptionV3Aux(nn.Sequential):
    """The auxiliary classifier on the 17x17 grid (figure 8). The v3 paper finds it acts as a
    regularizer rather than speeding up early training (section 4); its convs are batch-normalised.
    It needs at least the 17x17 grid of a 299x299 input: 5x5/3 average pool, then a 5x5 conv."""

    num_features = 768  # the width the classifier reads

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(
            OrderedDict(
                pool=nn.AvgPool2d(5, stride=3),  # (B, 768, 5, 5)
                reduce=conv_bn(in_channels, 128, 1),  # (B, 128, 5, 5)
                conv=conv_bn(128, 768, 5),  # (B, 768, 1, 1)
                gap=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                fc=classifier(768, num_classes),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < 17:
            raise ValueError(
                f"Inception-v3's auxiliary classifier needs a grid of at least 17x17 at mixed6e (a 299x299 input), "
                f"got {tuple(x.shape[-2:])}; train on larger images or build the model with aux_logits=False."
            )
        return super().forward(x)


class InceptionV3(InceptionNet):
    """Inception-v3 as released by Google (and ported by torchvision).

    Layers keep the names of Google's TensorFlow release, lower-cased (``Conv2d_4a_3x3`` ->
    ``conv4a``, ``Mixed_6b`` -> ``mixed6b``): a number per resolution level, a letter per
    layer. The stem differs from the paper's table 1: its last two 3x3 convs are a 1x1 (80)
    and a 3x3 (192) followed by a max pool. Convs pad "valid" unless noted, so at 299x299 the
    grids are 149, 147, 73, 71, 35, 17 and 8.

    Stages (the output just before each spatial reduction, and the last module):

    ============  =======  ======  ==============
    stage         width    stride  module
    ============  =======  ======  ==============
    conv2b        64       2       ``conv2b``
    conv4a        192      4       ``conv4a``
    mixed5d       288      8       ``mixed5d``
    mixed6e       768      16      ``mixed6e``
    mixed7c       2048     32      ``mixed7c``
    ============  =======  ======  ==============

    Inputs must be at least 75x75 (smaller ones leave mixed7a nothing to reduce).
    """

    min_input_size = 75

    reference_name_map = [
        (r"^Conv2d_(\d[ab])_\dx\d\.", r"conv\1."),
        (r"^Mixed_(\d[a-e])\.", r"mixed\1."),
        (r"^AuxLogits\.conv0\.", "aux.reduce."),
        (r"^AuxLogits\.conv1\.", "aux.conv."),
        (r"^AuxLogits\.", "aux."),
        (r"^fc\.", "head.fc."),
        # inside the blocks: torchvision numbers the layers of a branch, we name them
        (r"\.branch(\w+?)_1\.", r".branch\1.reduce."),  # the first layer of a branch is its 1x1 reduce
        (r"\.branch5x5_2\.", ".branch5x5.conv."),
        (r"\.branch3x3dbl_2\.", ".branch3x3dbl.conv1."),
        (r"\.branch3x3dbl_3\.", ".branch3x3dbl.conv2."),
        (r"\.branch3x3dbl_3a\.", ".branch3x3dbl.split.conv1x3."),
        (r"\.branch3x3dbl_3b\.", ".branch3x3dbl.split.conv3x1."),
        (r"\.branch3x3_2\.", ".branch3x3.conv."),
        (r"\.branch3x3_2a\.", ".branch3x3.split.conv1x3."),
        (r"\.branch3x3_2b\.", ".branch3x3.split.conv3x1."),
        (r"\.branch7x7_2\.", ".branch7x7.conv1x7."),
        (r"\.branch7x7_3\.", ".branch7x7.conv7x1."),
        (r"\.branch7x7dbl_2\.", ".branch7x7dbl.conv7x1a."),
        (r"\.branch7x7dbl_3\.", ".branch7x7dbl.conv1x7a."),
        (r"\.branch7x7dbl_4\.", ".branch7x7dbl.conv7x1b."),
        (r"\.branch7x7dbl_5\.", ".branch7x7dbl.conv1x7b."),
        (r"\.branch7x7x3_2\.", ".branch7x7x3.conv1x7."),
        (r"\.branch7x7x3_3\.", ".branch7x7x3.conv7x1."),
        (r"\.branch7x7x3_4\.", ".branch7x7x3.conv3x3."),
        (r"\.branch_pool\.", ".branch_pool.proj."),  # the 1x1 after the average pool
    ]

    reference_aux = r"^AuxLogits\."
    aux_heads = ("aux",)
    Outputs = InceptionOutputs
    init_std = 0.1  # torchvision's truncated normal; smaller for the aux head (init_weights)

    def __init__(
        self,
        config: ModelConfig,
        num_classes: int = 1000,
        aux_logits: bool = False,
        transform_input: bool = False,
        dropout: float = 0.5,
        init_weights: bool = True,
    ):
        super().__init__(config, aux_logits, transform_input)

        self.conv1a = conv_bn(3, 32, 3, stride=2)  # (B, 32, 149, 149)
        self.conv2a = conv_bn(32, 32, 3)  # (B, 32, 147, 147)
        self.conv2b = conv_bn(32, 64, 3, padding=1)  # (B, 64, 147, 147)
        self.pool1 = nn.MaxPool2d(3, stride=2)  # (B, 64, 73, 73)
        self.conv3b = conv_bn(64, 80, 1)  # (B, 80, 73, 73)
        self.conv4a = conv_bn(80, 192, 3)  # (B, 192, 71, 71)
        self.pool2 = nn.MaxPool2d(3, stride=2)  # (B, 192, 35, 35)
        self.mixed5b = FactorizedInception(192, pool_proj=32)  # (B, 256, 35, 35)
        self.mixed5c = FactorizedInception(256, pool_proj=64)  # (B, 288, 35, 35)
        self.mixed5d = FactorizedInception(288, pool_proj=64)  # (B, 288, 35, 35)
        self.mixed6a = GridReduction17(288)  # (B, 768, 17, 17)
        self.mixed6b = Factorized7x7Inception(768, channels_7x7=128)
        self.mixed6c = Factorized7x7Inception(768, channels_7x7=160)
        self.mixed6d = Factorized7x7Inception(768, channels_7x7=160)
        self.mixed6e = Factorized7x7Inception(768, channels_7x7=192)  # (B, 768, 17, 17)
        self.aux = InceptionV3Aux(768, num_classes) if aux_logits else None
        self.mixed7a = GridReduction8(768)  # (B, 1280, 8, 8)
        self.mixed7b = ExpandedInception(1280)  # (B, 2048, 8, 8)
        self.mixed7c = ExpandedInception(2048)  # (B, 2048, 8, 8)

        self.feature_info = [
            StageInfo("conv2b", 64, 2, "conv2b"),
            StageInfo("conv4a", 192, 4, "conv4a"),
            StageInfo("mixed5d", 288, 8, "mixed5d"),
            StageInfo("mixed6e", 768, 16, "mixed6e"),
            StageInfo("mixed7c", 2048, 32, "mixed7c"),
        ]
        self.build_head(2048, num_classes, dropout)
        if init_weights:  # False keeps PyTorch's default init (faster) when weights are loaded next
            self.init_weights()

    def init_weights(self) -> None:
        """Truncated normal (std 0.1) for convs and fully connected layers, smaller for the aux
        head's 5x5 conv (0.01) and classifier (0.001); BN as the identity (torchvision)."""
        super().init_weights()
        if self.aux is not None:
            nn.init.trunc_normal_(self.aux.conv.conv.weight, mean=0.0, std=0.01, a=-2, b=2)
            if isinstance(self.aux.fc, nn.Linear):
                nn.init.trunc_normal_(self.aux.fc.weight, mean=0.0, std=0.001, a=-2, b=2)

    def forward_stages(self, x: Tensor, aux_outputs: list[Tensor] | None = None) -> list[Tensor]:
        """One map per stage; if ``aux_outputs`` is a list, the aux head's logits are appended to it."""
        x = self.enter(x, aux_outputs)
        x = self.conv2b(self.conv2a(self.conv1a(x)))  # (B, 64, H/2, W/2)
        features = [x]
        x = self.conv4a(self.conv3b(self.pool1(x)))  # (B, 192, H/4, W/4)
        features.append(x)
        x = self.mixed5d(self.mixed5c(self.mixed5b(self.pool2(x))))  # (B, 288, H/8, W/8)
        features.append(x)
        x = self.mixed6a(x)  # grid reduction: (B, 768, H/16, W/16)
        x = self.mixed6e(self.mixed6d(self.mixed6c(self.mixed6b(x))))
        features.append(x)
        if aux_outputs is not None:
            aux_outputs.append(self.aux(x))
        x = self.mixed7a(x)  # grid reduction: (B, 1280, H/32, W/32)
        x = self.mixed7c(self.mixed7b(x))  # (B, 2048, H/32, W/32)
        features.append(x)
        return features


@register_model
def inception_v3(
    aux_logits: bool = False, transform_input: bool = False, init_weights: bool = True, **kwargs
) -> InceptionV3:
    switches = (aux_logits, transform_input, init_weights)
    return InceptionV3.build("inception_v3", INCEPTION_V3_PAPER, 299, *switches, **kwargs)
