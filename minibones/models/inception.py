"""Inception: GoogLeNet (Szegedy et al., CVPR 2015), and what Inception-v3 shares with it.

Which filter size should a layer use, 1x1, 3x3 or 5x5? The Inception module's answer
is "all of them, side by side": parallel branches see the same input at several
scales, and their outputs are concatenated along the channels. 1x1 convolutions
in front of the expensive branches reduce the width first, so that the module
stays cheap (GoogLeNet, section 4 and figure 2b). Inception-v3, the same idea with
factorized filters, is in :mod:`minibones.models.inception_v3`.

Read this file next to the paper:
  * ``conv_bn``          - conv, batch norm, ReLU: every conv of both networks;
  * ``InceptionModule``  - figure 2(b), widths from table 1;
  * ``InceptionNet``     - what both networks do around their modules: auxiliary classifiers,
                           ``transform_input``, the pooled head and the initialisation;
  * ``GoogLeNet``        - table 1 row by row, with the two auxiliary classifiers of section 5.

Both networks follow torchvision, whose checkpoints were converted from Google's originals;
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

from minibones.backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    ModelConfig,
    StageInfo,
    classifier,
    pooled_classifier,
)
from minibones.layers import ConvNormAct
from minibones.registry import register_model

GOOGLENET_PAPER = (
    "Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke, Rabinovich. "
    "Going Deeper with Convolutions. CVPR 2015. arXiv:1409.4842"
)


class GoogLeNetOutputs(NamedTuple):
    """What GoogLeNet returns in training mode with ``aux_logits=True`` (same fields as torchvision's)."""

    logits: Tensor
    aux_logits2: Tensor
    aux_logits1: Tensor


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


class InceptionNet(Backbone):
    """What GoogLeNet and Inception-v3 do around their Inception modules, written once.

    * ``aux_logits``: the auxiliary classifiers (``aux_heads``, the attributes holding them,
      in the order the forward pass reaches them); ``forward_stages(x, aux_outputs)`` appends
      their logits to ``aux_outputs``, and ``forward`` returns ``Outputs`` in training mode;
    * ``transform_input``: :class:`RenormalizeInput` on the way in;
    * the head: global average pooling, dropout, the classifier;
    * torchvision's initialisation: a truncated normal of std ``init_std`` (cut at +-2) for
      every conv and fully connected layer, batch norm as the identity.

    ``reference_name_map`` is the reference's table with its aux heads; ``reference_aux`` matches
    the aux tensors, which a model built without aux heads drops when porting.
    """

    Outputs: type[NamedTuple]
    aux_heads: tuple[str, ...]
    reference_name_map: list[tuple[str, str | None]]
    reference_aux: str
    init_std: float

    def __init__(self, config: ModelConfig, aux_logits: bool, transform_input: bool):
        super().__init__()
        self.config = config
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        drop_aux = [] if aux_logits else [(self.reference_aux, None)]
        self.name_map = drop_aux + self.reference_name_map
        self.renormalize = RenormalizeInput()

    @classmethod
    def build(cls, name: str, paper: str, image_size: int, aux_logits: bool, transform_input: bool,
              init_weights: bool, **kwargs) -> InceptionNet:
        """The variant ``name`` of torchvision, with its switches. The reference is built with the same
        ones; passing ``init_weights`` explicitly also silences torchvision's FutureWarning about its default."""
        switches = dict(aux_logits=aux_logits, transform_input=transform_input, init_weights=init_weights)
        config = ModelConfig(name=name, reference=f"torchvision.models.{name}", paper=paper,
                             input_size=(3, image_size, image_size), reference_kwargs=switches)
        return cls(config, **switches, **kwargs)

    def build_head(self, num_features: int, num_classes: int, dropout: float) -> None:
        """Global average pooling (the papers' 7x7 or 8x8 average pool, for any input size), dropout, classifier."""
        self.num_features = num_features
        self.head = pooled_classifier(num_features, num_classes, dropout)

    def init_weights(self) -> None:
        """Truncated normal (std ``init_std``) for convs and fully connected layers, BN as the identity."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, mean=0.0, std=self.init_std, a=-2, b=2)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def enter(self, x: Tensor, aux_outputs: list[Tensor] | None) -> Tensor:
        """The start of ``forward_stages``: check the input (and that there are aux heads to
        compute when asked for), and renormalise it if ``transform_input``."""
        self.check_input(x)
        if aux_outputs is not None and not self.aux_logits:
            raise ValueError(f"{self.config.name} was built without auxiliary classifiers; pass aux_logits=True")
        return self.renormalize(x) if self.transform_input else x

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if self.training and self.aux_logits:
            aux: list[Tensor] = []
            logits = self.forward_head(self.forward_stages(x, aux)[-1])
            return self.Outputs(logits, *reversed(aux))  # torchvision's order: the deepest aux head first
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A new head, and new auxiliary classifiers too when the model has them."""
        super().reset_classifier(num_classes)
        like = next(self.parameters())
        for name in self.aux_heads:
            aux = getattr(self, name)
            if aux is not None:
                aux.fc = classifier(aux.num_features, num_classes, device=like.device, dtype=like.dtype)

    def classifier_layers(self) -> dict[str, nn.Module]:
        aux = {f"{name}.fc": getattr(self, name).fc for name in self.aux_heads if getattr(self, name) is not None}
        return super().classifier_layers() | aux


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

    num_features = 1024  # the width the classifier reads

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7):
        super().__init__(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d((4, 4)),
                conv=conv_bn(in_channels, 128, 1),
                flatten=nn.Flatten(1),
                fc1=nn.Linear(128 * 4 * 4, 1024),
                relu=nn.ReLU(),
                drop=nn.Dropout(dropout),
                fc=classifier(1024, num_classes),
            )
        )


class GoogLeNet(InceptionNet):
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

    reference_name_map = [
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

    reference_aux = r"^aux[12]\."
    aux_heads = ("aux1", "aux2")
    Outputs = GoogLeNetOutputs
    init_std = 0.01  # torchvision's truncated normal

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
        super().__init__(config, aux_logits, transform_input)

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
        self.build_head(1024, num_classes, dropout)  # dropout: 40% in the paper; 20% in torchvision
        if init_weights:  # False keeps PyTorch's default init (faster) when weights are loaded next
            self.init_weights()

    def forward_stages(self, x: Tensor, aux_outputs: list[Tensor] | None = None) -> list[Tensor]:
        """One map per stage; if ``aux_outputs`` is a list, the logits of aux1 and aux2 are appended to it."""
        x = self.enter(x, aux_outputs)
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


@register_model
def googlenet(
    aux_logits: bool = False, transform_input: bool = False, init_weights: bool = True, **kwargs
) -> GoogLeNet:
    return GoogLeNet.build("googlenet", GOOGLENET_PAPER, 224, aux_logits, transform_input, init_weights, **kwargs)
