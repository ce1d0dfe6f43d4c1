"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization"), written once for every backbone and its reference.

The map of a class at a layer: the mean gradient of the class's logit over the layer's
positions weights each of its channels (alpha_k, eq. 1), the weighted channels are summed
and rectified (eq. 2), and the map is upsampled bilinearly to the input.
:func:`minibones.viz.attribute` draws it (method ``"gradcam"``); :mod:`minibones.parity`
compares ours with the reference's, layer by layer.

ViT's blocks output tokens (B, 1 + N, D), not maps: the patch tokens are laid on their grid
by the ViT's own ``tokens_to_grid`` before the weighting (:func:`token_grid`). The last
block's patch tokens never reach the class token, which is all the classifier reads, so
their gradient is exactly zero: :func:`grad_cam` says whether the logit depends on the
layer at all, and :func:`gradcam_layer` reads the block before.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minibones.viz.activations import resolve_layer
from minibones.viz.attention import is_vit


def token_grid(model: nn.Module, x: Tensor) -> Callable[[Tensor], Tensor] | None:
    """For a ViT, its ``tokens_to_grid`` at the patch grid of ``x``: it lays any block's tokens
    (B, 1 + N, D), the model's own or those of its reference, on their (B, D, h, w) map.
    ``None`` for a model whose stages already are maps."""
    if not is_vit(model):
        return None
    grid = model.patch_grid(x)
    return lambda tokens: model.tokens_to_grid(tokens, grid)


def grad_cam(
    model: nn.Module, layer: nn.Module, x: Tensor, target: int, to_grid: Callable[[Tensor], Tensor] | None = None
) -> tuple[Tensor, bool]:
    """The Grad-CAM of class ``target`` at ``layer``, upsampled to the input: (B, H, W), and
    whether the logit depends on the layer at all (a gradient that is not zero everywhere).

    ``to_grid`` turns the layer's output into a (B, C, h, w) map (:func:`token_grid` for
    tokens). The network goes on with a copy of the layer's output, so an in-place operation
    after the layer cannot change the activations read here (captum's ``LayerGradCam``
    does the same).
    """
    captured = {}

    def keep(module, inputs, output):
        captured["output"] = output
        return output.clone()

    hook = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x)
            (gradient,) = torch.autograd.grad(logits[:, target].sum(), captured["output"])
    finally:
        hook.remove()
    activations = captured["output"].detach()
    if to_grid is not None:
        activations, gradient = to_grid(activations), to_grid(gradient)
    if activations.ndim != 4:
        raise ValueError(f"Grad-CAM needs a (B, C, H, W) map, and this layer gives {tuple(activations.shape)}: "
                         "choose a stage or a convolution")
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): alpha_k, how much each channel matters
    cam = F.relu((weights * activations).sum(1, keepdim=True))  # (B, 1, h, w)
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return cam[:, 0], bool(gradient.abs().sum() > 0)


def gradcam_layer(model: nn.Module, layer: str | int | None) -> tuple[str, str | None]:
    """The module path Grad-CAM reads for ``layer`` (a stage name, a module path, or a stage
    index; default: the last stage), and a note when it is not the one asked for. For ViT, not
    the last block: its patch tokens feed nothing the classifier reads (only the class token
    does), so their gradient is exactly zero."""
    if layer is None:
        layer = -1
    if isinstance(layer, int):  # a stage index: the same depth on every backbone of a grid
        path = model.feature_info[layer].module
    else:
        path = resolve_layer(model, layer)
    if is_vit(model):
        last = f"blocks.{len(model.blocks) - 1}"
        if path == last:
            note = "the last block's patch tokens get no gradient: Grad-CAM reads the block before"
            return f"blocks.{len(model.blocks) - 2}", note
    return path, None
