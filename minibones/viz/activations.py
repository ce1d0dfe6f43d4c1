"""Looking at activations: what each stage of a backbone computes on a photograph.

Zeiler & Fergus (ECCV 2014) showed that early layers respond to edges, colours and
textures, later ones to parts and whole objects. The tools here let a learner see
that on any backbone of the library:

* :func:`capture` - forward hooks on stages or named layers, as a context manager that
  always removes them (a forgotten hook keeps firing, and keeps memory alive);
* :func:`feature_grid` - the channels of one layer, strongest first;
* :func:`first_layer_filters` - the first convolution's kernels drawn as RGB images;
* :func:`first_layer_statistics` - how much of each first-layer filter is grey, and how smooth;
* :func:`stage_statistics` - shape, stride, mean, spread and sparsity of every stage;
* :func:`compare_stages` - the same photograph through several backbones, stage by stage;
* :func:`strongest_units` and :meth:`UnitBank.top_patches` - the image patches that excite a
  channel most (Zeiler & Fergus 2014), drawn by :func:`plot_top_patches`.

Layers are named either by a stage name from ``model.feature_info`` (``"conv3_x"``)
or by a module path from ``model.named_modules()`` (``"stages.conv3_x.0.relu2"``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from minibones.backbone import mode
from minibones.viz.display import (
    FEATURE_CMAP, add_colorbar, as_input, as_model_dict, grid_shape, model_label, new_figure, show_image,
    show_overlay,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minibones.viz.receptive_field import ReceptiveField


def resolve_layer(model: nn.Module, name: str) -> str:
    """The module path of ``name``: a stage name (``feature_info``) or a module path."""
    for info in getattr(model, "feature_info", []):
        if info.name == name:
            return info.module
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return name
    stages = [info.name for info in getattr(model, "feature_info", [])]
    import difflib

    close = difflib.get_close_matches(name, stages + [m for m in modules if m], n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"{model_label(model)} has no stage or layer named {name!r}.{hint} Stages: {stages}; "
        "any path from dict(model.named_modules()) also works."
    )


@contextmanager
def capture(model: nn.Module, layers: str | Sequence[str], detach: bool = True) -> Iterator[dict[str, Tensor]]:
    """Record the outputs of ``layers`` during the forward passes run inside the block.

        >>> with capture(model, ["conv2_x", "conv5_x"]) as acts:  # doctest: +SKIP
        ...     model(x)
        >>> acts["conv5_x"].shape  # doctest: +SKIP
        torch.Size([1, 512, 7, 7])

    The hooks are removed when the block ends, even if it raises. Outputs are detached
    unless ``detach=False`` (then gradients can flow back to them). A module returning
    a tuple is recorded by its first tensor. Note: for ViT a stage's *module* outputs
    tokens (B, 1 + N, D); ``forward_stages`` is what reshapes them to a grid.
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    store: dict[str, Tensor] = {}
    handles = []
    try:
        for name in names:
            module = model.get_submodule(resolve_layer(model, name))
            handles.append(module.register_forward_hook(_recorder(store, name, detach)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


class _Enough(Exception):
    """Raised by a hook to stop the forward pass once the wanted layers have run."""


def layer_outputs(model: nn.Module, x: Tensor, layers: Sequence[str], detach: bool = True) -> dict[str, Tensor]:
    """Run ``model`` on ``x`` just far enough to record ``layers`` (the rest of the network is skipped)."""
    names = list(layers)
    with capture(model, names, detach=detach) as store:
        hook = None
        last = model.get_submodule(resolve_layer(model, names[-1])) if names else None

        def stop(module, inputs, output):
            if all(name in store for name in names):
                raise _Enough

        try:
            hook = last.register_forward_hook(stop) if last is not None else None
            model(x)
        except _Enough:
            pass
        finally:
            if hook is not None:
                hook.remove()
    missing = [name for name in names if name not in store]
    if missing:
        raise RuntimeError(f"{missing} did not run in {model_label(model)}'s forward pass (a module of the head?)")
    return dict(store)


def stage_or_layer_output(model: nn.Module, x: Tensor, layer: str | None = None) -> Tensor:
    """One feature map, with its graph (gradients can flow to ``x``).

    A stage name (default: the last stage) is taken from ``forward_stages``, so ViT's
    stages come back as (B, D, H/P, W/P) grids; any other name is a module path.
    """
    stages = [info.name for info in getattr(model, "feature_info", [])]
    layer = layer or stages[-1]
    if layer in stages:
        return model.forward_stages(x)[stages.index(layer)]
    return layer_outputs(model, x, [layer], detach=False)[layer]


def strongest_channels(activation: Tensor, count: int) -> list[int]:
    """Channels ordered by their mean absolute activation, strongest first.

    ``activation`` is (C, H, W) or (N, C) tokens (channels last)."""
    values = activation.detach().abs()
    per_channel = values.flatten(1).mean(1) if values.ndim == 3 else values.mean(0)
    return per_channel.argsort(descending=True)[:count].tolist()


def feature_grid(
    model: nn.Module, photo="cat", layer: str | None = None, channels: int = 16, size: int | None = None
) -> "Figure":
    """The ``channels`` strongest channels of ``layer`` (default: the first stage) on a photograph,
    all drawn with one colour scale so that their strengths can be compared."""
    model.eval()
    x, image = as_input(model, photo, size)
    layer = layer or model.feature_info[0].name
    with torch.no_grad():
        feature = stage_or_layer_output(model, x.to(_device(model)), layer)[0].cpu()
    if feature.ndim != 3:
        raise ValueError(f"{layer!r} gives a {tuple(feature.shape)} tensor, not a (C, H, W) map; pick a stage name")
    order = strongest_channels(feature, channels)
    maps = feature[order].numpy()
    rows, cols = grid_shape(len(order) + 1, 6)
    fig, axes = new_figure(rows, cols, cell=1.6)
    show_image(axes[0, 0], image, f"{model_label(model)}\n{layer} {tuple(feature.shape)}")
    vmax = float(np.percentile(np.abs(maps), 99.5)) or 1.0
    vmin = min(0.0, float(maps.min()))
    for k, ax in enumerate(axes.flat[1:]):
        if k < len(order):
            im = ax.imshow(maps[k], cmap=FEATURE_CMAP, vmin=vmin, vmax=vmax)
            ax.set_title(f"channel {order[k]}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(k < len(order))
    fig.colorbar(im, ax=axes, fraction=0.025, pad=0.02).set_label("activation (one scale for all channels)", fontsize=8)
    return fig


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first convolution that reads the image (the stem, or ViT's patch embedding)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return module
    raise ValueError(f"{model_label(model)} has no nn.Conv2d reading 3 channels")


def first_layer_filters(models, max_filters: int = 64, scale: str = "filter", columns: int = 16) -> "Figure":
    """The first convolution's kernels as small RGB images (Krizhevsky et al. 2012, figure 3).

    ``models`` is one model or a ``{label: model}`` dict (one block of rows each, e.g. random
    next to trained). A weight of 0 is mid-grey. ``scale="filter"`` stretches every kernel to
    its own largest ``|weight|`` so that its *pattern* is legible (a batch norm after the conv
    rescales each filter anyway); ``scale="layer"`` uses one scale for the whole layer, so that
    strengths can be compared. A kernel that is zero (to 1e-6 of the layer's largest) is drawn
    flat grey and titled "k=0" rather than stretched into noise. Trained networks show
    oriented edges and colour blobs here; a random initialisation shows noise."""
    if scale not in ("filter", "layer"):
        raise ValueError(f"scale must be 'filter' or 'layer', got {scale!r}")
    models = as_model_dict(models)
    blocks = []
    for label, model in models.items():
        weight = first_conv(model).weight.detach().float().cpu()[:max_filters]  # (C_out, 3, k, k)
        blocks.append((label, weight, grid_shape(len(weight), columns)))
    cols = max(shape[1] for _, _, shape in blocks)
    rows = sum(shape[0] for _, _, shape in blocks)
    fig, axes = new_figure(rows, cols, cell=0.64)
    row = 0
    for label, weight, (block_rows, _) in blocks:
        peaks = weight.flatten(1).abs().amax(1)  # (C_out,)
        dead = peaks <= 1e-6 * peaks.max().clamp_min(1e-12)
        divisor = peaks.clamp_min(1e-12)[:, None, None, None] if scale == "filter" else peaks.max().clamp_min(1e-12)
        images = (0.5 + 0.5 * weight / divisor).clamp(0, 1)
        images[dead] = 0.5
        for k, ax in enumerate(axes[row : row + block_rows].flat):
            if k < len(images):
                ax.imshow(images[k].permute(1, 2, 0).numpy(), interpolation="nearest")
                ax.set_title(f"{k}=0" if dead[k] else str(k), fontsize=9, pad=2)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(k < len(images))
        axes[row, 0].set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
        row += block_rows
    conv = first_conv(next(iter(models.values())))
    k = conv.kernel_size
    how = "each filter stretched to its own range" if scale == "filter" else "one scale for the layer"
    fig.suptitle(f"first-layer filters ({k[0]}x{k[1]}x3; grey = 0, {how})", fontsize=9)
    return fig


def first_layer_statistics(model: nn.Module) -> dict[str, Tensor]:
    """Two numbers per first-layer filter that tell a learned filter from a random one.

    * ``grey``: the share of the filter's energy (sum of squared weights) that lies along
      R = G = B, i.e. that responds to brightness, not colour; the rest responds to colour
      differences. For random weights it is about 1/3; a learned filter is either mostly
      grey (an edge detector) or mostly colour (a colour-opponent blob).
    * ``smooth``: the share of the energy that a constant plus a linear ramp in x and y
      explains, colour plane by colour plane: a uniform blob or a soft edge is all smooth,
      noise is not. For random k x k weights it is about 3 / k^2 (1/3 for 3 x 3).

    Also ``norm``, the size of every filter (a filter of norm ~0 is unused).
    """
    weight = first_conv(model).weight.detach().double().cpu()  # (C_out, 3, k, k)
    energy = weight.pow(2).sum((1, 2, 3)).clamp_min(1e-300)
    grey = 3 * weight.mean(1).pow(2).sum((1, 2)) / energy
    kh, kw = weight.shape[-2:]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, kh, dtype=torch.float64),
                            torch.linspace(-1, 1, kw, dtype=torch.float64), indexing="ij")
    basis, _ = torch.linalg.qr(torch.stack([torch.ones_like(xs), xs, ys]).flatten(1).T)  # (k*k, 3) orthonormal
    smooth = (weight.flatten(2) @ basis).pow(2).sum((1, 2)) / energy
    return {"grey": grey.float(), "smooth": smooth.float(), "norm": energy.sqrt().float()}


def stage_statistics(model: nn.Module, photo="cat", size: int | None = None) -> list[dict]:
    """One row per stage: name, stride, shape, mean, std, the fraction of exact zeros
    (sparsity after a ReLU), and the fraction of negative values (SiLU/GELU models have some)."""
    model.eval()
    x, _ = as_input(model, photo, size)
    with torch.no_grad():
        features = model.forward_stages(x.to(_device(model)))
    rows = []
    for info, feature in zip(model.feature_info, features):
        f = feature.float()
        rows.append(dict(
            name=info.name, stride=info.stride, shape=tuple(feature.shape[1:]),
            mean=float(f.mean()), std=float(f.std()), zeros=float((f == 0).float().mean()),
            negative=float((f < 0).float().mean()), max=float(f.max()),
        ))
    return rows


def compare_stages(models, photo="cat", size: int | None = None, reduce: str = "mean") -> "Figure":
    """Rows: backbones; columns: the photograph, then every stage's map reduced over the
    channels, bilinearly upsampled onto the photograph (one colour scale per panel).

    ``reduce="mean"`` draws the mean over the channels (signed: red positive, blue
    negative); ``reduce="norm"`` the length of each position's feature vector (how strongly
    the stage responds there, whatever the channel: never negative, so a sequential colour
    map that starts at zero).

    ``models`` is a list of names or models, or a ``{label: model}`` dict. Every model sees
    the same photograph, normalised its own way, at ``size`` (default: its own input size).

        >>> fig = compare_stages(["resnet50", "convnext_tiny", "vit_b_16"], "astronaut")  # doctest: +SKIP
    """
    if reduce not in ("mean", "norm"):
        raise ValueError(f"reduce must be 'mean' or 'norm', got {reduce!r}")
    models = as_model_dict(models)
    stages = max(len(m.feature_info) for m in models.values())
    fig, axes = new_figure(len(models), stages + 1, cell=1.8)
    for row, (label, model) in enumerate(models.items()):
        x, image = as_input(model, photo, size)
        with torch.no_grad():
            features = [f.cpu() for f in model.forward_stages(x.to(_device(model)))]
        show_image(axes[row, 0], image)
        axes[row, 0].set_title(f"{label}\ninput {tuple(x.shape[-2:])}", fontsize=9)
        for col in range(stages):
            ax = axes[row, col + 1]
            if col >= len(features):
                ax.set_axis_off()
                continue
            info, feature = model.feature_info[col], features[col][0]
            c, h, w = feature.shape
            reduced = feature.float().mean(0) if reduce == "mean" else feature.float().norm(dim=0)
            show_overlay(ax, image, reduced, signed=reduce == "mean")
            ax.set_title(f"{info.name}: {c}x{h}x{w}\nstride {info.stride}", fontsize=9)
    if reduce == "mean":
        add_colorbar(fig, axes, "mean over channels / its\n99th pct of |map| (per panel)", signed=True)
    else:
        add_colorbar(fig, axes, "feature-vector length / its\n99th percentile (per panel)", signed=False)
    return fig


# --- the patches that excite a channel most (Zeiler & Fergus 2014) ------------------------


@dataclass(frozen=True)
class Patch:
    """What one unit sees: its receptive field cut out of a picture (clipped to the picture)."""

    picture: int  # index into the pictures given to strongest_units
    unit: tuple[int, int]  # (row, column) of the unit in its feature map
    value: float  # the channel's activation there
    pixels: Tensor  # (3, h, w) in [0, 1]


def crop_field(picture: Tensor, field: "ReceptiveField", i: int, j: int) -> Tensor:
    """The pixels of ``picture`` (3, H, W) that unit (i, j) of a map with receptive field ``field``
    sees, clipped to the picture: the part of the field past the border is the network's zero
    padding, not image content. Near the border the patch is therefore smaller than the field."""
    top, left, bottom, right = field.region(i, j)  # inclusive, may reach past the border
    height, width = picture.shape[-2:]
    return picture[..., max(top, 0) : min(bottom, height - 1) + 1, max(left, 0) : min(right, width - 1) + 1]


@dataclass(frozen=True)
class UnitBank:
    """For one layer and every picture: each channel's strongest unit and its activation.

    Built by :func:`strongest_units`; :meth:`top_patches` turns it into image patches."""

    layer: str
    values: Tensor  # (P, C): the largest activation of each channel in each picture
    units: Tensor  # (P, C, 2): where it is, (row, column) in that picture's map
    fields: tuple  # P ReceptiveFields: TF "SAME" padding makes the geometry depend on the size

    def responsive_channels(self) -> list[int]:
        """The channels that are positive somewhere in the pictures (after a ReLU, the others are
        zero on every picture: nothing to show)."""
        return (self.values.amax(0) > 0).nonzero().flatten().tolist()

    def sample_channels(self, count: int, seed: int = 0) -> list[int]:
        """``count`` responsive channels drawn at random with ``seed``: a stated rule picks the channels
        to show, not our eyes (Zeiler & Fergus 2014, figure 2, show a random subset too)."""
        channels = self.responsive_channels()
        order = torch.randperm(len(channels), generator=torch.Generator().manual_seed(seed))
        return [channels[k] for k in order[:count].tolist()]

    def top_patches(self, channel: int, pictures: Sequence[Tensor], count: int = 6) -> list[Patch]:
        """The ``count`` pictures in which ``channel`` fires most, strongest first, each cut down to
        the receptive field of its strongest unit (at most one patch per picture)."""
        if not 0 <= channel < self.values.shape[1]:
            raise ValueError(f"{self.layer!r} has {self.values.shape[1]} channels; channel {channel} does not exist")
        if len(pictures) != len(self.values):
            raise ValueError(f"the bank was built on {len(self.values)} pictures, got {len(pictures)}")
        patches = []
        for index in self.values[:, channel].argsort(descending=True)[:count].tolist():
            i, j = self.units[index, channel].tolist()
            pixels = crop_field(pictures[index], self.fields[index], i, j)
            patches.append(Patch(index, (i, j), float(self.values[index, channel]), pixels))
        return patches


@torch.no_grad()
def strongest_units(model: nn.Module, pictures: Sequence[Tensor], layers: Sequence[str]) -> dict[str, UnitBank]:
    """Zeiler & Fergus (2014), section 2.1, on a bank of pictures: run each picture once and keep,
    for every channel of every layer in ``layers``, its strongest unit and where it is.

    ``pictures`` are (3, H, W) tensors in [0, 1], of any sizes (a photograph at several scales
    lets a deep unit's field fit an object); they are normalised with the model's mean and std.
    Every unit of every map is a candidate patch, so a few pictures give many thousands.
    """
    from minibones.viz.receptive_field import receptive_fields

    model.eval()
    layers = list(layers)
    config = getattr(model, "config", None)
    mean = torch.tensor(getattr(config, "mean", (0.485, 0.456, 0.406))).view(3, 1, 1)
    std = torch.tensor(getattr(config, "std", (0.229, 0.224, 0.225))).view(3, 1, 1)
    device = _device(model)
    geometry: dict[tuple[int, int], dict] = {}
    found = {layer: ([], [], []) for layer in layers}
    for picture in pictures:
        if picture.ndim != 3 or picture.shape[0] != 3 or not picture.is_floating_point():
            raise ValueError(f"expected (3, H, W) float pictures in [0, 1], got {picture.dtype} {tuple(picture.shape)}")
        size = tuple(picture.shape[-2:])
        if size not in geometry:
            geometry[size] = {field.name: field for field in receptive_fields(model, size, layers=layers)}
        x = ((picture - mean) / std)[None].to(device)
        maps = layer_outputs(model, x, layers)
        for layer in layers:
            fmap = maps[layer][0].float().cpu()  # (C, h, w)
            if fmap.ndim != 3:
                raise ValueError(f"{layer!r} gives a {tuple(maps[layer].shape)} tensor, not a (B, C, H, W) map")
            values, index = fmap.flatten(1).max(1)  # (C,): the strongest unit of each channel
            width = fmap.shape[-1]
            found[layer][0].append(values)
            found[layer][1].append(torch.stack([index // width, index % width], 1))
            found[layer][2].append(geometry[size][layer])
    return {layer: UnitBank(layer, torch.stack(v), torch.stack(u), tuple(f)) for layer, (v, u, f) in found.items()}


def plot_top_patches(
    rows: Sequence[tuple[str, Sequence[Patch]]], labels: Sequence[str] | None = None, title: str = "",
    blocks: int = 2, cell: float = 0.95,
) -> "Figure":
    """One row of patches per ``(row label, patches)``, strongest first; ``blocks`` rows side by side.

    Every patch is drawn in its own square panel at its own size (a 7-pixel patch and a
    300-pixel one fill the same panel: read the sizes from the receptive field, not from
    the picture). ``labels`` name the pictures (one per picture of the bank)."""
    count = max(len(patches) for _, patches in rows)
    lines = -(-len(rows) // blocks)
    fig, axes = new_figure(lines, blocks * count, cell=cell)
    for ax in axes.flat:
        ax.set_axis_off()
    for k, (row_label, patches) in enumerate(rows):
        line, block = k % lines, k // lines
        for n, patch in enumerate(patches):
            ax = axes[line, block * count + n]
            ax.set_axis_on()
            ax.imshow(patch.pixels.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if labels is not None:
                ax.set_title(labels[patch.picture], fontsize=9, pad=2)
        axes[line, block * count].set_ylabel(row_label, fontsize=9, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _recorder(store: dict, name: str, detach: bool):
    def hook(module, inputs, output):
        tensor = output if isinstance(output, Tensor) else next(t for t in output if isinstance(t, Tensor))
        store[name] = tensor.detach() if detach else tensor

    return hook


def input_shapes(model: nn.Module, names: Sequence[str], x: Tensor) -> dict[str, tuple[int, ...]]:
    """The shape of the input each named module receives during one forward pass of ``x``
    (pre-hooks, always removed); on the meta device it costs nothing. Why: a block's cost
    depends on the size of the map it reads, which only the forward pass knows."""
    shapes = {}

    def record(name):
        def hook(module, args):
            shapes.setdefault(name, tuple(args[0].shape))  # returns None: the input is left as it is

        return hook

    hooks = [model.get_submodule(name).register_forward_pre_hook(record(name)) for name in names]
    try:
        with mode(model, False), torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


__all__ = [
    "Patch", "UnitBank", "capture", "compare_stages", "crop_field", "feature_grid", "first_conv",
    "first_layer_filters", "first_layer_statistics", "input_shapes", "layer_outputs", "plot_top_patches",
    "resolve_layer", "stage_or_layer_output", "stage_statistics", "strongest_channels", "strongest_units",
]
