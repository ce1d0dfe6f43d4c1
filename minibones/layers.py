"""Small building blocks shared by several families.

Only pieces that are truly the same everywhere live here; anything a paper
defines for itself (a residual block, an inception module) lives in that
family's file.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TFSamePad(nn.Module):
    """TensorFlow's ``padding="SAME"`` for a strided conv: pad so that ``out = ceil(in / stride)``,
    putting the odd pixel at the bottom and the right.

    PyTorch pads symmetrically, ``kernel // 2`` on every side, whatever the input size. TensorFlow
    pads only as much as the kernel needs to cover ``ceil(in / stride)`` output positions, and when
    that total is odd the extra pixel goes after the image. For a 3x3 conv with stride 2 on 224
    pixels, PyTorch pads 1 + 1 and its windows are centred on pixels 0, 2, ..., 222; TensorFlow
    pads 0 + 1 and centres them on 1, 3, ..., 223: the same weights then look at a grid shifted by
    one pixel. A network trained in TensorFlow (EfficientNet-Lite) learned its filters on that
    grid, so it needs this padding to compute the function it was trained as; with PyTorch's, its
    predictions are close but not the same. At stride 1 and odd kernels both rules pad ``k // 2``
    on each side, so :class:`ConvNormAct` only inserts this module before strided convs.

    The amount depends on the input size (odd or even), so it is computed in ``forward``.
    """

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int]):
        super().__init__()
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)

    @staticmethod
    def amount(size: int, kernel: int, stride: int) -> tuple[int, int]:
        """(before, after) for one axis: enough for ceil(size / stride) windows, the odd pixel after."""
        out = -(-size // stride)  # ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = self.amount(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = self.amount(x.shape[-1], self.kernel_size[1], self.stride[1])
        return F.pad(x, (left, right, top, bottom))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class ConvNormAct(nn.Sequential):
    """conv -> batch norm -> activation: the unit most CNNs are made of.

    The conv has no bias by default because the batch norm right after it
    subtracts the mean anyway. ``act`` is a module *class* so that each use gets
    its own instance (captum's hook-based methods need that). ``padding="tf_same"``
    pads as TensorFlow does (see :class:`TFSamePad`), for weights trained there.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] | str | None = None,
        groups: int = 1,
        bias: bool = False,
        eps: float = 1e-5,
        momentum: float = 0.1,
        act: type[nn.Module] | None = nn.ReLU,
    ):
        layers = OrderedDict()
        if padding == "tf_same" and _pair(stride) != (1, 1):
            layers["pad"] = TFSamePad(kernel_size, stride)
            padding = 0
        elif padding in (None, "tf_same"):  # "same" padding for odd kernels at stride 1
            padding = tuple(k // 2 for k in _pair(kernel_size))
        layers["conv"] = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        layers["bn"] = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)
        if act is not None:
            layers["act"] = act()
        super().__init__(layers)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): during training, drop a whole residual branch
    for a random subset of the samples in the batch, and rescale the rest by 1/(1-p)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        if keep > 0:
            mask.div_(keep)  # scale the (B, 1, 1, 1) mask, not the whole activation
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` (8 suits SIMD lanes and tensor cores),
    but never more than 10% below ``value``.

    The rule of the MobileNet and EfficientNet reference code (TensorFlow's ``_make_divisible``), which
    every width multiplier goes through: ``make_divisible(32 * 1.1) == 32``, ``make_divisible(320 * 1.1) == 352``.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # rounding down must not lose more than 10% of the channels
        rounded += divisor
    return rounded


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018, section 3): reweight the channels by a gate computed
    from the whole image.

    *Squeeze*: global average pooling gives one number per channel (equation 2). *Excite*: a small
    bottleneck MLP, written as 1x1 convs, maps these to one gate in (0, 1) per channel (equation 3),
    and the input is scaled by it (equation 4). The families differ in three knobs, so they are
    arguments here and each family passes its own:

    * EfficientNet: ``squeeze_channels = block_input_channels // 4`` (of the block's *input*, not the
      expanded width), ``act=nn.SiLU``, ``gate=nn.Sigmoid``;
    * MobileNetV3: ``squeeze_channels = make_divisible(expanded_channels // 4, 8)``, ``act=nn.ReLU``,
      ``gate=nn.Hardsigmoid`` (cheaper on phones).
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        act: type[nn.Module] = nn.ReLU,
        gate: type[nn.Module] = nn.Sigmoid,
    ):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)  # W1 of equation 3
        self.act = act()
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)  # W2 of equation 3
        self.gate = gate()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))  # (B, C, 1, 1)
        return scale * x


def he_init_(model: nn.Module, linear: Callable[[Tensor], None] | None = None) -> None:
    """The initialisation most CNN references share: He (fan-out) normal for every conv
    (He et al. 2015, so that a deep ReLU stack neither explodes nor vanishes at the
    start), batch norm as the identity, zero biases; ``linear(weight)`` initialises the
    fully connected layers (``None`` keeps PyTorch's default for them).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and linear is not None:
            linear(module.weight)
            nn.init.zeros_(module.bias)
