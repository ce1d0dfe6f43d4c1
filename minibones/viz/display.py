"""One way to show every map, so that pictures from different methods can be compared.

The conventions, used by every plotting function of :mod:`minibones.viz`:

* **the photograph underneath**, in grey, so that colour only ever means the map;
* **a colour map fit for the quantity**: a *signed* map (integrated gradients,
  occlusion, guided backprop) is drawn with a diverging colour map centred at zero
  (``RdBu_r``: red is evidence *for* the explained class, blue *against*); a map that
  can only be non-negative (saliency, SmoothGrad, Grad-CAM, attention) with a
  sequential one that starts at zero (``inferno``), never half of a diverging one;
* **one colour scale**: every map is divided by its own 99th percentile of
  ``|map|`` and clipped to [-1, 1] (or [0, 1]), and its opacity grows with
  ``|value|``, so zero is transparent. A percentile rather than the maximum keeps a
  single hot pixel from washing out the rest of the map.

Everything returns a :class:`matplotlib.figure.Figure`; notebooks display it,
tests close it (``plt.close(fig)``). captum's own ``visualization`` module is not used
(it has its own scales per method; and ``import captum.attr.visualization`` fails in
captum 0.9.0, where ``from captum.attr import visualization`` is the working spelling).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # matplotlib is imported lazily: importing minibones.viz stays cheap
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ATTRIBUTION_CMAP = "RdBu_r"  # signed maps: red = positive, blue = negative, white = zero
MAGNITUDE_CMAP = "inferno"  # non-negative maps: dark (and transparent) at zero, bright yellow at the top
FEATURE_CMAP = "magma"  # for feature maps drawn on their own (no photograph under them)
PERCENTILE = 99.0
MAX_ALPHA = 0.85


def normalize_map(values: Tensor | np.ndarray, percentile: float = PERCENTILE) -> np.ndarray:
    """Divide a signed map by its ``percentile`` of ``|values|`` and clip to [-1, 1].

    The sign is kept: this is the one colour scale every attribution is drawn with.
    An all-zero map stays all zero (and is drawn fully transparent).
    """
    array = _to_numpy(values).astype(np.float64)
    scale = np.percentile(np.abs(array), percentile) if array.size else 0.0
    if not np.isfinite(scale) or scale <= 0:
        scale = np.abs(array).max() if array.size else 0.0
    if not np.isfinite(scale) or scale <= 0:
        return np.zeros_like(array)
    return np.clip(array / scale, -1.0, 1.0)


def to_image(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalisation of a model input: (1, 3, H, W) or (3, H, W) -> (H, W, 3) floats in [0, 1]."""
    if x.ndim == 4:
        x = x[0]
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    image = (x.detach() * std_t + mean_t).clamp(0, 1)
    return image.permute(1, 2, 0).cpu().numpy()


def as_input(model: nn.Module, photo, size: int | None = None) -> tuple[Tensor, np.ndarray]:
    """The tensor to feed ``model`` and the picture to show under the maps.

    ``photo`` may be a photograph's name (``"cat"``, see :mod:`minibones.data.photos`), a
    :class:`minibones.data.photos.Photo` (such as a composite of two photographs side by side),
    or an already normalised (1, 3, H, W) tensor. Names and ``Photo`` objects are normalised
    with *this* model's mean and std (the CIFAR models and EfficientNet-Lite use other
    statistics than the ImageNet ones); a name is loaded at ``size`` pixels (default: the
    model's own input size), a ``Photo`` is used at its own size unless ``size`` asks otherwise.
    """
    from minibones.data.photos import Photo, load_photo

    config = getattr(model, "config", None)
    mean = getattr(config, "mean", (0.485, 0.456, 0.406))
    std = getattr(config, "std", (0.229, 0.224, 0.225))
    if isinstance(photo, str):
        if size is None:
            size = config.input_size[1] if config is not None else 224
        loaded = load_photo(photo, size=size, mean=mean, std=std)
        return loaded.tensor, loaded.image
    if isinstance(photo, Photo):
        image = torch.from_numpy(np.asarray(photo.image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        if size is not None and image.shape[-2] != size:
            return as_input(model, photo.name, size)  # a named photograph, loaded again at that size
        tensor = (image - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        return tensor, photo.image
    if isinstance(photo, Tensor):
        if photo.ndim == 3:
            photo = photo[None]
        if photo.ndim != 4 or photo.shape[:2] != (1, 3):
            raise ValueError(
                f"expected one normalised image shaped (1, 3, H, W), got {tuple(photo.shape)}; "
                "pass a photograph's name such as 'cat' to let minibones load and normalise it."
            )
        return photo, to_image(photo, mean, std)
    raise TypeError(
        "photo must be a name such as 'cat', a minibones.data.photos.Photo or a (1, 3, H, W) tensor, "
        f"got {type(photo).__name__}"
    )


def grey(image: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R BT.601) of an RGB image in [0, 1] or uint8, as floats in [0, 1]."""
    array = np.asarray(image, dtype=np.float64)
    if array.max() > 1.0:
        array = array / 255.0
    if array.ndim == 3:
        array = array[..., :3] @ np.array([0.299, 0.587, 0.114])
    return array


def resize_map(values: Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``size`` (the nearest-neighbour default of captum's
    ``LayerAttribution.interpolate`` draws blocks that are not in the data)."""
    tensor = torch.as_tensor(_to_numpy(values), dtype=torch.float32)[None, None]
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor[0, 0].numpy()
    return torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay_rgba(values: Tensor | np.ndarray, normalized: bool = False, signed: bool = True) -> np.ndarray:
    """The RGBA image of a map in the shared colour scale: colour from the value (diverging around
    zero if ``signed``, sequential from zero otherwise), opacity from ``|value|``."""
    from matplotlib import colormaps

    array = _to_numpy(values) if normalized else normalize_map(values)
    if signed:
        rgba = colormaps[ATTRIBUTION_CMAP](0.5 + 0.5 * array)
    else:
        rgba = colormaps[MAGNITUDE_CMAP](np.clip(array, 0.0, 1.0))
    rgba[..., 3] = MAX_ALPHA * np.abs(array if signed else np.clip(array, 0.0, 1.0))
    return rgba


def show_overlay(
    ax: "Axes", image: np.ndarray, values: Tensor | np.ndarray | None, title: str = "", signed: bool = True,
    smooth: float = 0.0,
) -> None:
    """Draw ``values`` over the photograph (in grey) on ``ax`` in the shared colour scale:
    diverging around zero for a ``signed`` map, sequential from zero for a non-negative one.

    ``smooth`` (pixels) blurs the map for display only, with a Gaussian of that standard
    deviation. Maps with one value per pixel alternate sign and strength from pixel to pixel;
    drawn in a panel smaller than the image, neighbours average out and the map all but
    vanishes. Blurred, each place shows a weighted mean of its neighbours' values, proportional
    to their sum: for a complete method (integrated gradients), their joint contribution to
    the score."""
    background = grey(image)
    ax.imshow(background, cmap="gray", vmin=0, vmax=1)
    if values is not None:
        array = _to_numpy(values).astype(np.float64)
        if not signed and array.min(initial=0.0) < 0:
            raise ValueError("a map with negative values must be drawn with signed=True (a diverging colour map)")
        if smooth > 0:
            from scipy.ndimage import gaussian_filter

            array = gaussian_filter(array, sigma=smooth, mode="nearest")
        if array.shape != background.shape:
            array = resize_map(array, background.shape)
        ax.imshow(overlay_rgba(array, signed=signed), interpolation="bilinear")
    _finish(ax, title)


def as_jpeg(fig: "Figure", dpi: int = 100, quality: int = 90):
    """The figure as a JPEG image for a notebook, and the figure closed.

    For figures made of photographs (attribution maps over images): a PNG of them is five to
    ten times larger than a JPEG that looks the same; line art (curves, text) stays PNG."""
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", dpi=dpi, bbox_inches="tight", pil_kwargs={"quality": quality})
    plt.close(fig)
    return Image(data=buffer.getvalue(), format="jpeg")


def show_note(ax: "Axes", image: np.ndarray | None, note: str, title: str = "") -> None:
    """A panel that *says* why no map is drawn (instead of drawing a misleading one)."""
    if image is not None:
        ax.imshow(grey(image), cmap="gray", vmin=0, vmax=1, alpha=0.35)
    long = len(note) > 150
    ax.text(
        0.5, 0.5, _wrap(note, 34 if long else 26), transform=ax.transAxes, ha="center", va="center",
        fontsize=7 if long else 8,
        bbox=dict(boxstyle="round", facecolor="lightyellow", edgecolor="0.6"),
    )
    _finish(ax, title)


def show_image(ax: "Axes", image: np.ndarray, title: str = "") -> None:
    ax.imshow(image)
    _finish(ax, title)


SIGNED_LABEL = "signed map / its 99th pct of |map|:\nred supports the class, blue opposes"
MAGNITUDE_LABEL = "non-negative map / its 99th percentile"


def add_colorbar(fig: "Figure", axes, label: str | None = None, signed: bool = True) -> None:
    """One colour bar for a group of panels that share the scale: from -1 to 1 on the diverging
    colour map of signed maps, from 0 to 1 on the sequential one of non-negative maps."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if signed:
        mappable = ScalarMappable(norm=Normalize(-1, 1), cmap=ATTRIBUTION_CMAP)
    else:
        mappable = ScalarMappable(norm=Normalize(0, 1), cmap=MAGNITUDE_CMAP)
    bar = fig.colorbar(mappable, ax=axes, fraction=0.025, pad=0.02)
    bar.set_label(label or (SIGNED_LABEL if signed else MAGNITUDE_LABEL), fontsize=9)
    bar.ax.tick_params(labelsize=9)


def new_figure(rows: int, cols: int, cell: float = 2.2) -> tuple["Figure", np.ndarray]:
    """A figure of ``rows`` x ``cols`` square panels (axes always returned as a 2-D array)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(cell * cols + 0.8, cell * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def model_label(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "name", type(model).__name__)


def as_model_dict(models) -> dict[str, nn.Module]:
    """Accept one model, a list of models or names, or a ``{label: model}`` mapping."""
    from minibones.registry import create_model

    if isinstance(models, nn.Module):
        models = [models]
    if isinstance(models, Mapping):
        items = list(models.items())
    else:
        items = []
        for entry in models:
            model = create_model(entry) if isinstance(entry, str) else entry
            items.append((entry if isinstance(entry, str) else model_label(model), model))
    result = {}
    for label, model in items:
        if not isinstance(model, nn.Module):
            raise TypeError(f"{label!r} is a {type(model).__name__}, not a model (nn.Module)")
        result[label] = model.eval()
    return result


def _finish(ax: "Axes", title: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width=width)) if len(text) > width else text


def _to_numpy(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values)


def grid_shape(n: int, max_cols: int = 8) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols
