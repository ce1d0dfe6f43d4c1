"""Looking at activations: what each stage of a backbone computes on a photograph.

Zeiler & Fergus (ECCV 2014) showed that early layers respond to edges, colours and
textures, later ones to parts and whole objects. The tools here let a learner see
that on any backbone of the library:

* :func:`capture` - forward hooks on stages or named layers, as a context manager that
  always removes them (a forgotten hook keeps firing, and keeps memory alive);
* :func:`feature_grid` - the channels of one layer, strongest first;
* :func:`first_layer_filters` - the first convolution's kernels drawn as RGB images;
* :func:`stage_statistics` - shape, stride, mean, spread and sparsity of every stage;
* :func:`compare_stages` - the same photograph through several backbones, stage by stage.

Layers are named either by a stage name from ``model.feature_info`` (``"conv3_x"``)
or by a module path from ``model.named_modules()`` (``"stages.conv3_x.0.relu2"``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from minibones.viz.display import (
    FEATURE_CMAP, add_colorbar, as_input, as_model_dict, grid_shape, model_label, new_figure, show_image, show_overlay,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
        feature = stage_or_layer_output(model, x, layer)[0]
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


def first_layer_filters(model: nn.Module, max_filters: int = 64) -> "Figure":
    """The first convolution's kernels as small RGB images (Krizhevsky et al. 2012, figure 3).

    One scale for all: a weight of 0 is mid-grey, the largest ``|weight|`` of the layer is
    fully saturated. Trained networks show oriented edges and colour blobs here; a random
    initialisation shows noise."""
    conv = first_conv(model)
    weight = conv.weight.detach().float().cpu()[:max_filters]  # (C_out, 3, k, k)
    scale = weight.abs().max().clamp_min(1e-12)
    images = (0.5 + 0.5 * weight / scale).permute(0, 2, 3, 1).numpy()
    rows, cols = grid_shape(len(images), 8)
    fig, axes = new_figure(rows, cols, cell=0.9)
    for k, ax in enumerate(axes.flat):
        if k < len(images):
            ax.imshow(images[k], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(k < len(images))
    k = conv.kernel_size
    title = f"{model_label(model)}: {len(images)} of {conv.out_channels} first-layer filters ({k[0]}x{k[1]}x3)"
    fig.suptitle(title, fontsize=9)
    return fig


def stage_statistics(model: nn.Module, photo="cat", size: int | None = None) -> list[dict]:
    """One row per stage: name, stride, shape, mean, std, the fraction of exact zeros
    (sparsity after a ReLU), and the fraction of negative values (SiLU/GELU models have some)."""
    model.eval()
    x, _ = as_input(model, photo, size)
    with torch.no_grad():
        features = model.forward_stages(x)
    rows = []
    for info, feature in zip(model.feature_info, features):
        f = feature.float()
        rows.append(dict(
            name=info.name, stride=info.stride, shape=tuple(feature.shape[1:]),
            mean=float(f.mean()), std=float(f.std()), zeros=float((f == 0).float().mean()),
            negative=float((f < 0).float().mean()), max=float(f.max()),
        ))
    return rows


def compare_stages(models, photo="cat", size: int | None = None) -> "Figure":
    """Rows: backbones; columns: the photograph, then every stage's mean activation over
    the channels, bilinearly upsampled onto the photograph (one colour scale per panel).

    ``models`` is a list of names or models, or a ``{label: model}`` dict. Every model sees
    the same photograph, normalised its own way, at ``size`` (default: its own input size).

        >>> fig = compare_stages(["resnet50", "convnext_tiny", "vit_b_16"], "astronaut")  # doctest: +SKIP
    """
    models = as_model_dict(models)
    stages = max(len(m.feature_info) for m in models.values())
    fig, axes = new_figure(len(models), stages + 1, cell=1.8)
    for row, (label, model) in enumerate(models.items()):
        x, image = as_input(model, photo, size)
        with torch.no_grad():
            features = model.forward_stages(x)
        show_image(axes[row, 0], image, f"{label}\ninput {tuple(x.shape[-2:])}")
        for col in range(stages):
            ax = axes[row, col + 1]
            if col >= len(features):
                ax.set_axis_off()
                continue
            info, feature = model.feature_info[col], features[col][0]
            c, h, w = feature.shape
            show_overlay(ax, image, feature.float().mean(0), f"{info.name}: {c}x{h}x{w}\nstride {info.stride}")
    add_colorbar(fig, axes, "mean activation over channels (normalised)")
    return fig


def _recorder(store: dict, name: str, detach: bool):
    def hook(module, inputs, output):
        tensor = output if isinstance(output, Tensor) else next(t for t in output if isinstance(t, Tensor))
        store[name] = tensor.detach() if detach else tensor

    return hook


__all__ = [
    "capture", "compare_stages", "feature_grid", "first_conv", "first_layer_filters", "layer_outputs",
    "resolve_layer", "stage_or_layer_output", "stage_statistics", "strongest_channels",
]
