"""Xception: Deep Learning with Depthwise Separable Convolutions (Chollet, CVPR 2017).

An Inception module splits the work of a conv between cross-channel correlations
(the 1x1 convs) and spatial correlations (the 3x3s in a few branches). Push the
idea to the extreme, one branch per channel, and you get a *depthwise separable
convolution*: a 3x3 conv on each channel alone (depthwise), then a 1x1 conv that
mixes the channels (pointwise). It costs k^2 C + C C' weights instead of k^2 C C'
(3x3, 728 channels in and out: 0.54M instead of 4.77M, almost 9x fewer). Xception is
a linear stack of such convs with residual connections (section 3), in three flows
(figure 5):

  * ``entry_flow``  - two plain convs, then three residual blocks that halve the grid;
  * ``middle_flow`` - eight identical residual blocks at 728 channels, stride 16;
  * ``exit_flow``   - one more reducing block, then two separable convs to 2048 channels.

Read this file next to the paper:
  * ``SeparableConv``  - depthwise 3x3, then pointwise 1x1, no nonlinearity between (section 4.7);
  * ``XceptionBlock``  - the residual block of figure 5: (ReLU, separable conv, BN) repeated,
                         a max pool when it reduces, a 1x1 conv shortcut when the shape changes;
  * ``Xception``       - figure 5, flow by flow.

The reference is timm's ``legacy_xception``: Chollet's network as released for Keras
(22,855,952 parameters), ported to PyTorch by Cadene. Block names follow its numbering
(``block1`` to ``block12``). Its stem convs have no padding; everything else pads
symmetrically (no TensorFlow "same" padding), and batch norms keep PyTorch's default eps.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from minibones.backbone import Backbone, ModelConfig, StageInfo, pooled_classifier
from minibones.layers import ConvNormAct, he_init_
from minibones.registry import register_model

PAPER = "Chollet. Xception: Deep Learning with Depthwise Separable Convolutions. CVPR 2017. arXiv:1610.02357"


class SeparableConv(nn.Sequential):
    """A depthwise separable convolution: a 3x3 conv applied to every channel on its own
    (``groups=in_channels``), then a 1x1 conv mixing the channels. Unlike MobileNet, there is
    no batch norm or ReLU between the two: the paper finds that worse (section 4.7, figure 10)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            OrderedDict(
                depthwise=nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
                pointwise=nn.Conv2d(in_channels, out_channels, 1, bias=False),
            )
        )


class XceptionBlock(nn.Module):
    """Figure 5: ``reps`` times (ReLU, separable conv, BN), then a 3x3/2 max pool if the block
    reduces the grid, plus a shortcut: the identity, or a strided 1x1 conv and BN when the
    width or the grid changes. The output is the sum, *without* a ReLU: the next block starts with one.

    ``grow_first``: the first separable conv changes the width (entry and middle flow); otherwise
    the last one does (the exit flow's block, 728 -> 728 -> 1024). The very first block starts
    without a ReLU, since the stem's last conv just applied one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        reps: int,
        stride: int = 1,
        start_with_relu: bool = True,
        grow_first: bool = True,
    ):
        super().__init__()
        widths = [in_channels] + ([out_channels] * reps if grow_first else [in_channels] * (reps - 1) + [out_channels])
        layers = OrderedDict()
        for i in range(1, reps + 1):
            if i > 1 or start_with_relu:
                layers[f"relu{i}"] = nn.ReLU()
            layers[f"sepconv{i}"] = SeparableConv(widths[i - 1], widths[i])
            layers[f"bn{i}"] = nn.BatchNorm2d(widths[i])
        if stride != 1:
            layers["pool"] = nn.MaxPool2d(3, stride, padding=1)
        self.residual = nn.Sequential(layers)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


class SeparableConvBNReLU(nn.Sequential):
    """The exit flow's last two layers: separable conv, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            OrderedDict(
                sepconv=SeparableConv(in_channels, out_channels),
                bn=nn.BatchNorm2d(out_channels),
                relu=nn.ReLU(),
            )
        )


class Xception(Backbone):
    """Figure 5: 36 convolutional layers in 14 modules (section 3), all but the first and last
    with residual connections.

    Stages (each block's output is the residual sum, before the ReLU the next block starts with;
    timm's ``features_only`` taps after that ReLU instead):

    ============  =======  ======  ========================
    stage         width    stride  module
    ============  =======  ======  ========================
    stem          64       2       ``entry_flow.conv2``
    block1        128      4       ``entry_flow.block1``
    block2        256      8       ``entry_flow.block2``
    middle_flow   728      16      ``middle_flow``
    exit_flow     2048     32      ``exit_flow``
    ============  =======  ======  ========================

    The stride-16 stage is the end of the middle flow (entry block3 and the eight middle
    blocks all work at stride 16), and the stride-32 stage is the end of the network.
    """

    min_input_size = 7  # the two unpadded 3x3 stem convs (the padded max pools take any size)

    name_map = [
        (r"^conv1\.", "entry_flow.conv1.conv."),
        (r"^bn1\.", "entry_flow.conv1.bn."),
        (r"^conv2\.", "entry_flow.conv2.conv."),
        (r"^bn2\.", "entry_flow.conv2.bn."),
        # block1 starts without a ReLU, so its layers sit one index earlier in timm's ``rep`` list
        (r"^block1\.rep\.0\.", "entry_flow.block1.residual.sepconv1."),
        (r"^block1\.rep\.1\.", "entry_flow.block1.residual.bn1."),
        (r"^block1\.rep\.3\.", "entry_flow.block1.residual.sepconv2."),
        (r"^block1\.rep\.4\.", "entry_flow.block1.residual.bn2."),
        (r"^block([123])\.", r"entry_flow.block\1."),
        (r"^block([4-9]|1[01])\.", r"middle_flow.block\1."),
        (r"^block12\.", "exit_flow.block12."),
        # the other blocks: rep = [relu1, sepconv1, bn1, relu2, sepconv2, bn2, relu3, sepconv3, bn3, (pool)]
        (r"\.rep\.1\.", ".residual.sepconv1."),
        (r"\.rep\.2\.", ".residual.bn1."),
        (r"\.rep\.4\.", ".residual.sepconv2."),
        (r"\.rep\.5\.", ".residual.bn2."),
        (r"\.rep\.7\.", ".residual.sepconv3."),
        (r"\.rep\.8\.", ".residual.bn3."),
        (r"\.skip\.", ".shortcut.conv."),
        (r"\.skipbn\.", ".shortcut.bn."),
        (r"^conv([34])\.", r"exit_flow.conv\1.sepconv."),
        (r"^bn([34])\.", r"exit_flow.conv\1.bn."),
        (r"\.conv1\.weight$", ".depthwise.weight"),  # inside timm's SeparableConv2d: conv1, pointwise
        (r"^fc\.", "head.fc."),
    ]

    def __init__(self, config: ModelConfig, num_classes: int = 1000, drop_rate: float = 0.0):
        super().__init__()
        self.config = config
        self.entry_flow = nn.Sequential(
            OrderedDict(
                conv1=ConvNormAct(3, 32, 3, stride=2, padding=0),  # (B, 32, H/2, W/2), 149 at 299
                conv2=ConvNormAct(32, 64, 3, padding=0),  # (B, 64, H/2, W/2), 147
                block1=XceptionBlock(64, 128, reps=2, stride=2, start_with_relu=False),  # (B, 128, H/4, W/4)
                block2=XceptionBlock(128, 256, reps=2, stride=2),  # (B, 256, H/8, W/8)
                block3=XceptionBlock(256, 728, reps=2, stride=2),  # (B, 728, H/16, W/16)
            )
        )
        # eight times the same block, 728 channels at stride 16
        self.middle_flow = nn.Sequential(
            OrderedDict((f"block{i}", XceptionBlock(728, 728, reps=3)) for i in range(4, 12))
        )
        self.exit_flow = nn.Sequential(
            OrderedDict(
                block12=XceptionBlock(728, 1024, reps=2, stride=2, grow_first=False),  # (B, 1024, H/32, W/32)
                conv3=SeparableConvBNReLU(1024, 1536),
                conv4=SeparableConvBNReLU(1536, 2048),  # (B, 2048, H/32, W/32)
            )
        )
        self.feature_info = [
            StageInfo("stem", 64, 2, "entry_flow.conv2"),
            StageInfo("block1", 128, 4, "entry_flow.block1"),
            StageInfo("block2", 256, 8, "entry_flow.block2"),
            StageInfo("middle_flow", 728, 16, "middle_flow"),
            StageInfo("exit_flow", 2048, 32, "exit_flow"),
        ]
        self.num_features = 2048
        # global average pooling (figure 5); the paper: dropout 0.5 before the classifier (section 4.3); timm: off
        self.head = pooled_classifier(2048, num_classes, drop_rate)
        self.init_weights()

    def init_weights(self) -> None:
        """He initialisation for convs, BN as the identity, as timm does."""
        he_init_(self)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        self.check_input(x)
        entry = self.entry_flow
        x = entry.conv2(entry.conv1(x))  # (B, 64, H/2, W/2)
        features = [x]
        x = entry.block1(x)  # (B, 128, H/4, W/4)
        features.append(x)
        x = entry.block2(x)  # (B, 256, H/8, W/8)
        features.append(x)
        x = self.middle_flow(entry.block3(x))  # (B, 728, H/16, W/16)
        features.append(x)
        x = self.exit_flow(x)  # (B, 2048, H/32, W/32)
        features.append(x)
        return features


@register_model
def xception(**kwargs) -> Xception:
    config = ModelConfig(
        name="xception",
        reference="timm.legacy_xception",
        paper=PAPER,
        input_size=(3, 299, 299),
        mean=(0.5, 0.5, 0.5),  # Keras' "inception" preprocessing: [-1, 1]
        std=(0.5, 0.5, 0.5),
    )
    return Xception(config, **kwargs)
