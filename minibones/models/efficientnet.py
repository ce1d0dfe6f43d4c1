"""EfficientNet (Tan & Le, ICML 2019) and EfficientNetV2 (Tan & Le, ICML 2021).

A network can be made bigger three ways: deeper, wider, or fed larger images.
Scaling any one of them alone saturates quickly (the paper's figure 3); scaling all
three together, in fixed proportions, buys more accuracy per FLOP. That is
*compound scaling* (section 3.3, equation 3): a single knob phi sets

    depth  d = alpha ** phi,   width  w = beta ** phi,   resolution  r = gamma ** phi,
    with alpha * beta**2 * gamma**2 ~= 2, so that each unit of phi about doubles the FLOPs.

alpha = 1.2, beta = 1.1, gamma = 1.15 were found by a small grid search on the
baseline EfficientNet-B0 at phi = 1; B0 itself came out of a neural architecture search.

Read this file next to the papers:
  * ``MBConv``      - the mobile inverted bottleneck of MobileNetV2 with squeeze-and-excitation:
                      1x1 expand, depthwise kxk, SE, 1x1 linear projection (V1 section 4, figure 2 of V2);
  * ``FusedMBConv`` - V2's block (section 3.2): the expand 1x1 and the depthwise kxk fused into one
                      full kxk conv, which is faster on accelerators in the early, high-resolution stages;
  * ``EfficientNet`` - stem, the stages of table 1 (V1) or table 4 (V2), a 1x1 conv to 1280 x w channels,
                      pooling and the classifier;
  * the variants at the bottom: B0's table, compound scaling to B1-B7, and V2-S/M/L.

What the released models do that the paper does not say:
  * The B1-B7 coefficients (width, depth, resolution) of the official release, which torchvision copies,
    are *not* all equation 3 at some phi. B1-B3 are (phi = 0.5, 1, 2, rounded to 0.1 and to 10 pixels),
    and are derived that way below; B4-B7 are 10-15% shallower than alpha ** phi at the phi their
    resolution implies, and no single phi reproduces them (tensorflow/tpu issues 390 and 738), so they are
    the released values, and ``tests/test_efficientnet.py`` measures how far they are from equation 3.
  * Every channel count goes through ``make_divisible`` (multiples of 8), every depth through ``ceil``.
  * BatchNorm: B0-B4 (weights trained in PyTorch) use PyTorch's eps=1e-5, momentum=0.1; B5-B7 (ported from
    TensorFlow) eps=1e-3, momentum=0.01; V2 eps=1e-3.
  * SE squeezes to a quarter of the block's *input* channels, not of the expanded width.
  * Stochastic depth (Huang et al. 2016) drops a residual branch with a probability that grows linearly
    with the block's index, from 0 at the first block to 0.2 * (N-1)/N at the last.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace

from torch import Tensor, nn

from minibones.backbone import ModelConfig, pooled_classifier
from minibones.layers import ConvNormAct, DropPath, SqueezeExcite, he_init_, make_divisible
from minibones.models.mobilenet import InvertedResidualNet, parts_built
from minibones.porting import numbered_layers
from minibones.registry import register_model

PAPER_V1 = ("Tan, Le. EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks. "
            "ICML 2019. arXiv:1905.11946")
PAPER_V2 = "Tan, Le. EfficientNetV2: Smaller Models and Faster Training. ICML 2021. arXiv:2104.00298"


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation (MnasNet, EfficientNet section 4).

    Thin in, thin out, wide in the middle (the opposite of ResNet's bottleneck): a 1x1 conv expands
    the channels by ``expand_ratio``, a depthwise kxk conv mixes space cheaply in the wide
    representation, SE reweights the channels, and a 1x1 conv projects back *without* activation
    (a ReLU on a thin layer would destroy information: MobileNetV2 section 3.2). The residual is
    added when the shapes allow it, through stochastic depth.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                 drop_path: float = 0.0, norm: dict | None = None, act: type[nn.Module] = nn.SiLU,
                 se: bool = True, padding: str | None = None):
        super().__init__()
        norm = norm or {}
        expanded = make_divisible(in_channels * expand_ratio)
        has_expand = expanded != in_channels  # not with expand_ratio 1 (B0's first stage)
        self.expand = ConvNormAct(in_channels, expanded, 1, act=act, **norm) if has_expand else nn.Identity()
        self.depthwise = ConvNormAct(expanded, expanded, kernel, stride, padding, groups=expanded, act=act, **norm)
        # Lite: no SE (its global pooling is slow on mobile accelerators)
        self.se = SqueezeExcite(expanded, max(1, in_channels // 4), act=act, gate=nn.Sigmoid) if se else nn.Identity()
        self.project = ConvNormAct(expanded, out_channels, 1, act=None, **norm)  # linear bottleneck
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if self.use_residual else nn.Identity()

    @property
    def parts(self) -> tuple[str, ...]:
        return parts_built(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.expand(x)  # (B, t*C, H, W)
        out = self.depthwise(out)  # (B, t*C, H/s, W/s)
        out = self.se(out)
        out = self.project(out)  # (B, C_out, H/s, W/s)
        if self.use_residual:
            out = self.drop_path(out) + x
        return out


class FusedMBConv(nn.Module):
    """EfficientNetV2's fused MBConv (section 3.2, figure 2): the 1x1 expansion and the depthwise
    kxk conv are replaced by one full kxk conv. It has more FLOPs but runs faster on GPUs and TPUs,
    which handle dense convs much better than depthwise ones; V2 uses it in the early stages only.

    With ``expand_ratio`` 1 the block is just that kxk conv (called ``fused`` here); otherwise the
    kxk conv expands and a 1x1 conv projects back, linearly. No SE: the searched V2 models dropped it here.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                 drop_path: float = 0.0, norm: dict | None = None):
        super().__init__()
        norm = norm or {}
        expanded = make_divisible(in_channels * expand_ratio)
        if expanded != in_channels:
            self.expand = ConvNormAct(in_channels, expanded, kernel, stride, act=nn.SiLU, **norm)
            self.project = ConvNormAct(expanded, out_channels, 1, act=None, **norm)
            self.fused = None
        else:
            self.fused = ConvNormAct(in_channels, out_channels, kernel, stride, act=nn.SiLU, **norm)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if self.use_residual else nn.Identity()

    @property
    def parts(self) -> tuple[str, ...]:
        """The layers ``forward`` applies, in order."""
        return ("expand", "project") if self.fused is None else ("fused",)

    def forward(self, x: Tensor) -> Tensor:
        if self.fused is not None:
            out = self.fused(x)  # (B, C_out, H/s, W/s)
        else:
            out = self.project(self.expand(x))  # (B, t*C, H/s, W/s) -> (B, C_out, H/s, W/s)
        if self.use_residual:
            out = self.drop_path(out) + x
        return out


BLOCKS = {"mbconv": MBConv, "fused": FusedMBConv}


@dataclass(frozen=True)
class StageSpec:
    """One row of the paper's table: ``depth`` blocks; the first has ``stride`` and changes the width."""

    block: str  # "mbconv" or "fused"
    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    depth: int

    def scaled(self, width: float, depth: float) -> StageSpec:
        """Apply a width and a depth multiplier with the reference's rounding (multiples of 8, ceil)."""
        return replace(
            self,
            in_channels=make_divisible(self.in_channels * width),
            out_channels=make_divisible(self.out_channels * width),
            depth=math.ceil(self.depth * depth),
        )


class EfficientNet(InvertedResidualNet):
    """Stem (3x3/2 conv), one stage per ``StageSpec``, a 1x1 conv to ``head_channels``, pooling, classifier:
    MobileNetV2's skeleton (:class:`~minibones.models.mobilenet.InvertedResidualNet`) with MBConv blocks.

    Stages are numbered as in V2's table 4 (``stage1`` is the first block stage); V1's table 1 counts
    the stem as stage 1, so its stage i+1 is ``stage{i}`` here. ``forward_stages`` returns the last map at
    each stride 2, 4, 8, 16 and, at stride 32, the output of the 1x1 head conv (the final feature map).
    B0: stage1 (B, 16, H/2, W/2), stage2 (24, H/4), stage3 (40, H/8), stage5 (112, H/16), conv_head (1280, H/32).
    """

    def __init__(
        self,
        stages: list[StageSpec],
        config: ModelConfig,
        num_classes: int = 1000,
        head_channels: int | None = None,
        dropout: float = 0.2,
        drop_path_rate: float = 0.2,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        act: type[nn.Module] = nn.SiLU,
        se: bool = True,
        padding: str | None = None,
    ):
        super().__init__()
        self.config = config
        norm = {"eps": bn_eps, "momentum": bn_momentum}
        self.stem = ConvNormAct(3, stages[0].in_channels, 3, 2, padding, act=act, **norm)

        total_blocks = sum(spec.depth for spec in stages)
        block_index = 0
        stage_modules = OrderedDict()
        for i, spec in enumerate(stages, start=1):
            blocks = []
            for j in range(spec.depth):
                in_channels = spec.in_channels if j == 0 else spec.out_channels
                rate = drop_path_rate * block_index / total_blocks  # linear in depth, 0 for the first block
                options = {"act": act, "se": se, "padding": padding} if spec.block == "mbconv" else {}
                blocks.append(BLOCKS[spec.block](in_channels, spec.out_channels, spec.kernel,
                                                 spec.stride if j == 0 else 1, spec.expand_ratio, rate, norm,
                                                 **options))
                block_index += 1
            stage_modules[f"stage{i}"] = nn.Sequential(*blocks)
        self.stages = nn.Sequential(stage_modules)

        # V1: 4x the last stage's width (1280 for B0); V2: 1280
        head_channels = head_channels or 4 * stages[-1].out_channels
        self.conv_head = ConvNormAct(stages[-1].out_channels, head_channels, 1, act=act, **norm)
        self.describe_pyramid(stages[0].in_channels, [spec.stride for spec in stages],
                              [spec.out_channels for spec in stages], head_channels)

        self.num_features = head_channels
        self.head = pooled_classifier(head_channels, num_classes, dropout)
        if config.reference.startswith("timm."):
            self.name_map = self.timm_name_map()
        else:
            self.name_map = self.reference_name_map(len(stages))
        self.init_weights()

    def reference_name_map(self, num_stages: int) -> list[tuple[str, str | None]]:
        """torchvision keeps everything in ``features``: 0 the stem, 1..n the stages, n+1 the head conv,
        and numbers the layers of a block in the order they apply (``parts``): the numbering shifts
        where a block has no expansion conv. Its SE names the 1x1 convs ``fc1`` and ``fc2``."""
        name_map = [(r"^features\.0\.", "stem."), (rf"^features\.{num_stages + 1}\.", "conv_head.")]
        for i, stage in enumerate(self.stages, start=1):
            for k, part in enumerate(stage[0].parts):
                name_map.append((rf"^features\.{i}\.(\d+)\.block\.{k}\.", rf"stages.stage{i}.\1.{part}."))
        name_map += numbered_layers(["stem", "conv_head", "expand", "depthwise", "project", "fused"], ["conv", "bn"])
        name_map += [(r"\.se\.fc1\.", ".se.reduce."), (r"\.se\.fc2\.", ".se.expand.")]
        return name_map + [(r"^classifier\.1\.", "head.fc.")]

    def timm_name_map(self) -> list[tuple[str, str | None]]:
        """timm's ``tf_efficientnet_lite*`` (the Lite reference): ``blocks.{stage}.{block}``, and the
        parts named after MobileNetV2's code. A block without expansion is timm's
        ``DepthwiseSeparableConv``, where ``conv_pw`` is the *projection*; in an
        ``InvertedResidual`` it is the expansion, and the projection is ``conv_pwl``."""
        name_map = [(r"^conv_stem\.", "stem.conv."), (r"^bn1\.", "stem.bn."),
                    (r"^conv_head\.", "conv_head.conv."), (r"^bn2\.", "conv_head.bn."), (r"^classifier\.", "head.fc.")]
        separable = {"conv_dw": "depthwise.conv", "bn1": "depthwise.bn", "conv_pw": "project.conv", "bn2": "project.bn"}
        inverted = {"conv_pw": "expand.conv", "bn1": "expand.bn", "conv_dw": "depthwise.conv", "bn2": "depthwise.bn",
                    "conv_pwl": "project.conv", "bn3": "project.bn"}
        for i, stage in enumerate(self.stages):
            parts = inverted if "expand" in stage[0].parts else separable
            name_map += [(rf"^blocks\.{i}\.(\d+)\.{theirs}\.", rf"stages.stage{i + 1}.\1.{ours}.")
                         for theirs, ours in parts.items()]
        return name_map

    def efficientnet_pytorch_name_map(self) -> list[tuple[str, str | None]]:
        """The naming of the EfficientNet-PyTorch code, which the pip-packaged Lite checkpoints use:
        ``_conv_stem``/``_bn0``, then ``_blocks.N`` numbered through the whole network (N = 0 ... 15
        for Lite0), each with ``_expand_conv``/``_bn0``, ``_depthwise_conv``/``_bn1``,
        ``_project_conv``/``_bn2``, and ``_conv_head``/``_bn1``, ``_fc`` at the end."""
        name_map = [(r"^_conv_stem\.", "stem.conv."), (r"^_bn0\.", "stem.bn."),
                    (r"^_conv_head\.", "conv_head.conv."), (r"^_bn1\.", "conv_head.bn."), (r"^_fc\.", "head.fc.")]
        blocks = [(i, j) for i, stage in enumerate(self.stages, start=1) for j in range(len(stage))]
        name_map += [(rf"^_blocks\.{n}\.", f"stages.stage{i}.{j}.") for n, (i, j) in enumerate(blocks)]
        name_map += [(r"\._expand_conv\.", ".expand.conv."), (r"\._bn0\.", ".expand.bn."),
                     (r"\._depthwise_conv\.", ".depthwise.conv."), (r"\._bn1\.", ".depthwise.bn."),
                     (r"\._project_conv\.", ".project.conv."), (r"\._bn2\.", ".project.bn.")]
        return name_map

    def name_map_for(self, layout: str = "reference") -> list[tuple[str, str | None]]:
        if layout == "efficientnet_pytorch":
            return self.efficientnet_pytorch_name_map()
        return super().name_map_for(layout)

    def init_weights(self) -> None:
        """As the reference: He (fan-out) for convs, BN as the identity, U(+-1/sqrt(classes)) for the classifier."""

        def classifier_init(weight: Tensor) -> None:
            bound = 1.0 / math.sqrt(weight.shape[0])  # weight is (classes, features)
            nn.init.uniform_(weight, -bound, bound)

        he_init_(self, linear=classifier_init)


# --- EfficientNet-B0: table 1 of the paper ------------------------------------------------

B0_STAGES = [
    #          block  expand kernel stride  in  out depth
    StageSpec("mbconv", 1, 3, 1, 32, 16, 1),
    StageSpec("mbconv", 6, 3, 2, 16, 24, 2),
    StageSpec("mbconv", 6, 5, 2, 24, 40, 2),
    StageSpec("mbconv", 6, 3, 2, 40, 80, 3),
    StageSpec("mbconv", 6, 5, 1, 80, 112, 3),
    StageSpec("mbconv", 6, 5, 2, 112, 192, 4),
    StageSpec("mbconv", 6, 3, 1, 192, 320, 1),
]
B0_RESOLUTION = 224

# --- compound scaling: section 3.3, equation 3 ---------------------------------------------

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution per unit of phi (grid search at phi = 1)


def compound_scaling(phi: float) -> tuple[float, float, float]:
    """Equation 3: (width, depth, resolution) = (beta**phi, alpha**phi, 224 * gamma**phi), unrounded."""
    return BETA**phi, ALPHA**phi, B0_RESOLUTION * GAMMA**phi


def released_rounding(phi: float) -> tuple[float, float, int]:
    """Equation 3 rounded as the official release rounds it: the width and depth
    coefficients to 0.1, the resolution to 10 pixels."""
    width, depth, resolution = compound_scaling(phi)
    return round(width, 1), round(depth, 1), int(round(resolution, -1))


# B0-B7 as released (tensorflow/tpu efficientnet_builder.py, copied by torchvision):
#                    (width, depth, resolution), dropout
EFFICIENTNET_B = {
    "efficientnet_b0": (1.0, 1.0, B0_RESOLUTION, 0.2),  # the baseline, phi = 0
    "efficientnet_b1": (*released_rounding(0.5), 0.2),  # (1.0, 1.1, 240)
    "efficientnet_b2": (*released_rounding(1), 0.3),  # (1.1, 1.2, 260); torchvision evaluates its weights at 288
    "efficientnet_b3": (*released_rounding(2), 0.3),  # (1.2, 1.4, 300)
    # From B4 on, no phi gives the released coefficients: they are shallower than alpha ** phi at the
    # phi their width implies (see the module docstring), so they are the release's own numbers.
    "efficientnet_b4": (1.4, 1.8, 380, 0.4),
    "efficientnet_b5": (1.6, 2.2, 456, 0.4),
    "efficientnet_b6": (1.8, 2.6, 528, 0.5),
    "efficientnet_b7": (2.0, 3.1, 600, 0.5),
}
# torchvision's B5-B7 weights were ported from TensorFlow, whose BatchNorm differs from PyTorch's defaults
TENSORFLOW_BATCH_NORM = {"bn_eps": 1e-3, "bn_momentum": 0.01}


def _efficientnet_b(name: str, **kwargs) -> EfficientNet:
    width, depth, resolution, dropout = EFFICIENTNET_B[name]
    config = ModelConfig(name=name, reference=f"torchvision.models.{name}", paper=PAPER_V1,
                         input_size=(3, resolution, resolution))
    norm = TENSORFLOW_BATCH_NORM if name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7") else {}
    stages = [spec.scaled(width, depth) for spec in B0_STAGES]
    return EfficientNet(stages, config, **{"dropout": dropout, **norm, **kwargs})


@register_model
def efficientnet_b0(**kwargs) -> EfficientNet:
    return _efficientnet_b("efficientnet_b0", **kwargs)


@register_model
def efficientnet_b1(**kwargs) -> EfficientNet:
    return _efficientnet_b("efficientnet_b1", **kwargs)


@register_model
def efficientnet_b2(**kwargs) -> EfficientNet:
    return _efficientnet_b("efficientnet_b2", **kwargs)


@register_model
def efficientnet_b3(**kwargs) -> EfficientNet:
    return _efficientnet_b("efficientnet_b3", **kwargs)


@register_model
def efficientnet_b4(**kwargs) -> EfficientNet:
    return _efficientnet_b("efficientnet_b4", **kwargs)


@register_model
def efficientnet_b5(**kwargs) -> EfficientNet:
    return _efficientnet_b("efficientnet_b5", **kwargs)


@register_model
def efficientnet_b6(**kwargs) -> EfficientNet:
    return _efficientnet_b("efficientnet_b6", **kwargs)


@register_model
def efficientnet_b7(**kwargs) -> EfficientNet:
    return _efficientnet_b("efficientnet_b7", **kwargs)


# --- EfficientNetV2: table 4 of the V2 paper (S); M and L from the official code -------------

EFFICIENTNET_V2 = {
    #                          block  expand kernel stride  in  out depth
    "efficientnet_v2_s": [StageSpec("fused", 1, 3, 1, 24, 24, 2),
                          StageSpec("fused", 4, 3, 2, 24, 48, 4),
                          StageSpec("fused", 4, 3, 2, 48, 64, 4),
                          StageSpec("mbconv", 4, 3, 2, 64, 128, 6),
                          StageSpec("mbconv", 6, 3, 1, 128, 160, 9),
                          StageSpec("mbconv", 6, 3, 2, 160, 256, 15)],
    "efficientnet_v2_m": [StageSpec("fused", 1, 3, 1, 24, 24, 3),
                          StageSpec("fused", 4, 3, 2, 24, 48, 5),
                          StageSpec("fused", 4, 3, 2, 48, 80, 5),
                          StageSpec("mbconv", 4, 3, 2, 80, 160, 7),
                          StageSpec("mbconv", 6, 3, 1, 160, 176, 14),
                          StageSpec("mbconv", 6, 3, 2, 176, 304, 18),
                          StageSpec("mbconv", 6, 3, 1, 304, 512, 5)],
    "efficientnet_v2_l": [StageSpec("fused", 1, 3, 1, 32, 32, 4),
                          StageSpec("fused", 4, 3, 2, 32, 64, 7),
                          StageSpec("fused", 4, 3, 2, 64, 96, 7),
                          StageSpec("mbconv", 4, 3, 2, 96, 192, 10),
                          StageSpec("mbconv", 6, 3, 1, 192, 224, 19),
                          StageSpec("mbconv", 6, 3, 2, 224, 384, 25),
                          StageSpec("mbconv", 6, 3, 1, 384, 640, 7)],
}
#                     evaluation resolution, dropout
V2_SETTINGS = {"efficientnet_v2_s": (384, 0.2), "efficientnet_v2_m": (480, 0.3), "efficientnet_v2_l": (480, 0.4)}


def _efficientnet_v2(name: str, **kwargs) -> EfficientNet:
    resolution, dropout = V2_SETTINGS[name]
    # V2-L's weights are the original authors', trained on inputs normalised to [-1, 1]
    mean_std = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)} if name == "efficientnet_v2_l" else {}
    config = ModelConfig(name=name, reference=f"torchvision.models.{name}", paper=PAPER_V2,
                         input_size=(3, resolution, resolution), **mean_std)
    options = {"head_channels": 1280, "dropout": dropout, "bn_eps": 1e-3, **kwargs}
    return EfficientNet(EFFICIENTNET_V2[name], config, **options)


@register_model
def efficientnet_v2_s(**kwargs) -> EfficientNet:
    return _efficientnet_v2("efficientnet_v2_s", **kwargs)


@register_model
def efficientnet_v2_m(**kwargs) -> EfficientNet:
    return _efficientnet_v2("efficientnet_v2_m", **kwargs)


@register_model
def efficientnet_v2_l(**kwargs) -> EfficientNet:
    return _efficientnet_v2("efficientnet_v2_l", **kwargs)


# --- EfficientNet-Lite: the TensorFlow release's variants for phones (2020) ----------------
# tensorflow/tpu models/official/efficientnet/lite: "Remove squeeze-and-excite (SE): SE are not well
# supported for some mobile accelerators. Replace all swish with RELU6: for easier post-quantization.
# Fix the stem and head while scaling models up: for keeping models small and fast." In the code, the
# depth multiplier also skips the first and the last stage (one block each in every Lite model).

#                        (width, depth, resolution), dropout
EFFICIENTNET_LITE = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}
LITE_STEM, LITE_HEAD = 32, 1280  # never scaled
# trained in TensorFlow: its batch-norm epsilon, its "SAME" padding, and inputs scaled to [-1, 1]
TENSORFLOW_LITE = {"bn_eps": 1e-3, "padding": "tf_same", "act": nn.ReLU6, "se": False}


def _efficientnet_lite(name: str, **kwargs) -> EfficientNet:
    width, depth, resolution, dropout = EFFICIENTNET_LITE[name]
    stages = [spec.scaled(width, depth) for spec in B0_STAGES]
    first, last = B0_STAGES[0], B0_STAGES[-1]
    stages[0] = replace(stages[0], in_channels=LITE_STEM, depth=first.depth)  # fixed stem, first stage not deepened
    stages[-1] = replace(stages[-1], depth=last.depth)  # nor the last
    config = ModelConfig(name=name, reference=f"timm.tf_{name}", paper=PAPER_V1 + " (Lite: the TensorFlow release)",
                         input_size=(3, resolution, resolution), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return EfficientNet(stages, config, head_channels=LITE_HEAD, **{"dropout": dropout, **TENSORFLOW_LITE, **kwargs})


@register_model
def efficientnet_lite0(**kwargs) -> EfficientNet:
    return _efficientnet_lite("efficientnet_lite0", **kwargs)


@register_model
def efficientnet_lite1(**kwargs) -> EfficientNet:
    return _efficientnet_lite("efficientnet_lite1", **kwargs)


@register_model
def efficientnet_lite2(**kwargs) -> EfficientNet:
    return _efficientnet_lite("efficientnet_lite2", **kwargs)


@register_model
def efficientnet_lite3(**kwargs) -> EfficientNet:
    return _efficientnet_lite("efficientnet_lite3", **kwargs)


@register_model
def efficientnet_lite4(**kwargs) -> EfficientNet:
    return _efficientnet_lite("efficientnet_lite4", **kwargs)
