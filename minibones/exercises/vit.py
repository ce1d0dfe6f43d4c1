"""Checkers for the exercises of notebook 06 (ViT: patches as tokens, attention, class token,
position embeddings).

Every truth is read from the library's own model, built on the meta device (tensors with
shapes and no data, so that even ViT-H builds in a moment): the patch grid from
``VisionTransformer.patch_grid``, heads and widths from the built attention modules, and
parameters counted on the built modules.
"""

from __future__ import annotations

import torch

import minibones
from minibones.backbone import count_parameters
from minibones.exercises import as_number, verdict
from minibones.models.vit import VARIANTS


def _vit_on_meta(model: str, image_size: int | None = None):
    if model not in VARIANTS:
        raise ValueError(f"model must be one of the ViTs {sorted(VARIANTS)}, got {model!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive whole number of pixels, got {image_size!r}")
    with torch.device("meta"):
        return minibones.create_model(model)


def _tokens(net, image_size: int) -> int:
    """1 + N: the class token and one token per patch (patch_grid raises a clear error for a bad size)."""
    height, width = net.patch_grid(torch.empty(1, 3, image_size, image_size, device="meta"))
    return 1 + height * width


def check_num_tokens(answer: int, model: str = "vit_b_16", image_size: int = 384) -> None:
    """Is ``answer`` the length of the token sequence that ``model``'s encoder blocks process
    for one ``image_size`` x ``image_size`` image (every patch, and the class token)?"""
    net = _vit_on_meta(model, image_size)
    truth = _tokens(net, image_size)
    answer = as_number(answer, "the number of tokens")
    if answer == truth - 1:
        return verdict(False, "that is the number of patches; one more token is added in front of them")
    return verdict(answer == truth, f"{model} cuts the image into {net.patch_size} x {net.patch_size} patches: "
                   "count the patches along the height and the width")


def check_patch_embed_parameters(answer: int, model: str = "vit_b_16") -> None:
    """Is ``answer`` the number of parameters of ``model``'s patch embedding (the matrix E of
    equation 1, written as a strided conv)? Counted on the built ``patch_embed``."""
    net = _vit_on_meta(model)
    truth = count_parameters(net.patch_embed)
    return verdict(as_number(answer, "the number of parameters") == truth,
                   "a Conv2d(3, D, kernel_size=P, stride=P) has 3 x P x P x D weights and D biases; "
                   "read P and D from the VARIANTS table (or from the model)")


def check_attention_weights(answer: int, model: str = "vit_b_16", image_size: int = 224) -> None:
    """Is ``answer`` the number of attention weights that ONE encoder block of ``model`` computes
    for one ``image_size`` image, over all its heads (the size of A in equation 6)?

    This is the number that grows with the square of the number of tokens."""
    net = _vit_on_meta(model, image_size)
    tokens = _tokens(net, image_size)
    heads = net.blocks[0].attn.num_heads
    truth = heads * tokens**2
    answer = as_number(answer, "the number of attention weights")
    if answer == tokens**2:
        return verdict(False, "that is one head: every head has its own attention matrix")
    if answer == heads * (tokens - 1) ** 2:
        return verdict(False, "the class token attends and is attended to like every patch")
    return verdict(answer == truth, "each head has one weight per (query token, key token) pair: "
                   "(1 + number of patches) squared, times the number of heads")


def check_block_parameters(answer: int, model: str = "vit_b_16") -> None:
    """Is ``answer`` the number of parameters of one encoder block of ``model`` (equations 2 and 3:
    two LayerNorms, the attention's packed QKV and output projections, the two-layer MLP)?

    Counted on the built ``blocks[0]``; all blocks of a ViT are the same."""
    net = _vit_on_meta(model)
    truth = count_parameters(net.blocks[0])
    return verdict(as_number(answer, "the number of parameters") == truth,
                   "with width D and MLP size M: qkv is Linear(D, 3D), proj Linear(D, D), the MLP Linear(D, M) "
                   "then Linear(M, D), every Linear with a bias, and each LayerNorm has 2D parameters")
