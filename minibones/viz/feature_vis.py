"""Activation maximization: the image a channel likes best (feature visualization).

Start from noise and follow the gradient of one channel's mean activation with respect
to the *image* (Erhan et al. 2009; Simonyan et al. 2014). Done naively, this finds
high-frequency patterns that excite the unit but look like nothing. The standard
remedies (Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017; the
Lucid library's ``standard_transforms``, ``fft_image`` and ``to_valid_rgb``) are used here:

* **transformation robustness** (:func:`transform_robustly`): every step sees a copy of
  the image padded with grey, randomly scaled and rotated, and shifted (jitter), so the
  pattern must survive small changes of position, size and angle;
* **a Fourier-space parameterization**: the image is the inverse FFT of learnable
  coefficients scaled by 1/frequency^decay_power, so that equal steps on every coefficient
  move low frequencies most and the image stays smooth (natural images have a 1/f spectrum);
* **colour decorrelation**: the three learnable channels are mapped to RGB through the
  square root of ImageNet's colour covariance, so that steps move along natural colour
  directions; a sigmoid keeps pixels in [0, 1].

Several channels are optimised at once, one image each in one batch: on a CPU a batch
of four costs little more than one image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minibones.viz.activations import layer_outputs
from minibones.viz.display import model_label, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Lucid's colour_correlation_svd_sqrt: the square root of ImageNet's RGB covariance.
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION_SQRT = COLOR_CORRELATION_SQRT / COLOR_CORRELATION_SQRT.norm(dim=0).max()


class ImageParameterization(nn.Module):
    """``batch`` learnable images. ``forward()`` returns (batch, 3, size, size) in [0, 1]."""

    def __init__(
        self, size: int, fourier: bool = True, decorrelate: bool = True, decay_power: float = 1.0, seed: int = 0,
        batch: int = 1,
    ):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.size, self.fourier, self.decorrelate = size, fourier, decorrelate
        if fourier:
            fy = torch.fft.fftfreq(size)[:, None]
            fx = torch.fft.rfftfreq(size)[None, :]
            frequencies = torch.sqrt(fx**2 + fy**2)  # (H, W//2 + 1), in cycles per pixel
            # 1/f scaling: low frequencies move fastest (Lucid's fft_image)
            self.register_buffer("scale", 1.0 / torch.clamp(frequencies, min=1.0 / size) ** decay_power)
            self.spectrum = nn.Parameter(0.01 * torch.randn(batch, 3, size, size // 2 + 1, 2, generator=generator))
        else:
            self.pixels = nn.Parameter(0.01 * torch.randn(batch, 3, size, size, generator=generator))

    def forward(self) -> Tensor:
        if self.fourier:
            spectrum = torch.view_as_complex(self.spectrum) * self.scale
            image = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4.0  # (B, 3, H, W)
        else:
            image = self.pixels
        if self.decorrelate:
            image = torch.einsum("ij,bjhw->bihw", COLOR_CORRELATION_SQRT.to(image), image)
        return torch.sigmoid(image)


def transform_robustly(images: Tensor, generator: torch.Generator, pad: int) -> Tensor:
    """Lucid's ``standard_transforms``, keeping the size (a ViT needs a multiple of its patch):
    pad ``pad`` pixels of grey, scale by 1 +- up to 10% and rotate by up to 10 degrees, then cut
    a random window of the original size (a shift of up to ``pad`` pixels each way: the jitter).
    One random draw for the whole batch."""
    height, width = images.shape[-2:]
    x = F.pad(images, (pad, pad, pad, pad), value=0.5)
    scale = 1 + (int(torch.randint(11, (1,), generator=generator)) - 5) / 50  # 0.9 ... 1.1
    angle = math.radians(int(torch.randint(21, (1,), generator=generator)) - 10)  # -10 ... 10 degrees
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    dy, dx = torch.randint(2 * pad + 1, (2,), generator=generator).tolist()
    return x[..., dy : dy + height, dx : dx + width]


@dataclass(frozen=True)
class Visualization:
    """The images that maximise ``channels`` of ``layer``, and the objective at every step."""

    layer: str
    channels: tuple[int, ...]
    images: Tensor  # (N, 3, H, W) in [0, 1], one per channel
    history: Tensor  # (steps, N): each channel's mean activation on its (transformed) image


def visualize_channels(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    size: int | None = None,
    steps: int = 128,
    lr: float = 0.05,
    fourier: bool = True,
    decorrelate: bool = True,
    decay_power: float = 1.0,
    robust: bool = True,
    pad: int | None = None,
    seed: int = 0,
) -> Visualization:
    """Optimise one image per channel, all in one batch, to maximise that channel's mean activation
    in ``layer`` (Lucid's "channel" objective).

    ``layer`` is a stage name or a module path (for a ViT block, whose output is tokens
    (B, 1 + N, D), the channel is averaged over the tokens). Pick a layer *before* a ReLU or
    ReLU6 where there is one (``"conv_head.bn"`` rather than ``"conv_head"``): a channel that is
    clipped gets no gradient. ``fourier=False, decorrelate=False, robust=False`` is the naive
    pixel-space ascent, for comparison. ``pad`` defaults to size // 16 (Lucid: 12 of 224).
    """
    channels = [int(c) for c in channels]
    if not channels:
        raise ValueError("give at least one channel")
    model.eval()
    size = size or model.config.input_size[1]
    pad = max(1, size // 16) if pad is None else pad
    config = getattr(model, "config", None)
    device = next(model.parameters()).device
    mean = torch.tensor(getattr(config, "mean", (0.485, 0.456, 0.406)), device=device).view(1, 3, 1, 1)
    std = torch.tensor(getattr(config, "std", (0.229, 0.224, 0.225)), device=device).view(1, 3, 1, 1)
    image = ImageParameterization(size, fourier, decorrelate, decay_power, seed, batch=len(channels)).to(device)
    optimizer = torch.optim.Adam(image.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    requires_grad = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():  # only the images learn (and no gradients are stored for the weights)
        p.requires_grad_(False)
    history = []
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            x = image()
            if robust:
                x = transform_robustly(x, generator, pad)
            feature = layer_outputs(model, (x - mean) / std, [layer], detach=False)[layer]  # stops the forward there
            objective = _channel_means(feature, channels, layer)  # (N,)
            (-objective.sum()).backward()
            optimizer.step()
            history.append(objective.detach().cpu())
    finally:
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
    return Visualization(layer, tuple(channels), image().detach().cpu(), torch.stack(history))


def maximize_activation(model: nn.Module, layer: str, channel: int, **options) -> tuple[Tensor, list[float]]:
    """One channel's image (3, H, W) in [0, 1] and its objective at every step (options as
    :func:`visualize_channels`)."""
    result = visualize_channels(model, layer, [channel], **options)
    return result.images[0], result.history[:, 0].tolist()


def channel_response(model: nn.Module, layer: str, images: Tensor, channels: Sequence[int]) -> Tensor:
    """(N_images, N_channels): the mean activation of every channel in ``channels`` on every image of
    ``images`` (N, 3, H, W) in [0, 1], untransformed: the number that compares an optimised image
    with photographs."""
    config = getattr(model, "config", None)
    device = next(model.parameters()).device
    mean = torch.tensor(getattr(config, "mean", (0.485, 0.456, 0.406)), device=device).view(1, 3, 1, 1)
    std = torch.tensor(getattr(config, "std", (0.229, 0.224, 0.225)), device=device).view(1, 3, 1, 1)
    with torch.no_grad():
        feature = layer_outputs(model.eval(), (images.to(device) - mean) / std, [layer])[layer]
        return torch.stack([_channel_means(feature, [int(c)] * len(images), layer) for c in channels], 1).cpu()


def plot_visualizations(visualizations: Sequence[Visualization], labels: Sequence[str] | None = None,
                        cell: float = 1.5) -> "Figure":
    """One row per :class:`Visualization` (a layer), one optimised image per channel, titled with the
    channel and its objective at the first and the last step."""
    cols = max(len(v.channels) for v in visualizations)
    fig, axes = new_figure(len(visualizations), cols, cell=cell)
    for row, visualization in enumerate(visualizations):
        for col in range(cols):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(visualization.channels):
                ax.set_axis_off()
                continue
            ax.imshow(visualization.images[col].permute(1, 2, 0).numpy())
            first, last = visualization.history[0, col], visualization.history[-1, col]
            ax.set_title(f"ch {visualization.channels[col]}: {first:.1f} -> {last:.1f}", fontsize=9)
        label = labels[row] if labels is not None else visualization.layer
        axes[row, 0].set_ylabel(label, fontsize=9)
    return fig


def plot_feature_visualization(
    model: nn.Module, layer: str, channels: Sequence[int] = (0, 1, 2, 3), **options
) -> "Figure":
    """The preferred pattern of a few channels of ``layer``, side by side."""
    fig = plot_visualizations([visualize_channels(model, layer, channels, **options)])
    fig.suptitle(f"{model_label(model)} {layer}: activation maximization", fontsize=9)
    return fig


def _channel_means(feature: Tensor, channels: list[int], layer: str) -> Tensor:
    """(N,): the mean of ``channels[n]`` over the positions of image n."""
    if feature.ndim == 4:  # (B, C, H, W)
        count, axis = feature.shape[1], 1
    elif feature.ndim == 3:  # ViT tokens (B, 1 + N, D): channels last
        count, axis = feature.shape[2], 2
    else:
        raise ValueError(f"{layer!r} gives a {tuple(feature.shape)} tensor; pick a layer with spatial maps or tokens")
    for channel in channels:
        if not 0 <= channel < count:
            raise ValueError(f"{layer!r} has {count} channels; channel {channel} does not exist")
    index = torch.arange(len(channels), device=feature.device)
    picked = torch.tensor(channels, device=feature.device)
    values = feature[index, :, picked] if axis == 2 else feature[index, picked]  # (N, H, W) or (N, tokens)
    return values.flatten(1).mean(1)


__all__ = [
    "COLOR_CORRELATION_SQRT", "ImageParameterization", "Visualization", "channel_response", "maximize_activation",
    "plot_feature_visualization", "plot_visualizations", "transform_robustly", "visualize_channels",
]
