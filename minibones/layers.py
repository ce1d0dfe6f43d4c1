"""Small building blocks shared by several families.

Only pieces that are truly the same everywhere live here; anything a paper
defines for itself (a residual block, an inception module) lives in that
family's file.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn


class ConvNormAct(nn.Sequential):
    """conv -> batch norm -> activation: the unit most CNNs are made of.

    The conv has no bias by default because the batch norm right after it
    subtracts the mean anyway. ``act`` is a module *class* so that each use gets
    its own instance (captum's hook-based methods need that).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        bias: bool = False,
        eps: float = 1e-5,
        momentum: float = 0.1,
        act: type[nn.Module] | None = nn.ReLU,
    ):
        if padding is None:  # "same" padding for odd kernels at stride 1
            padding = tuple(k // 2 for k in _pair(kernel_size))
        layers = OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias),
            bn=nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum),
        )
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
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)
