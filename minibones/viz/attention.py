"""ViT's attention, drawn: where the class token looks (Dosovitskiy et al. 2021, figure 6) and
how attention flows through all the blocks (attention rollout, Abnar & Zuidema 2020).

Both read the attention weights of the ViT's explicit attention path
(``forward_attention``), which computes softmax(QK^T / sqrt(D_h)) one operation at a time;
the fast path hands them to a fused kernel that never stores them. Neither map is about a
class: they say where information flows, not what it is evidence for
(:mod:`~minibones.viz.attribution` lists them as the methods ``attention`` and
``attention_rollout``, next to the class-specific ones).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minibones.viz.display import add_colorbar, as_input, model_label, new_figure, show_image, show_overlay

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def is_vit(model: nn.Module) -> bool:
    """A token model with an explicit attention path (``minibones.models.vit``)."""
    return hasattr(model, "forward_attention") and hasattr(model, "patch_grid")


def attention_maps(model: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The logits and every block's attention weights (B, heads, 1 + N, 1 + N), from ViT's
    explicit attention path (``forward_attention``); token 0 is the class token."""
    if not is_vit(model):
        raise ValueError(f"{model_label(model)} has no attention: attention maps need a ViT (minibones.models.vit)")
    model.eval()
    with torch.no_grad():
        return model.forward_attention(x)


def attention_rollout(attentions: Sequence[Tensor], head_fusion: str = "mean", residual: bool = True) -> Tensor:
    """Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", section 3.

    Attention weights alone ignore the residual connections, through which most of a
    token's information flows. Rollout models them: per block, ``A' = 0.5 A + 0.5 I``
    (heads fused by their mean, or ``"max"``/``"min"``), rows renormalised, and the blocks
    multiplied from the first to the last: ``R = A'_L ... A'_1``. Row 0 of ``R`` says how
    much each input token flows into the class token. Returns (B, 1 + N, 1 + N).
    """
    rollout = None
    for weights in attentions:
        fused = {"mean": weights.mean(1), "max": weights.amax(1), "min": weights.amin(1)}.get(head_fusion)
        if fused is None:
            raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
        if residual:
            eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
            fused = 0.5 * fused + 0.5 * eye
        fused = fused / fused.sum(-1, keepdim=True)
        rollout = fused if rollout is None else fused @ rollout
    if rollout is None:
        raise ValueError("no attention weights given")
    return rollout


def plot_attention(model: nn.Module, photo="cat", size: int | None = None, heads: int = 4) -> "Figure":
    """ViT: the class token's attention to the patches in the last block, head by head (first
    ``heads`` heads), their mean, and the attention rollout through all blocks."""
    x, image = as_input(model, photo, size)
    _, attentions = attention_maps(model, x)
    last = attentions[-1][0]  # (heads, 1 + N, 1 + N)
    panels = [(f"head {h}", last[h, 0]) for h in range(min(heads, last.shape[0]))]
    panels += [("mean over heads", last.mean(0)[0]), ("rollout, all blocks", attention_rollout(attentions)[0, 0])]
    fig, axes = new_figure(1, len(panels) + 1, cell=2.0)
    show_image(axes[0, 0], image, f"{model_label(model)}\nlast block, class token")
    for ax, (title, row) in zip(axes[0, 1:], panels):
        show_overlay(ax, image, patch_map(model, x, row), title, signed=False)
    add_colorbar(fig, axes, "attention / its 99th percentile", signed=False)
    return fig


def patch_map(model: nn.Module, x: Tensor, row: Tensor) -> Tensor:
    """A row over (1 + N) tokens -> the (H, W) map of its patch entries (laid on their grid by
    the ViT's own ``tokens_to_grid``), each value spread over its patch's pixels: a token *is*
    its patch, so the map is drawn in blocks, not smoothed into a finer place than it has."""
    grid = model.tokens_to_grid(row.reshape(1, -1, 1), model.patch_grid(x)).float()  # (1, 1, h, w)
    return F.interpolate(grid, size=tuple(x.shape[-2:]), mode="nearest")[0, 0]
