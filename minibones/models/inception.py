"""Inception: GoogLeNet (Szegedy et al., CVPR 2015) and Inception-v3 (Szegedy et al., CVPR 2016).

Which filter size should a layer use, 1x1, 3x3 or 5x5? The Inception module's answer
is "all of them, side by side": parallel branches see the same input at several
scales, and their outputs are concatenated along the channels. 1x1 convolutions
in front of the expensive branches reduce the width first, so that the module
stays cheap (GoogLeNet, section 4 and figure 2b). Inception-v3 makes the big
filters cheaper again by *factorizing* them: a 5x5 into two 3x3s, a 7x7 into a
1x7 followed by a 7x1 (Rethinking the Inception Architecture, sections 3 and 3.2),
and shrinks the grid with a *grid reduction* block that pools and convolves in
parallel instead of one after the other (section 5, figure 10).

Read this file next to the papers:
  * ``conv_bn``                - conv, batch norm, ReLU: every conv of both networks;
  * ``InceptionModule``        - GoogLeNet, figure 2(b), widths from table 1;
  * ``GoogLeNet``              - table 1 row by row, with the two auxiliary classifiers of section 5;
  * ``FactorizedInception``    - Inception-v3, figure 5 (the 35x35 grid);
  * ``GridReduction17``        - figure 10 (35x35 -> 17x17);
  * ``Factorized7x7Inception`` - figure 6 with n = 7 (the 17x17 grid);
  * ``GridReduction8``         - the second grid reduction (17x17 -> 8x8);
  * ``ExpandedInception``      - figure 7 (the 8x8 grid): the filter bank is widened with 1x3 and 3x1 convs;
  * ``InceptionV3``            - table 1 of the v3 paper, as released by Google.

Both follow torchvision, whose checkpoints were converted from Google's originals;
where the released networks differ from the papers, a comment says so.
Grid sizes in comments are those of the default input (224x224 for GoogLeNet,
299x299 for Inception-v3).

Auxiliary classifiers and ``transform_input`` (both off by default):
  * ``aux_logits=True`` builds the auxiliary classifiers. In training mode ``forward``
    then returns torchvision's named tuples: ``GoogLeNetOutputs(logits, aux_logits2,
    aux_logits1)`` and ``InceptionOutputs(logits, aux_logits)``; the paper adds their losses
    with weight 0.3 (GoogLeNet, section 5). In eval mode ``forward`` returns the logits.
    With ``aux_logits=False`` (the default) ``forward`` always returns the logits, so the
    usual ``loss = criterion(model(x), y)`` works, and the name map drops the reference's
    aux weights when porting.
  * ``transform_input=True`` re-normalises ImageNet-normalised images to the [-1, 1]
    range Google's weights were trained on. torchvision switches it on exactly when it
    loads those weights; switch it on here for the same reason.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor, nn

from minibones.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone, ModelConfig, StageInfo
from minibones.layers import ConvNormAct
from minibones.registry import register_model

GOOGLENET_PAPER = (
    "Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke, Rabinovich. "
    "Going Deeper with Convolutions. CVPR 2015. arXiv:1409.4842"
)
INCEPTION_V3_PAPER = (
    "Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. Rethinking the Inception Architecture for Computer Vision. "
    "CVPR 2016. arXiv:1512.00567"
)


class GoogLeNetOutputs(NamedTuple):
    """What GoogLeNet returns in training mode with ``aux_logits=True`` (same fields as torchvision's)."""

    logits: Tensor
    aux_logits2: Tensor
    aux_logits1: Tensor


class InceptionOutputs(NamedTuple):
    """What Inception-v3 returns in training mode with ``aux_logits=True`` (same fields as torchvision's)."""

    logits: Tensor
    aux_logits: Tensor


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
) -> ConvNormAct:
    """conv (no bias) -> batch norm -> ReLU, torchvision's ``BasicConv2d``.

    Batch norm came after GoogLeNet (Ioffe & Szegedy 2015); torchvision's GoogLeNet uses it in
    place of the paper's local response normalisation. ``eps=1e-3`` as in the TensorFlow
    originals. Padding defaults to 0 ("valid"), as in the released networks.
    """
    return ConvNormAct(in_channels, out_channels, kernel_size, stride, padding, eps=1e-3)


def branch(**layers: nn.Module) -> nn.Sequential:
    """A branch of an Inception module: layers applied one after the other, named as in the paper."""
    return nn.Sequential(OrderedDict(layers))


class RenormalizeInput(nn.Module):
    """``transform_input``: turn an image normalised with the ImageNet mean and std into one
    normalised with mean 0.5 and std 0.5, the input Google's weights expect:
    (x * std + mean - 0.5) / 0.5 = x * (std / 0.5) + (mean - 0.5) / 0.5, per channel.

    Python numbers rather than tensor buffers: nothing to keep in the state dict, nothing
    to re-initialise after building the model on the meta device.
    """

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        super().__init__()
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, x: Tensor) -> Tensor:
        channels = [x[:, c : c + 1] * (s / 0.5) + (m - 0.5) / 0.5 for c, (m, s) in enumerate(zip(self.mean, self.std))]
        return torch.cat(channels, 1)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


# --- GoogLeNet (Szegedy et al. 2015) -------------------------------------------------------


class InceptionModule(nn.Module):
    """Figure 2(b): four branches on the same input, concatenated.

    1x1 convs; 1x1 "reduce" then 3x3; 1x1 "reduce" then 5x5; 3x3 max pool then a 1x1
    "pool proj". The arguments are the columns of table 1. The output width is
    ``ch1x1 + ch3x3 + ch5x5 + pool_proj``.

    ``kernel_5x5`` is the kernel of the "5x5" branch's conv. GoogLeNet as released has 3: a
    known bug of the original port, kept so that torchvision's weights still load
    (pytorch/vision#906), so ``googlenet`` keeps it. A network trained from scratch has no
    weights to stay compatible with: pass 5 for the paper's module (notebook 03 does).
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch5x5_reduce: int,
        ch5x5: int,
        pool_proj: int,
        kernel_5x5: int = 3,
    ):
        super().__init__()
        if kernel_5x5 not in (3, 5):
            raise ValueError(f"kernel_5x5 must be 3 (GoogLeNet as released) or 5 (the paper), got {kernel_5x5!r}")
        self.branch1x1 = conv_bn(in_channels, ch1x1, 1)
        self.branch3x3 = branch(
            reduce=conv_bn(in_channels, ch3x3_reduce, 1),
            conv=conv_bn(ch3x3_reduce, ch3x3, 3, padding=1),
        )
        self.branch5x5 = branch(
            reduce=conv_bn(in_channels, ch5x5_reduce, 1),
            # 3 by default, not the paper's 5: see the docstring
            conv=conv_bn(ch5x5_reduce, ch5x5, kernel_5x5, padding=kernel_5x5 // 2),
        )
        self.branch_pool = branch(
            pool=nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            proj=conv_bn(in_channels, pool_proj, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], 1)


class GoogLeNetAux(nn.Sequential):
    """Section 5: a small classifier on an intermediate grid (after inception 4a and 4d),
    whose loss (weighted 0.3) pushes gradient into the middle of the deep network.
    Average pool to 4x4 (the paper: 5x5 pool, stride 3, on the 14x14 grid), 1x1 conv
    to 128, a 1024-wide fully connected layer with ReLU, 70% dropout, the classifier."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7):
        super().__init__(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d((4, 4)),
                conv=conv_bn(in_channels, 128, 1),
                flatten=nn.Flatten(1),
                fc1=nn.Linear(128 * 4 * 4, 1024),
                relu=nn.ReLU(),
                drop=nn.Dropout(dropout),
                fc=nn.Linear(1024, num_classes) if num_classes else nn.Identity(),
            )
        )


class GoogLeNet(Backbone):
    """Table 1, row by row: a conventional stem (conv1, conv2) shrinks the image 8x, then
    nine Inception modules in three groups (3a-b, 4a-e, 5a-b), separated by max pools.

    Stages (the output just before each max pool, and the last module):

    ============  =======  ======  ==============
    stage         width    stride  module
    ============  =======  ======  ==============
    conv1         64       2       ``conv1``
    conv2         192      4       ``conv2``
    inception3b   480      8       ``inception3b``
    inception4e   832      16      ``inception4e``
    inception5b   1024     32      ``inception5b``
    ============  =======  ======  ==============

    Every max pool rounds up (``ceil_mode=True``, as Caffe did), so for sizes that do not
    divide evenly a stage is ``ceil``-ed, not ``floor``-ed: 97x131 gives 24x33 at stride 4.
    The paper's local response normalisation after pool1 and conv2 is replaced by batch
    norm in every conv (torchvision).
    """

    min_input_size = 15  # smaller inputs leave pool3 a map smaller than its 3x3 window

    _name_map = [
        (r"^conv2\.", "conv2.reduce."),  # the paper's conv2 row: 1x1 reduce, then 3x3
        (r"^conv3\.", "conv2.conv."),
        (r"\.branch1\.", ".branch1x1."),
        (r"\.branch2\.0\.", ".branch3x3.reduce."),
        (r"\.branch2\.1\.", ".branch3x3.conv."),
        (r"\.branch3\.0\.", ".branch5x5.reduce."),
        (r"\.branch3\.1\.", ".branch5x5.conv."),
        (r"\.branch4\.1\.", ".branch_pool.proj."),
        (r"^(aux[12])\.fc2\.", r"\1.fc."),
        (r"^fc\.", "head.fc."),
    ]

    def __init__(
        self,
        config: ModelConfig,
        num_classes: int = 1000,
        aux_logits: bool = False,
        transform_input: bool = False,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        init_weights: bool = True,
    ):
        super().__init__()
        self.config = config
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        # without aux heads, the reference's aux1/aux2 tensors are dropped when porting
        self.name_map = self._name_map if aux_logits else [(r"^aux[12]\.", None)] + self._name_map
        self.renormalize = RenormalizeInput()

        self.conv1 = conv_bn(3, 64, 7, stride=2, padding=3)  # (B, 64, 112, 112)
        self.pool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # (B, 64, 56, 56)
        self.conv2 = branch(reduce=conv_bn(64, 64, 1), conv=conv_bn(64, 192, 3, padding=1))  # (B, 192, 56, 56)
        self.pool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # (B, 192, 28, 28)
        # table 1:                        in  #1x1 #3x3red #3x3 #5x5red #5x5 poolproj -> out
        self.inception3a = InceptionModule(192, 64, 96, 128, 16, 32, 32)  # 256
        self.inception3b = InceptionModule(256, 128, 128, 192, 32, 96, 64)  # 480, 28x28
        self.pool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = InceptionModule(480, 192, 96, 208, 16, 48, 64)  # 512, 14x14
        self.inception4b = InceptionModule(512, 160, 112, 224, 24, 64, 64)  # 512
        self.inception4c = InceptionModule(512, 128, 128, 256, 24, 64, 64)  # 512
        self.inception4d = InceptionModule(512, 112, 144, 288, 32, 64, 64)  # 528
        self.inception4e = InceptionModule(528, 256, 160, 320, 32, 128, 128)  # 832
        self.pool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # the paper's 3x3/2 pool; 2x2 in torchvision
        self.inception5a = InceptionModule(832, 256, 160, 320, 32, 128, 128)  # 832, 7x7
        self.inception5b = InceptionModule(832, 384, 192, 384, 48, 128, 128)  # 1024

        self.aux1 = GoogLeNetAux(512, num_classes, dropout_aux) if aux_logits else None  # on inception 4a
        self.aux2 = GoogLeNetAux(528, num_classes, dropout_aux) if aux_logits else None  # on inception 4d

        self.feature_info = [
            StageInfo("conv1", 64, 2, "conv1"),
            StageInfo("conv2", 192, 4, "conv2"),
            StageInfo("inception3b", 480, 8, "inception3b"),
            StageInfo("inception4e", 832, 16, "inception4e"),
            StageInfo("inception5b", 1024, 32, "inception5b"),
        ]
        self.num_features = 1024
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),  # the paper's 7x7 average pool, for any input size
                flatten=nn.Flatten(1),
                drop=nn.Dropout(dropout),  # 40% in the paper; 20% in torchvision
                fc=nn.Linear(1024, num_classes) if num_classes else nn.Identity(),
            )
        )
        if init_weights:  # False keeps PyTorch's default init (faster) when weights are loaded next
            self.init_weights()

    def init_weights(self) -> None:
        """Truncated normal (std 0.01) for convs and fully connected layers, BN as the identity (torchvision)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_stages(self, x: Tensor, aux_outputs: list[Tensor] | None = None) -> list[Tensor]:
        """One map per stage; if ``aux_outputs`` is a list, the logits of aux1 and aux2 are appended to it."""
        self.check_input(x)
        if aux_outputs is not None and not self.aux_logits:
            raise ValueError(f"{self.config.name} was built without auxiliary classifiers; pass aux_logits=True")
        if self.transform_input:
            x = self.renormalize(x)
        x = self.conv1(x)  # (B, 64, H/2, W/2)
        features = [x]
        x = self.conv2(self.pool1(x))  # (B, 192, H/4, W/4)
        features.append(x)
        x = self.inception3b(self.inception3a(self.pool2(x)))  # (B, 480, H/8, W/8)
        features.append(x)
        x = self.inception4a(self.pool3(x))  # (B, 512, H/16, W/16)
        if aux_outputs is not None:
            aux_outputs.append(self.aux1(x))
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (B, 528, H/16, W/16)
        if aux_outputs is not None:
            aux_outputs.append(self.aux2(x))
        x = self.inception4e(x)  # (B, 832, H/16, W/16)
        features.append(x)
        x = self.inception5b(self.inception5a(self.pool4(x)))  # (B, 1024, H/32, W/32)
        features.append(x)
        return features

    def forward(self, x: Tensor) -> Tensor | GoogLeNetOutputs:
        if self.training and self.aux_logits:
            aux: list[Tensor] = []
            logits = self.forward_head(self.forward_stages(x, aux)[-1])
            return GoogLeNetOutputs(logits, aux[1], aux[0])
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A new head, and new auxiliary classifiers too when the model has them."""
        super().reset_classifier(num_classes)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc = nn.Linear(1024, num_classes).to(self.head.fc.weight) if num_classes else nn.Identity()


# --- Inception-v3 (Szegedy et al. 2016) ----------------------------------------------------


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

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(
            OrderedDict(
                pool=nn.AvgPool2d(5, stride=3),  # (B, 768, 5, 5)
                reduce=conv_bn(in_channels, 128, 1),  # (B, 128, 5, 5)
                conv=conv_bn(128, 768, 5),  # (B, 768, 1, 1)
                gap=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                fc=nn.Linear(768, num_classes) if num_classes else nn.Identity(),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < 17:
            raise ValueError(
                f"Inception-v3's auxiliary classifier needs a grid of at least 17x17 at mixed6e (a 299x299 input), "
                f"got {tuple(x.shape[-2:])}; train on larger images or build the model with aux_logits=False."
            )
        return super().forward(x)


class InceptionV3(Backbone):
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

    _name_map = [
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

    def __init__(
        self,
        config: ModelConfig,
        num_classes: int = 1000,
        aux_logits: bool = False,
        transform_input: bool = False,
        dropout: float = 0.5,
        init_weights: bool = True,
    ):
        super().__init__()
        self.config = config
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        # without the aux head, the reference's AuxLogits tensors are dropped when porting
        self.name_map = self._name_map if aux_logits else [(r"^AuxLogits\.", None)] + self._name_map
        self.renormalize = RenormalizeInput()

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
        self.num_features = 2048
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),  # the paper's 8x8 average pool, for any input size
                flatten=nn.Flatten(1),
                drop=nn.Dropout(dropout),
                fc=nn.Linear(2048, num_classes) if num_classes else nn.Identity(),
            )
        )
        if init_weights:  # False keeps PyTorch's default init (faster) when weights are loaded next
            self.init_weights()

    def init_weights(self) -> None:
        """Truncated normal (std 0.1) for convs and fully connected layers, smaller for the aux
        head's 5x5 conv (0.01) and classifier (0.001); BN as the identity (torchvision)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, mean=0.0, std=0.1, a=-2, b=2)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.aux is not None:
            nn.init.trunc_normal_(self.aux.conv.conv.weight, mean=0.0, std=0.01, a=-2, b=2)
            if isinstance(self.aux.fc, nn.Linear):
                nn.init.trunc_normal_(self.aux.fc.weight, mean=0.0, std=0.001, a=-2, b=2)

    def forward_stages(self, x: Tensor, aux_outputs: list[Tensor] | None = None) -> list[Tensor]:
        """One map per stage; if ``aux_outputs`` is a list, the aux head's logits are appended to it."""
        self.check_input(x)
        if aux_outputs is not None and not self.aux_logits:
            raise ValueError(f"{self.config.name} was built without the auxiliary classifier; pass aux_logits=True")
        if self.transform_input:
            x = self.renormalize(x)
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

    def forward(self, x: Tensor) -> Tensor | InceptionOutputs:
        if self.training and self.aux_logits:
            aux: list[Tensor] = []
            logits = self.forward_head(self.forward_stages(x, aux)[-1])
            return InceptionOutputs(logits, aux[0])
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A new head, and a new auxiliary classifier too when the model has one."""
        super().reset_classifier(num_classes)
        if self.aux is not None:
            self.aux.fc = nn.Linear(768, num_classes).to(self.head.fc.weight) if num_classes else nn.Identity()


# --- the variants ----------------------------------------------------------------------------


# The reference is built with the same switches. Passing init_weights explicitly also silences
# torchvision's FutureWarning about its default.


@register_model
def googlenet(
    aux_logits: bool = False, transform_input: bool = False, init_weights: bool = True, **kwargs
) -> GoogLeNet:
    switches = dict(aux_logits=aux_logits, transform_input=transform_input, init_weights=init_weights)
    config = ModelConfig(
        name="googlenet", reference="torchvision.models.googlenet", paper=GOOGLENET_PAPER, reference_kwargs=switches
    )
    return GoogLeNet(config, **switches, **kwargs)


@register_model
def inception_v3(
    aux_logits: bool = False, transform_input: bool = False, init_weights: bool = True, **kwargs
) -> InceptionV3:
    switches = dict(aux_logits=aux_logits, transform_input=transform_input, init_weights=init_weights)
    config = ModelConfig(
        name="inception_v3",
        reference="torchvision.models.inception_v3",
        paper=INCEPTION_V3_PAPER,
        input_size=(3, 299, 299),
        reference_kwargs=switches,
    )
    return InceptionV3(config, **switches, **kwargs)
