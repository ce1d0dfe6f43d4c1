"""MobileNetV2 (Sandler et al., CVPR 2018) and MobileNetV3 (Howard et al., ICCV 2019).

Networks for phones: every multiply counts. Both are built from one block, the *inverted
residual with linear bottleneck* (V2 section 3.3, figure 3b): a 1x1 conv expands a thin tensor
t times, a depthwise 3x3 (or 5x5) conv filters each channel on its own, and a 1x1 conv projects
back to a thin tensor *without* an activation, because a ReLU on a low-dimensional tensor destroys
information (section 3.2, figure 1). The shortcut joins the thin ends, unlike ResNet's.

MobileNetV3 keeps the block and searches the rest (section 5): squeeze-and-excitation in some
blocks, 5x5 kernels, and the *hard-swish* activation x * relu6(x + 3) / 6, a cheap stand-in for
swish, in the deeper half of the network (section 5.2). It also moves the expensive last layers
after the pooling (section 5.3, figure 5), where they run on a 1x1 map.

Read this file next to the papers:
  * ``InvertedResidual``    - the block of both versions (V3's "bneck", its figure 4);
  * ``stage_rows``          - the blocks grouped into stages (below);
  * ``InvertedResidualNet`` - the skeleton: stem, stages, a 1x1 conv; its pyramid (EfficientNet keeps it);
  * ``MobileNet``           - that skeleton with these blocks, pooling and the classifier;
  * the variants at the bottom: V2's table 2, V3's tables 1 (large) and 2 (small), row by row.

Stages are the rows of V2's table 2: a "sequence of identical layers" with one output width,
the first of which may halve the grid. V3's tables list every block on its own row; consecutive
blocks of one output width are grouped into a stage in the same way (as timm does).

torchvision's details kept here: ReLU6 in V2; BatchNorm eps=1e-3, momentum=0.01 in V3 (its
TensorFlow origins), PyTorch's defaults in V2; the SE block of V3 squeezes to
``make_divisible(expanded // 4, 8)`` channels and gates with a hard sigmoid; V3's first layer after
the pooling is a ``Linear`` (the paper's "conv2d 1x1, NBN" on a 1x1 map is the same thing).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor, nn

from minibones.backbone import Backbone, ModelConfig, StageInfo, classifier
from minibones.layers import ConvNormAct, SqueezeExcite, he_init_, make_divisible
from minibones.porting import numbered_layers
from minibones.registry import register_model

PAPER_V2 = ("Sandler, Howard, Zhu, Zhmoginov, Chen. MobileNetV2: Inverted Residuals and Linear Bottlenecks. "
            "CVPR 2018. arXiv:1801.04381")
PAPER_V3 = "Howard et al. Searching for MobileNetV3. ICCV 2019. arXiv:1905.02244"

# the nonlinearities of the papers' tables: RE (ReLU), RE6 (ReLU6, V2), HS (hard-swish, V3)
ACTIVATIONS = {"RE": nn.ReLU, "RE6": nn.ReLU6, "HS": nn.Hardswish}


@dataclass(frozen=True)
class BlockSpec:
    """One row of V3's tables (V2's rows are expanded into these): input and expanded ("exp size")
    widths, output width, kernel, SE or not, nonlinearity, stride."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    se: bool
    act: str
    stride: int


def parts_built(block: nn.Module) -> tuple[str, ...]:
    """The layers an inverted residual block applies, in order: an expansion or SE it was built
    without (an ``nn.Identity``) is left out. Name maps number a block's layers this way."""
    names = ("expand", "depthwise", "se", "project")
    return tuple(name for name in names if not isinstance(block.get_submodule(name), nn.Identity))


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when it would not change the width), kxk depthwise, optional SE,
    1x1 linear projection; the input is added back when the shapes match (V2 figure 3b, V3 figure 4)."""

    def __init__(self, spec: BlockSpec, norm: dict | None = None):
        super().__init__()
        norm = norm or {}
        act = ACTIVATIONS[spec.act]
        has_expand = spec.expanded != spec.in_channels
        self.expand = ConvNormAct(spec.in_channels, spec.expanded, 1, act=act, **norm) if has_expand else nn.Identity()
        self.depthwise = ConvNormAct(spec.expanded, spec.expanded, spec.kernel, spec.stride, groups=spec.expanded,
                                     act=act, **norm)
        if spec.se:  # V3: squeeze the expanded width by 4, ReLU, hard sigmoid gate
            squeeze = make_divisible(spec.expanded // 4, 8)
            self.se = SqueezeExcite(spec.expanded, squeeze, act=nn.ReLU, gate=nn.Hardsigmoid)
        else:
            self.se = nn.Identity()
        self.project = ConvNormAct(spec.expanded, spec.out_channels, 1, act=None, **norm)  # linear bottleneck
        self.stride = spec.stride
        self.use_residual = spec.stride == 1 and spec.in_channels == spec.out_channels

    @property
    def parts(self) -> tuple[str, ...]:
        return parts_built(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.expand(x)  # (B, exp, H, W)
        out = self.depthwise(out)  # (B, exp, H/s, W/s)
        out = self.se(out)
        out = self.project(out)  # (B, C_out, H/s, W/s)
        if self.use_residual:
            out = out + x
        return out


def stage_rows(blocks: list[BlockSpec]) -> list[list[BlockSpec]]:
    """Group consecutive blocks of one output width into a stage (a row of V2's table 2)."""
    stages: list[list[BlockSpec]] = []
    for spec in blocks:
        if stages and spec.out_channels == stages[-1][-1].out_channels:
            if spec.stride != 1:
                raise ValueError(f"only the first block of a stage may change the resolution, got {spec}")
            stages[-1].append(spec)
        else:
            stages.append([spec])
    return stages


class InvertedResidualNet(Backbone):
    """The skeleton of MobileNetV2, which EfficientNet keeps (its section 4 builds on the same
    "mobile inverted bottleneck"): a 3x3/2 stem conv, stages of inverted residual blocks, a 1x1 conv
    to a wide final map (``conv_head``), pooling and the classifier. A family builds ``stem``,
    ``stages`` and ``conv_head``, and describes its pyramid with :meth:`describe_pyramid`.
    """

    def describe_pyramid(self, stem_channels: int, strides: list[int], widths: list[int], head_channels: int) -> None:
        """A pyramid level ends before every stage that halves the resolution (before the first
        one: the stem's output); the last level is ``conv_head``'s output, at stride 32.
        ``strides`` and ``widths``: each stage's stride and output width."""
        self.stage_taps, self.feature_info = [], []  # a level after that many stages (0: the stem)
        stride, width, module = 2, stem_channels, "stem"
        names = [name for name, _ in self.stages.named_children()]
        for i, (name, stage_stride, stage_width) in enumerate(zip(names, strides, widths)):
            if stage_stride == 2:
                self.stage_taps.append(i)
                self.feature_info.append(StageInfo(module.removeprefix("stages."), width, stride, module))
            stride, width, module = stride * stage_stride, stage_width, f"stages.{name}"
        self.feature_info.append(StageInfo("conv_head", head_channels, stride, "conv_head"))

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        self.check_input(x)
        x = self.stem(x)  # (B, C, H/2, W/2)
        features = [x] if 0 in self.stage_taps else []
        for i, stage in enumerate(self.stages, start=1):
            # MobileNetV2: stage1 (B, 16, H/2), stage2 (24, H/4), stage3 (32, H/8), stage5 (96, H/16) are levels
            x = stage(x)
            if i in self.stage_taps:
                features.append(x)
        features.append(self.conv_head(x))  # (B, 1280 for MobileNetV2 and EfficientNet-B0, H/32, W/32)
        return features


class MobileNet(InvertedResidualNet):
    """Stem (3x3/2 conv), the stages of inverted residual blocks, a 1x1 conv to ``head_channels``,
    pooling, then (V3 only) a hidden layer of ``hidden_channels`` with hard-swish, dropout and the
    classifier.

    ``forward_stages`` returns the last map at each stride 2, 4, 8, 16 (the stem's output when the
    first stage already halves the grid, as in V3-small) and, at stride 32, the output of the 1x1
    head conv (the final feature map).
    """

    def __init__(
        self,
        blocks: list[BlockSpec],
        config: ModelConfig,
        num_classes: int = 1000,
        stem_channels: int = 32,
        head_channels: int = 1280,
        hidden_channels: int | None = None,
        act: str = "RE6",
        dropout: float = 0.2,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ):
        super().__init__()
        self.config = config
        norm = {"eps": bn_eps, "momentum": bn_momentum}
        self.stem = ConvNormAct(3, stem_channels, 3, stride=2, act=ACTIVATIONS[act], **norm)
        rows = stage_rows(blocks)
        stages = [nn.Sequential(*[InvertedResidual(spec, norm) for spec in row]) for row in rows]
        self.stages = nn.Sequential(OrderedDict((f"stage{i}", stage) for i, stage in enumerate(stages, start=1)))
        self.conv_head = ConvNormAct(blocks[-1].out_channels, head_channels, 1, act=ACTIVATIONS[act], **norm)
        self.describe_pyramid(stem_channels, [row[0].stride for row in rows], [row[-1].out_channels for row in rows],
                              head_channels)

        head = OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1))
        if hidden_channels:  # V3 section 5.3: the last expensive layer runs after the pooling
            head.update(pre_logits=nn.Linear(head_channels, hidden_channels), act=nn.Hardswish())
        self.num_features = hidden_channels or head_channels
        head.update(drop=nn.Dropout(dropout), fc=classifier(self.num_features, num_classes))  # as pooled_classifier
        self.head = nn.Sequential(head)
        self.name_map = self.reference_name_map(v3=hidden_channels is not None)
        self.init_weights()

    def reference_name_map(self, v3: bool) -> list[tuple[str, str | None]]:
        """torchvision keeps everything in ``features``: 0 the stem, 1..n the blocks, n+1 the head conv.
        Inside a block it numbers the layers in the order they apply (``parts``), so the numbers
        shift where a block has no expansion or no SE; V2 also stores the projection's conv and BN
        as two entries. Its SE names the 1x1 convs ``fc1`` and ``fc2``."""
        blocks = [(f"stages.{name}.{j}", block) for name, stage in self.stages.named_children()
                  for j, block in enumerate(stage)]
        name_map = [(r"^features\.0\.", "stem."), (rf"^features\.{len(blocks) + 1}\.", "conv_head.")]
        container = "block" if v3 else "conv"
        for k, (ours, block) in enumerate(blocks, start=1):
            parts = block.parts if v3 else block.parts[:-1] + ("project.conv", "project.bn")
            name_map += [(rf"^features\.{k}\.{container}\.{j}\.", f"{ours}.{part}.") for j, part in enumerate(parts)]
        name_map += numbered_layers(["stem", "conv_head", "expand", "depthwise", "project"], ["conv", "bn"])
        name_map += [(r"\.se\.fc1\.", ".se.reduce."), (r"\.se\.fc2\.", ".se.expand.")]
        if v3:  # Linear, Hardswish, Dropout, Linear
            return name_map + [(r"^classifier\.0\.", "head.pre_logits."), (r"^classifier\.3\.", "head.fc.")]
        return name_map + [(r"^classifier\.1\.", "head.fc.")]  # Dropout, Linear

    def init_weights(self) -> None:
        """As the reference: He (fan-out) for convs, BN as the identity, N(0, 0.01) for linear layers."""
        he_init_(self, linear=lambda weight: nn.init.normal_(weight, 0, 0.01))


# --- MobileNetV2: table 2 of the paper ---------------------------------------------------

V2_ROWS = [
    # t (expansion), c (output channels), n (repeats), s (stride of the first)
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def v2_blocks(rows=V2_ROWS, stem_channels: int = 32) -> list[BlockSpec]:
    """Expand table 2's rows (t, c, n, s) into one spec per block: 3x3 kernels, ReLU6, no SE."""
    blocks, in_channels = [], stem_channels
    for t, c, n, s in rows:
        for i in range(n):
            blocks.append(BlockSpec(in_channels, 3, int(round(in_channels * t)), c, False, "RE6", s if i == 0 else 1))
            in_channels = c
    return blocks


@register_model
def mobilenet_v2(**kwargs) -> MobileNet:
    config = ModelConfig(name="mobilenet_v2", reference="torchvision.models.mobilenet_v2", paper=PAPER_V2)
    return MobileNet(v2_blocks(), config, **{"stem_channels": 32, "head_channels": 1280, "act": "RE6", **kwargs})


# --- MobileNetV3: tables 1 and 2 of the paper ---------------------------------------------

V3_LARGE = [
    #        in kernel exp out   SE    NL  s
    BlockSpec(16, 3, 16, 16, False, "RE", 1),
    BlockSpec(16, 3, 64, 24, False, "RE", 2),
    BlockSpec(24, 3, 72, 24, False, "RE", 1),
    BlockSpec(24, 5, 72, 40, True, "RE", 2),
    BlockSpec(40, 5, 120, 40, True, "RE", 1),
    BlockSpec(40, 5, 120, 40, True, "RE", 1),
    BlockSpec(40, 3, 240, 80, False, "HS", 2),
    BlockSpec(80, 3, 200, 80, False, "HS", 1),
    BlockSpec(80, 3, 184, 80, False, "HS", 1),
    BlockSpec(80, 3, 184, 80, False, "HS", 1),
    BlockSpec(80, 3, 480, 112, True, "HS", 1),
    BlockSpec(112, 3, 672, 112, True, "HS", 1),
    BlockSpec(112, 5, 672, 160, True, "HS", 2),
    BlockSpec(160, 5, 960, 160, True, "HS", 1),
    BlockSpec(160, 5, 960, 160, True, "HS", 1),
]

V3_SMALL = [
    BlockSpec(16, 3, 16, 16, True, "RE", 2),
    BlockSpec(16, 3, 72, 24, False, "RE", 2),
    BlockSpec(24, 3, 88, 24, False, "RE", 1),
    BlockSpec(24, 5, 96, 40, True, "HS", 2),
    BlockSpec(40, 5, 240, 40, True, "HS", 1),
    BlockSpec(40, 5, 240, 40, True, "HS", 1),
    BlockSpec(40, 5, 120, 48, True, "HS", 1),
    BlockSpec(48, 5, 144, 48, True, "HS", 1),
    BlockSpec(48, 5, 288, 96, True, "HS", 2),
    BlockSpec(96, 5, 576, 96, True, "HS", 1),
    BlockSpec(96, 5, 576, 96, True, "HS", 1),
]

# V3 comes from TensorFlow: its BatchNorm defaults differ from PyTorch's
V3_BATCH_NORM = {"bn_eps": 1e-3, "bn_momentum": 0.01}


@register_model
def mobilenet_v3_large(**kwargs) -> MobileNet:
    config = ModelConfig(name="mobilenet_v3_large", reference="torchvision.models.mobilenet_v3_large", paper=PAPER_V3)
    return MobileNet(V3_LARGE, config, **{"stem_channels": 16, "head_channels": 960, "hidden_channels": 1280,
                                          "act": "HS", **V3_BATCH_NORM, **kwargs})


@register_model
def mobilenet_v3_small(**kwargs) -> MobileNet:
    config = ModelConfig(name="mobilenet_v3_small", reference="torchvision.models.mobilenet_v3_small", paper=PAPER_V3)
    return MobileNet(V3_SMALL, config, **{"stem_channels": 16, "head_channels": 576, "hidden_channels": 1024,
                                          "act": "HS", **V3_BATCH_NORM, **kwargs})
