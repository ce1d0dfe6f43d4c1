"""ResNet: Deep Residual Learning for Image Recognition (He et al., CVPR 2016).

A deep plain network is *harder* to optimise than a shallower one, even on the
training set (the paper's figure 1). ResNet lets each block learn a residual
F(x) and adds the input back: y = F(x) + x (equation 1). If the identity is
what the block should do, it only has to push F towards zero.

Read this file next to the paper:
  * ``BasicBlock``  - two 3x3 convs, figure 5 left (ResNet-18/34);
  * ``Bottleneck``  - 1x1 reduce, 3x3, 1x1 expand by 4, figure 5 right (ResNet-50/101/152);
  * ``ResNet``      - conv1, then the stages conv2_x ... conv5_x of table 1;
  * the variants at the bottom: table 1 (ImageNet) and section 4.2 (CIFAR-10).

One deviation, kept for weight compatibility with torchvision: the bottleneck
puts its stride on the 3x3 conv, not on the first 1x1 conv as the paper does
("ResNet v1.5"). It is slightly more accurate and costs a little more compute.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
import torch.nn.functional as F

from minibones.backbone import CIFAR_MEAN, CIFAR_STD, Backbone, ModelConfig, StageInfo, classifier
from minibones.layers import ConvNormAct, he_init_
from minibones.registry import register_model

PAPER = "He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016. arXiv:1512.03385"


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)


class ProjectionShortcut(nn.Sequential):
    """Option B of section 3.3: a strided 1x1 conv (and BN) matches the shapes
    when a block changes width or resolution; other shortcuts are the identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(OrderedDict(conv=conv1x1(in_channels, out_channels, stride), bn=nn.BatchNorm2d(out_channels)))


class ZeroPadShortcut(nn.Module):
    """Option A of section 3.3, used for CIFAR (section 4.2): subsample by the stride
    and pad the new channels with zeros. It adds no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    """Figure 5 left: y = relu(F(x) + shortcut(x)) with F = 3x3 conv, BN, ReLU, 3x3 conv, BN."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: type[nn.Module] = ProjectionShortcut):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = shortcut(in_channels, out_channels, stride) if needs_projection else nn.Identity()
        self.relu2 = nn.ReLU()  # after the addition, as in the paper

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class PlainBlock(BasicBlock):
    """A basic block without its shortcut: y = relu(F(x)) instead of relu(F(x) + x).

    Why: the plain twin of a ResNet (He et al. 2016, section 4.1) must differ from it in the
    addition only. Subclassing keeps the same layers, built in the same order, so a plain net
    and its residual twin built after the same seed start from identical weights. The shortcut
    module is still built (in the CIFAR nets it has no parameters) but never used."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)))  # no "+ self.shortcut(x)"


class Bottleneck(nn.Module):
    """Figure 5 right: 1x1 conv reduces the width, 3x3 conv works at the reduced width,
    1x1 conv expands it 4x. Deep networks get cheap this way (ResNet-50 costs about
    the same FLOPs as ResNet-34)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: type[nn.Module] = ProjectionShortcut):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = conv1x1(in_channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(channels, channels, stride)  # v1.5: the stride sits here, not on conv1
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.conv3 = conv1x1(channels, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = shortcut(in_channels, out_channels, stride) if needs_projection else nn.Identity()
        self.relu3 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


class ResNet(Backbone):
    """conv1, then one stage per entry of ``depths``; each stage halves the resolution
    (except the first) and doubles the width.

    ``stem="imagenet"``: 7x7/2 conv and 3x3/2 max pool (table 1), stages at strides 4-32.
    ``stem="cifar"``: one 3x3 conv and no pooling (section 4.2), for 32x32 images.
    """

    name_map = [
        (r"^conv1\.", "stem.conv."),
        (r"^bn1\.", "stem.bn."),
        (r"^layer1\.", "stages.conv2_x."),
        (r"^layer2\.", "stages.conv3_x."),
        (r"^layer3\.", "stages.conv4_x."),
        (r"^layer4\.", "stages.conv5_x."),
        (r"\.downsample\.0\.", ".shortcut.conv."),
        (r"\.downsample\.1\.", ".shortcut.bn."),
        (r"^fc\.", "head.fc."),
    ]

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: tuple[int, ...],
        config: ModelConfig,
        num_classes: int = 1000,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        stem: str = "imagenet",
    ):
        super().__init__()
        self.config = config
        if stem == "imagenet":
            self.stem = ConvNormAct(3, widths[0], kernel_size=7, stride=2, padding=3)  # conv1 of table 1
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # table 1 counts it in conv2_x
            shortcut, stem_stride, pool_stride = ProjectionShortcut, 2, 2
        elif stem == "cifar":
            self.stem = ConvNormAct(3, widths[0], kernel_size=3, stride=1, padding=1)
            self.maxpool = nn.Identity()
            shortcut, stem_stride, pool_stride = ZeroPadShortcut, 1, 1
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.feature_info = [StageInfo("conv1", widths[0], stem_stride, "stem")]
        stride = stem_stride * pool_stride

        stages = OrderedDict()
        in_channels = widths[0]
        for i, (depth, width) in enumerate(zip(depths, widths)):
            name = f"conv{i + 2}_x"
            first_stride = 1 if i == 0 else 2
            stride *= first_stride
            stages[name] = self.make_stage(block, in_channels, width, depth, first_stride, shortcut)
            in_channels = width * block.expansion
            self.feature_info.append(StageInfo(name, in_channels, stride, f"stages.{name}"))
        self.stages = nn.Sequential(stages)

        self.num_features = in_channels
        self.head = nn.Sequential(
            OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1), fc=classifier(in_channels, num_classes))
        )
        self.init_weights()

    @staticmethod
    def make_stage(block, in_channels: int, channels: int, depth: int, stride: int, shortcut) -> nn.Sequential:
        """The first block changes the width (and the resolution); the others keep it."""
        blocks = [block(in_channels, channels, stride, shortcut)]
        blocks += [block(channels * block.expansion, channels, 1, shortcut) for _ in range(depth - 1)]
        return nn.Sequential(*blocks)

    def init_weights(self) -> None:
        """He initialisation (He et al. 2015) for convs, BN as the identity, as torchvision does."""
        he_init_(self)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        self.check_input(x)
        x = self.stem(x)  # (B, 64, H/2, W/2)
        features = [x]
        x = self.maxpool(x)  # (B, 64, H/4, W/4)
        for stage in self.stages:  # conv2_x (H/4) ... conv5_x (H/32); widths x4 for bottlenecks
            x = stage(x)
            features.append(x)
        return features


# --- the variants: table 1 (ImageNet) ------------------------------------------------


def _imagenet(name: str, block, depths: tuple[int, ...], **kwargs) -> ResNet:
    config = ModelConfig(name=name, reference=f"torchvision.models.{name}", paper=PAPER)
    return ResNet(block, depths, config, **kwargs)


@register_model
def resnet18(**kwargs) -> ResNet:
    return _imagenet("resnet18", BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    return _imagenet("resnet34", BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    return _imagenet("resnet50", Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model
def resnet101(**kwargs) -> ResNet:
    return _imagenet("resnet101", Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model
def resnet152(**kwargs) -> ResNet:
    return _imagenet("resnet152", Bottleneck, (3, 8, 36, 3), **kwargs)


# --- the variants: section 4.2 (CIFAR-10, 6n+2 layers, widths 16/32/64) --------------



def _cifar(name: str, n: int, num_classes: int = 10, **kwargs) -> ResNet:
    config = ModelConfig(
        name=name, reference="none (He et al. 2016, table 6)", paper=PAPER,
        input_size=(3, 32, 32), mean=CIFAR_MEAN, std=CIFAR_STD,
    )
    options = {"widths": (16, 32, 64), "stem": "cifar", **kwargs}  # the paper's widths, unless asked otherwise
    return ResNet(BasicBlock, (n, n, n), config, num_classes, **options)


@register_model
def resnet20(num_classes: int = 10, **kwargs) -> ResNet:
    return _cifar("resnet20", 3, num_classes, **kwargs)


@register_model
def resnet32(num_classes: int = 10, **kwargs) -> ResNet:
    return _cifar("resnet32", 5, num_classes, **kwargs)


@register_model
def resnet56(num_classes: int = 10, **kwargs) -> ResNet:
    return _cifar("resnet56", 9, num_classes, **kwargs)
