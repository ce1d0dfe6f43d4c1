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
from minibones.course.exercises.answers import as_function, as_number, positive_int, verdict
from minibones.models.vit import VARIANTS


def _vit_on_meta(model: str, image_size: int | None = None):
    if model not in VARIANTS:
        raise ValueError(f"model must be one of the ViTs {sorted(VARIANTS)}, got {model!r}")
    if image_size is not None:
        positive_int(image_size, "image_size (pixels)")
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


# --- the code exercise: a ViT's cost, written by the learner --------------------------------

#: (image_size, patch_size, dim, depth, heads, mlp_dim): the configurations a learner's cost function
#: is tried on: vit_tiny_cifar first (its depth, heads and 2 all differ, so a wrong factor is named
#: unambiguously), ViT-B/16 at 224 and 384, ViT-L/32 and a small model for 16 x 16 digits.
COST_CASES = [
    (32, 4, 128, 8, 4, 512),
    (224, 16, 768, 12, 12, 3072),
    (384, 16, 768, 12, 12, 3072),
    (224, 32, 1024, 24, 16, 4096),
    (16, 4, 32, 2, 2, 64),
]


def measured_encoder_cost(image_size: int, patch_size: int, dim: int, depth: int, heads: int,
                          mlp_dim: int) -> tuple[int, int, int]:
    """(tokens, linear_macs, attention_macs) of the encoder blocks of a ViT built by the library,
    for one ``image_size`` x ``image_size`` image, counted by PyTorch's FLOP counter on the meta device.

    ``linear_macs``: every ``nn.Linear`` of the blocks (qkv, proj, fc1, fc2), which the counter sees as
    ``addmm``. ``attention_macs``: the products q k^T and A v, run as batched matmuls (``bmm``) through
    :func:`minibones.compare.countable_attention`. Halved: the course counts multiply-adds.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from minibones.backbone import ModelConfig
    from minibones.compare import countable_attention
    from minibones.models.vit import VisionTransformer

    config = ModelConfig(name="vit_exercise", reference="none", paper="", input_size=(3, image_size, image_size))
    with torch.device("meta"):
        net = VisionTransformer(patch_size, depth, heads, dim, mlp_dim, config, num_classes=10, num_stages=1)
    tokens = _tokens(net, image_size)
    with torch.no_grad(), countable_attention(), FlopCounterMode(display=False) as counter:
        net.blocks(torch.zeros(1, tokens, dim, device="meta"))
    counts = {str(op).split(".")[-1]: n for op, n in counter.get_flop_counts()["Global"].items()}
    return tokens, counts.get("addmm", 0) // 2, counts.get("bmm", 0) // 2


def _cost_mistake(answer: tuple, truth: tuple, case: tuple) -> str:
    """The hint for a wrong (tokens, linear_macs, attention_macs), naming the usual mistakes."""
    image_size, patch_size, dim, depth, heads, mlp_dim = case
    tokens, linear, attention = truth
    got_tokens, got_linear, got_attention = answer
    where = f"for image_size={image_size}, patch_size={patch_size}, dim={dim}, depth={depth}, heads={heads}, " \
            f"mlp_dim={mlp_dim}"
    if got_tokens != tokens:
        if got_tokens == tokens - 1:
            return f"{where} you count {got_tokens} tokens: the class token is missing"
        return f"{where} you count {got_tokens} tokens, expected {tokens}: (image_size / patch_size)^2 patches, " \
               "plus the class token"
    if got_linear != linear:
        if got_linear == 2 * linear:
            return f"{where} your linear_macs is twice the truth: count multiply-adds, not FLOPs (2 per multiply-add)"
        if got_linear == linear // depth:
            return f"{where} your linear_macs is one block's: multiply by the depth"
        if got_linear == depth * tokens * 4 * dim * dim:
            return f"{where} your linear_macs counts the attention's qkv and proj only: the MLP's fc1 and fc2 " \
                   "cost tokens x dim x mlp_dim each"
        return f"{where} linear_macs is {got_linear:,}, expected another number: per token and block, qkv costs " \
               "dim x 3 dim, proj dim x dim, fc1 dim x mlp_dim and fc2 mlp_dim x dim multiply-adds"
    if got_attention == 2 * attention:
        return f"{where} your attention_macs is twice the truth: count multiply-adds, not FLOPs"
    if got_attention == attention // heads:
        return f"{where} your attention_macs counts one head: every head has its own A, each costing " \
               "tokens^2 x head width"
    if got_attention == attention // 2:
        return f"{where} your attention_macs counts one of the two products: q k^T gives A, and A v costs as much again"
    if got_attention == attention // depth:
        return f"{where} your attention_macs is one block's: multiply by the depth"
    return f"{where} attention_macs is {got_attention:,}, expected another number: per block and head, q k^T and " \
           "A v each cost tokens x tokens x (dim / heads) multiply-adds"


def check_vit_cost(function) -> None:
    """Does ``function(image_size, patch_size, dim, depth, heads, mlp_dim)`` return
    ``(tokens, linear_macs, attention_macs)`` for the encoder blocks of that ViT and one square image?

    - ``tokens``: the length of the sequence, class token included;
    - ``linear_macs``: multiply-adds of the blocks' linear layers (qkv, proj, fc1, fc2), over all blocks;
    - ``attention_macs``: multiply-adds of the products q k^T and A v, over all heads and blocks.

    The truth is counted on the library's ``VisionTransformer`` (:func:`measured_encoder_cost`) for
    each configuration of ``COST_CASES``; the first wrong one is named with what is wrong.
    """
    as_function(function, "check_vit_cost(vit_cost)")
    for case in COST_CASES:
        truth = measured_encoder_cost(*case)
        try:
            answer = function(*case)
        except Exception as error:  # the learner's code: report, do not crash the notebook
            return verdict(False, f"your function raised {type(error).__name__} ({error}) for the arguments {case}")
        if not isinstance(answer, (tuple, list)) or len(answer) != 3:
            return verdict(False, f"return three numbers (tokens, linear_macs, attention_macs), got {answer!r}")
        try:
            answer = tuple(as_number(value, "each of the three numbers") for value in answer)
            answer = tuple(int(value) if value.is_integer() else value for value in answer)
        except ValueError as error:
            return verdict(False, str(error))
        if answer != truth:
            return verdict(False, _cost_mistake(answer, truth, case))
    return verdict(True, "")
