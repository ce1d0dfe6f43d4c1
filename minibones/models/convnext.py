"""ConvNeXt: A ConvNet for the 2020s (Liu, Mao, Wu, Feichtenhofer, Darrell, Xie; CVPR 2022).

The paper starts from a ResNet-50 and, one step at a time (section 2, figure 2),
applies the design choices that made vision transformers strong: train it like
a transformer, give the stages Swin's compute ratio, cut the image into patches,
mix space with a large depthwise kernel and channels with an inverted MLP,
use fewer activations and norms, LayerNorm instead of BatchNorm. The result is
a pure ConvNet that matches Swin Transformers at the same cost.

Read this file next to the paper:
  * ``LayerNorm2d``    - LayerNorm over the channels of an NCHW map (section 2.6);
  * ``LayerScale``     - a learnable per-channel scale on each residual branch, from CaiT;
  * ``ConvNeXtBlock``  - figure 4 right: 7x7 depthwise conv, LN, 1x1 conv to 4C, GELU, 1x1 conv back to C;
  * ``ConvNeXt``       - the patchify stem, then the stages res2 ... res5 of table 9,
                         each later stage opened by its own LN + 2x2/2 conv downsampling layer;
  * the variants at the bottom: the C (widths) and B (depths) of section 3.

One deviation, kept for weight compatibility with torchvision: the layer scale is
applied after the block returns to (B, C, H, W) layout, with a (C, 1, 1) shaped
parameter, instead of before it with a (C,) one as the paper's code does. The
arithmetic is the same.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minibones.backbone import Backbone, ModelConfig, StageInfo, classifier
from minibones.layers import DropPath
from minibones.registry import register_model

PAPER = "Liu, Mao, Wu, Feichtenhofer, Darrell, Xie. A ConvNet for the 2020s. CVPR 2022. arXiv:2201.03545"

LN_EPS = 1e-6  # every LayerNorm of ConvNeXt (torchvision and the paper's code), not PyTorch's default 1e-5


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of a (B, C, H, W) map.

    Section 2.6 replaces BatchNorm by LayerNorm, as transformers use. ``nn.LayerNorm``
    normalises the *last* dimensions, so the map is moved to (B, H, W, C) and back.
    Used where the data stays in NCHW: the stem, the downsampling layers, the head.
    """

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


class LayerScale(nn.Module):
    """Multiply a residual branch by a learnable per-channel gamma (Touvron et al. 2021, CaiT).

    gamma starts tiny (1e-6), so every block starts close to the identity and deep
    stacks train stably; the network learns how much of each branch to let in.
    """

    def __init__(self, channels: int, init_value: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels, 1, 1), init_value))  # (C, 1, 1) broadcasts over H, W

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class ConvNeXtBlock(nn.Module):
    """Figure 4 right: y = x + gamma * pwconv2(GELU(pwconv1(LN(dwconv7x7(x))))).

    * ``dwconv``: a 7x7 depthwise conv mixes space, one channel at a time (sections
      2.3 and 2.5; moved to the top of the block like a transformer's attention, 2.5);
    * ``pwconv1``/``pwconv2``: an inverted bottleneck, C -> 4C -> C (section 2.4), which
      is a transformer's MLP applied to every pixel. A 1x1 conv is a ``Linear`` over the
      channels, so the block works in (B, H, W, C) layout between the two permutes;
    * a single GELU and a single LayerNorm per block (section 2.6: "fewer activations,
      fewer normalization layers").
    """

    def __init__(self, dim: int, layer_scale: float = 1e-6, stochastic_depth_prob: float = 0.0):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale = LayerScale(dim, layer_scale)
        self.stochastic_depth = DropPath(stochastic_depth_prob)

    def forward(self, x: Tensor) -> Tensor:
        out = self.dwconv(x)  # (B, C, H, W)
        out = out.permute(0, 2, 3, 1)  # (B, H, W, C): LayerNorm and Linear act on the last dimension
        out = self.pwconv2(self.act(self.pwconv1(self.norm(out))))  # (B, H, W, 4C) inside, (B, H, W, C) out
        out = out.permute(0, 3, 1, 2)  # (B, C, H, W)
        return x + self.stochastic_depth(self.layer_scale(out))


class ConvNeXt(Backbone):
    """The patchify stem, then four stages of ``ConvNeXtBlock`` at strides 4, 8, 16, 32.

    * ``stem``: a 4x4 conv with stride 4 and a LayerNorm (section 2.2, "patchify"). Like a
      ViT's patch embedding it cuts the image into non-overlapping 4x4 patches and maps
      each to ``widths[0]`` channels, replacing ResNet's 7x7/2 conv and 3x3/2 max pool,
      which also reach stride 4 but with overlapping windows.
    * ``stages``: res2 ... res5 (the row names of table 9). Each of res3-res5 starts with
      its own downsampling layer, a LayerNorm and a 2x2 conv with stride 2 (section 2.6,
      "separate downsampling layers"; the LN keeps training stable), then ``depths[i]``
      blocks at constant width.
    * ``head``: global average pool, LayerNorm, linear.

    Stochastic depth grows linearly from 0 at the first block to ``stochastic_depth_prob``
    at the last, as in torchvision and the paper's training recipe (appendix A.1).
    """

    name_map = [
        (r"^features\.0\.0\.", "stem.conv."),
        (r"^features\.0\.1\.", "stem.norm."),
        (r"^features\.1\.", "stages.res2.blocks."),
        (r"^features\.2\.0\.", "stages.res3.downsample.norm."),
        (r"^features\.2\.1\.", "stages.res3.downsample.conv."),
        (r"^features\.3\.", "stages.res3.blocks."),
        (r"^features\.4\.0\.", "stages.res4.downsample.norm."),
        (r"^features\.4\.1\.", "stages.res4.downsample.conv."),
        (r"^features\.5\.", "stages.res4.blocks."),
        (r"^features\.6\.0\.", "stages.res5.downsample.norm."),
        (r"^features\.6\.1\.", "stages.res5.downsample.conv."),
        (r"^features\.7\.", "stages.res5.blocks."),
        # inside a block torchvision numbers the layers of one Sequential
        (r"\.block\.0\.", ".dwconv."),
        (r"\.block\.2\.", ".norm."),
        (r"\.block\.3\.", ".pwconv1."),
        (r"\.block\.5\.", ".pwconv2."),
        (r"\.layer_scale$", ".layer_scale.gamma"),
        (r"^classifier\.0\.", "head.norm."),
        (r"^classifier\.2\.", "head.fc."),
    ]

    min_input_size = 32  # five halvings' worth: stem /4, then three /2

    def __init__(
        self,
        widths: tuple[int, int, int, int],
        depths: tuple[int, int, int, int],
        config: ModelConfig,
        num_classes: int = 1000,
        stochastic_depth_prob: float = 0.0,
        layer_scale: float = 1e-6,
    ):
        super().__init__()
        self.config = config
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(3, widths[0], kernel_size=4, stride=4),
                norm=LayerNorm2d(widths[0], eps=LN_EPS),
            )
        )

        total_blocks = sum(depths)
        block_id = 0
        stages = OrderedDict()
        self.feature_info = []
        stride = 4
        for i, (depth, width) in enumerate(zip(depths, widths)):
            name = f"res{i + 2}"
            layers = OrderedDict()
            if i > 0:
                stride *= 2
                layers["downsample"] = nn.Sequential(
                    OrderedDict(
                        norm=LayerNorm2d(widths[i - 1], eps=LN_EPS),
                        conv=nn.Conv2d(widths[i - 1], width, kernel_size=2, stride=2),
                    )
                )
            blocks = []
            for _ in range(depth):
                p = stochastic_depth_prob * block_id / (total_blocks - 1)
                blocks.append(ConvNeXtBlock(width, layer_scale, p))
                block_id += 1
            layers["blocks"] = nn.Sequential(*blocks)
            stages[name] = nn.Sequential(layers)
            self.feature_info.append(StageInfo(name, width, stride, f"stages.{name}"))
        self.stages = nn.Sequential(stages)

        self.num_features = widths[-1]
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                norm=LayerNorm2d(widths[-1], eps=LN_EPS),
                flatten=nn.Flatten(1),
                fc=classifier(widths[-1], num_classes),
            )
        )
        self.init_weights()

    def init_weights(self) -> None:
        """Truncated normal (std 0.02) for every conv and linear, zero biases (section 3, as torchvision)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        self.check_input(x)
        x = self.stem(x)  # (B, C1, H/4, W/4): one vector per 4x4 patch
        features = []
        for stage in self.stages:  # res2 (H/4, C1), res3 (H/8, C2), res4 (H/16, C3), res5 (H/32, C4)
            x = stage(x)
            features.append(x)
        return features


# --- the variants: section 3, "C = (...), B = (...)" ---------------------------------------
#                  widths C                 depths B        stochastic depth (ImageNet-1K recipe, appendix A.1)
VARIANTS = {
    "convnext_tiny": ((96, 192, 384, 768), (3, 3, 9, 3), 0.1),
    "convnext_small": ((96, 192, 384, 768), (3, 3, 27, 3), 0.4),
    "convnext_base": ((128, 256, 512, 1024), (3, 3, 27, 3), 0.5),
    "convnext_large": ((192, 384, 768, 1536), (3, 3, 27, 3), 0.5),
}


def _convnext(name: str, **kwargs) -> ConvNeXt:
    widths, depths, stochastic_depth_prob = VARIANTS[name]
    config = ModelConfig(name=name, reference=f"torchvision.models.{name}", paper=PAPER)
    kwargs.setdefault("stochastic_depth_prob", stochastic_depth_prob)
    return ConvNeXt(widths, depths, config, **kwargs)


@register_model
def convnext_tiny(**kwargs) -> ConvNeXt:
    return _convnext("convnext_tiny", **kwargs)


@register_model
def convnext_small(**kwargs) -> ConvNeXt:
    return _convnext("convnext_small", **kwargs)


@register_model
def convnext_base(**kwargs) -> ConvNeXt:
    return _convnext("convnext_base", **kwargs)


@register_model
def convnext_large(**kwargs) -> ConvNeXt:
    return _convnext("convnext_large", **kwargs)
