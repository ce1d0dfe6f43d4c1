"""Activation maximization: the image a channel likes best (feature visualization).

Start from noise and follow the gradient of one channel's mean activation with respect
to the *image* (Erhan et al. 2009; Simonyan et al. 2014). Done naively, this finds
high-frequency patterns that excite the unit but look like nothing. The standard
remedies (Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017; the
Lucid library) are used here:

* **transformation robustness**: every step sees a randomly jittered, scaled and
  rotated copy, so the pattern must survive small changes of position and size;
* **a Fourier-space parameterization**: the image is the inverse FFT of learnable
  coefficients scaled by 1/frequency, which makes gradient steps favour smooth,
  natural-looking (1/f) spectra;
* **colour decorrelation**: the three learnable channels are mapped to RGB through the
  square root of ImageNet's colour covariance, so that steps move along natural colour
  directions; a sigmoid keeps pixels in [0, 1].

With random weights the result is noise-like texture; with trained weights the familiar
edges, textures and object parts appear.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minibones.viz.activations import layer_outputs
from minibones.viz.display import grid_shape, model_label, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Lucid's colour_correlation_svd_sqrt: the square root of ImageNet's RGB covariance.
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION_SQRT = COLOR_CORRELATION_SQRT / COLOR_CORRELATION_SQRT.norm(dim=0).max()


class ImageParameterization(nn.Module):
    """A learnable image. ``forward()`` returns a (1, 3, H, W) image in [0, 1]."""

    def __init__(
        self, size: int, fourier: bool = True, decorrelate: bool = True, decay_power: float = 1.0, seed: int = 0
    ):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.size, self.fourier, self.decorrelate = size, fourier, decorrelate
        if fourier:
            fy = torch.fft.fftfreq(size)[:, None]
            fx = torch.fft.rfftfreq(size)[None, :]
            frequencies = torch.sqrt(fx**2 + fy**2)  # (H, W//2 + 1)
            # 1/f scaling: low frequencies move fastest (Lucid's fft_image)
            self.register_buffer("scale", 1.0 / torch.clamp(frequencies, min=1.0 / size) ** decay_power)
            self.spectrum = nn.Parameter(0.01 * torch.randn(1, 3, size, size // 2 + 1, 2, generator=generator))
        else:
            self.pixels = nn.Parameter(0.01 * torch.randn(1, 3, size, size, generator=generator))

    def forward(self) -> Tensor:
        if self.fourier:
            spectrum = torch.view_as_complex(self.spectrum) * self.scale
            image = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4.0
        else:
            image = self.pixels
        if self.decorrelate:
            image = torch.einsum("ij,bjhw->bihw", COLOR_CORRELATION_SQRT.to(image), image)
        return torch.sigmoid(image)


def random_transform(
    image: Tensor, jitter: int, scales: Sequence[float], degrees: float, generator: torch.Generator
) -> Tensor:
    """A random shift (up to ``jitter`` pixels), scale and rotation, with reflection at the
    borders, keeping the size (so a ViT still gets a multiple of its patch size)."""
    size = image.shape[-1]
    scale = scales[int(torch.randint(len(scales), (1,), generator=generator))]
    angle = math.radians(float(torch.empty(1).uniform_(-degrees, degrees, generator=generator)))
    shift = (torch.randint(-jitter, jitter + 1, (2,), generator=generator).float() * 2 / size).tolist()
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, shift[0]], [sin, cos, shift[1]]], dtype=image.dtype)[None]
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def maximize_activation(
    model: nn.Module,
    layer: str,
    channel: int,
    size: int | None = None,
    steps: int = 128,
    lr: float = 0.05,
    fourier: bool = True,
    decorrelate: bool = True,
    jitter: int | None = None,
    scales: Sequence[float] = (1.0, 0.975, 1.025, 0.95, 1.05),
    degrees: float = 10.0,
    seed: int = 0,
) -> tuple[Tensor, list[float]]:
    """Optimise an image to maximise the mean activation of ``channel`` in ``layer``.

    ``layer`` is a stage name or module path (for a ViT block, whose output is tokens
    (B, 1 + N, D), the channel is averaged over the tokens). Returns the image (3, H, W)
    in [0, 1] and the objective at every step. ``fourier=False, decorrelate=False`` and
    ``jitter=0, scales=(1,), degrees=0`` give the naive pixel-space ascent, for comparison.
    """
    model.eval()
    size = size or model.config.input_size[1]
    jitter = max(1, size // 16) if jitter is None else jitter
    config = getattr(model, "config", None)
    mean = torch.tensor(getattr(config, "mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
    std = torch.tensor(getattr(config, "std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)
    image = ImageParameterization(size, fourier, decorrelate, seed=seed)
    optimizer = torch.optim.Adam(image.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    requires_grad = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():  # only the image learns (and no gradients are stored for the weights)
        p.requires_grad_(False)
    history = []
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            x = random_transform(image(), jitter, scales, degrees, generator)
            x = (x - mean) / std
            feature = layer_outputs(model, x, [layer], detach=False)[layer]  # stops the forward there
            objective = _channel_mean(feature, channel, layer)
            (-objective).backward()
            optimizer.step()
            history.append(objective.item())
    finally:
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
    return image().detach()[0], history


def plot_feature_visualization(
    model: nn.Module, layer: str, channels: Sequence[int] = (0, 1, 2, 3), **options
) -> "Figure":
    """The preferred pattern of a few channels of ``layer``, side by side."""
    rows, cols = grid_shape(len(channels), 4)
    fig, axes = new_figure(rows, cols, cell=2.0)
    for ax, channel in zip(axes.flat, channels):
        image, history = maximize_activation(model, layer, channel, **options)
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(f"channel {channel}\nactivation {history[0]:.2f} -> {history[-1]:.2f}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(channels):]:
        ax.set_axis_off()
    fig.suptitle(f"{model_label(model)} {layer}: activation maximization", fontsize=9)
    return fig


def _channel_mean(feature: Tensor, channel: int, layer: str) -> Tensor:
    if feature.ndim == 4:  # (B, C, H, W)
        channels = feature.shape[1]
        values = feature[:, channel] if channel < channels else None
    elif feature.ndim == 3:  # ViT tokens (B, 1 + N, D): channels last
        channels = feature.shape[2]
        values = feature[:, :, channel] if channel < channels else None
    else:
        raise ValueError(f"{layer!r} gives a {tuple(feature.shape)} tensor; pick a layer with spatial maps or tokens")
    if values is None:
        raise ValueError(f"{layer!r} has {channels} channels; channel {channel} does not exist")
    return values.mean()
