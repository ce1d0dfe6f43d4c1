"""Vision Transformer: An Image is Worth 16x16 Words (Dosovitskiy et al., ICLR 2021).

Cut the image into P x P patches, treat each patch as a word, and run the
standard Transformer encoder of NLP on the sequence, with almost no image-specific
bias: no convolutions after the first projection, no pooling pyramid. With enough
pre-training data this matches the best CNNs (the paper's section 4).

Read this file next to the paper (section 3.1 and appendix A):
  * ``PatchEmbed``               - eq. 1: flatten each patch and project it with E;
  * ``cls_token``, ``pos_embed`` - eq. 1: a learnable [class] token in front, learnable
                                   1D position embeddings added;
  * ``MultiHeadSelfAttention``   - eqs. 5-8: Q, K and V, softmax(QK^T / sqrt(D_h)) V, heads merged;
  * ``MLP``                      - two linear layers with a GELU in between;
  * ``EncoderBlock``             - eqs. 2 and 3: pre-norm attention and MLP, each with a residual;
  * ``VisionTransformer``        - eq. 4: the final LayerNorm; the class token feeds the classifier;
  * the variants at the bottom: table 1 (Base, Large, Huge) and a small model for 32x32 images.

Differences from torchvision, which this file otherwise reproduces weight for weight:
  * torchvision asserts one input size. Here any height and width that are multiples of
    the patch size work: the position embeddings are interpolated to the new grid, as the
    paper does for fine-tuning at a higher resolution (section 3.2).
  * torchvision's ``nn.MultiheadAttention`` hides Q, K and V behind one fused call. Here
    they are computed in the open; the fast path hands them to
    ``F.scaled_dot_product_attention``, and ``forward_attention`` runs the explicit
    softmax(QK^T / sqrt(d)) V instead so that the attention weights can be looked at.
The paper's classification head has a hidden layer during pre-training (section 3.1);
torchvision's variants, like this file, use a single linear layer.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minibones.backbone import CIFAR_MEAN, CIFAR_STD, Backbone, ModelConfig, StageInfo, classifier
from minibones.porting import convert_state_dict
from minibones.registry import register_model

PAPER = (
    "Dosovitskiy, Beyer, Kolesnikov, Weissenborn, Zhai, Unterthiner, Dehghani, Minderer, Heigold, Gelly, "
    "Uszkoreit, Houlsby. An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale. "
    "ICLR 2021. arXiv:2010.11929"
)

LN_EPS = 1e-6  # every LayerNorm of ViT (torchvision and the original JAX code), not PyTorch's default 1e-5


class PatchEmbed(nn.Module):
    """Eq. 1: split the image into N = HW/P^2 patches, flatten each to P^2*C numbers and
    multiply by a matrix E (P^2*C x D).

    A conv whose kernel and stride are both P computes exactly that: one output pixel
    per patch, each a linear function of that patch's pixels only.
    """

    def __init__(self, patch_size: int, dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # (B, D, H/P, W/P): one D-vector per patch
        return x.flatten(2).transpose(1, 2)  # (B, N, D): the patches as a sequence of tokens, row by row


def resample_position_embedding(pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """Section 3.2: 2D-interpolate the position embeddings "according to their location in
    the original image", so that a model trained on one grid of patches runs on another.

    The class token's embedding has no location: it is kept apart and unchanged. The patch
    embeddings are laid out on their grid, resized with bicubic interpolation (antialiased,
    so that shrinking the grid averages neighbours instead of skipping them; the same rule as
    timm's ``resample_abs_pos_embed``), and flattened back in the same row-major order.
    """
    dim = pos_embed.shape[-1]
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    patch_pos = patch_pos.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)  # (1, D, h, w)
    patch_pos = F.interpolate(patch_pos.float(), size=new_grid, mode="bicubic", align_corners=False, antialias=True)
    patch_pos = patch_pos.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([cls_pos, patch_pos], dim=1)  # (1, 1 + h' * w', D)


class MultiHeadSelfAttention(nn.Module):
    """Appendix A, eqs. 5-8. For each of k heads, with D_h = D / k:

        [q, k, v] = z U_qkv                    (5)  one linear layer, q, k, v packed in that order
        A = softmax(q k^T / sqrt(D_h))         (6)  row i: how much token i reads from every token
        SA(z) = A v                            (7)
        MSA(z) = [SA_1(z); ...; SA_k(z)] U_msa (8)  heads concatenated, then projected

    ``forward`` is the fast path: ``F.scaled_dot_product_attention`` computes (6) and (7)
    in one fused kernel without storing A. ``forward_attention`` computes them one
    operation at a time and also returns A; both give the same output up to rounding.
    """

    def __init__(self, dim: int, num_heads: int, attention_dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"the width ({dim}) must split evenly into {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5  # 1 / sqrt(D_h)
        self.qkv = nn.Linear(dim, 3 * dim)  # U_qkv; torchvision's in_proj_weight has the same q, k, v layout
        self.softmax = nn.Softmax(dim=-1)  # used by the explicit path only (the fast path fuses it)
        self.attn_drop = nn.Dropout(attention_dropout)
        self.proj = nn.Linear(dim, dim)  # U_msa

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Eq. 5, split into heads: three (B, heads, N, D_h) tensors."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, D_h)
        return q, k, v

    def merge_heads(self, out: Tensor) -> Tensor:
        """Eq. 8: concatenate the heads, (B, heads, N, D_h) -> (B, N, D), and project."""
        batch, _, tokens, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv_heads(x)
        dropout = self.attn_drop.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # eqs. 6-7, fused
        return self.merge_heads(out)

    def forward_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The same output as ``forward``, and the attention weights A (B, heads, N, N)."""
        q, k, v = self.qkv_heads(x)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, heads, N, N)
        weights = self.softmax(scores)  # eq. 6: every row sums to 1
        out = self.attn_drop(weights) @ v  # eq. 7: (B, heads, N, D_h)
        return self.merge_heads(out), weights


class MLP(nn.Sequential):
    """Section 3.1: "The MLP contains two layers with a GELU non-linearity", D -> mlp_dim -> D."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__(
            OrderedDict(
                fc1=nn.Linear(dim, hidden_dim),
                act=nn.GELU(),
                drop1=nn.Dropout(dropout),
                fc2=nn.Linear(hidden_dim, dim),
                drop2=nn.Dropout(dropout),
            )
        )


class EncoderBlock(nn.Module):
    """Eqs. 2-3, a pre-norm Transformer layer: LayerNorm *before* each sub-layer, and the
    residual adds the un-normalised input, so a clean identity path runs from the patch
    embedding to the last block.

        z' = MSA(LN(z)) + z     (2)
        z  = MLP(LN(z')) + z'   (3)
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0, attention_dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = MultiHeadSelfAttention(dim, num_heads, attention_dropout)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = MLP(dim, mlp_dim, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))  # (2)
        return x + self.mlp(self.norm2(x))  # (3)

    def forward_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``forward`` through the explicit attention path; also returns the attention weights."""
        out, weights = self.attn.forward_attention(self.norm1(x))
        x = x + self.drop(out)
        return x + self.mlp(self.norm2(x)), weights


class ClassTokenPool(nn.Module):
    """Eq. 4: the image representation y is the class token's output, token 0."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0]  # (B, 1 + N, D) -> (B, D)


class VisionTransformer(Backbone):
    """Patch embedding, class token and position embeddings, ``depth`` encoder blocks,
    a final LayerNorm, and a linear classifier on the class token.

    ``config.input_size`` (the builders' ``image_size`` argument, 224 by default as in
    torchvision) is the size the position embeddings are stored for; other sizes work if
    they are multiples of ``patch_size``, the embeddings then being interpolated on the fly
    (see :func:`resample_position_embedding`).

    ViT has no pyramid: every block sees the same grid at stride ``patch_size``. For
    necks that want several maps, ``forward_stages`` returns the patch tokens after
    ``num_stages`` evenly spaced blocks (the last of each quarter of the depth: blocks
    2, 5, 8, 11 of ViT-B, counted from 0 as the module names are), each reshaped to a
    (B, D, H/P, W/P) grid, class token dropped, before the final LayerNorm. (For Grad-CAM,
    use an earlier stage than the last: the classifier reads only the class token, so the
    last block's patch tokens receive no gradient.)
    ``forward_features`` returns the final normalised tokens (B, 1 + N, D), class token first.
    """

    name_map = [
        (r"^conv_proj\.", "patch_embed.proj."),
        (r"^class_token$", "cls_token"),
        (r"^encoder\.pos_embedding$", "pos_embed"),
        (r"^encoder\.layers\.encoder_layer_(\d+)\.", r"blocks.\1."),
        (r"\.ln_1\.", ".norm1."),
        (r"\.ln_2\.", ".norm2."),
        (r"\.self_attention\.in_proj_weight$", ".attn.qkv.weight"),  # packed q, k, v: same layout
        (r"\.self_attention\.in_proj_bias$", ".attn.qkv.bias"),
        (r"\.self_attention\.out_proj\.", ".attn.proj."),
        (r"\.mlp\.0\.", ".mlp.fc1."),
        (r"\.mlp\.3\.", ".mlp.fc2."),
        (r"^encoder\.ln\.", "norm."),
        (r"^heads\.head\.", "head.fc."),
    ]

    def __init__(
        self,
        patch_size: int,
        depth: int,
        num_heads: int,
        dim: int,
        mlp_dim: int,
        config: ModelConfig,
        num_classes: int = 1000,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        num_stages: int = 4,
    ):
        super().__init__()
        self.config = config
        image_size = config.input_size[1]
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be a multiple of the patch size ({patch_size})")
        if not 1 <= num_stages <= depth:
            raise ValueError(f"num_stages must be between 1 and the depth ({depth}), got {num_stages}")
        self.patch_size = patch_size
        self.grid_size = (image_size // patch_size, image_size // patch_size)

        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + num_patches, dim).normal_(std=0.02))  # BERT's init
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *[EncoderBlock(dim, num_heads, mlp_dim, dropout, attention_dropout) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

        self.stage_indices = [depth * (i + 1) // num_stages - 1 for i in range(num_stages)]
        self.feature_info = [StageInfo(f"block{i}", dim, patch_size, f"blocks.{i}") for i in self.stage_indices]
        self.num_features = dim
        self.head = nn.Sequential(OrderedDict(pool=ClassTokenPool(), fc=classifier(dim, num_classes)))
        self.init_weights()

    def init_weights(self) -> None:
        """torchvision's initialisation (from the original JAX code)."""
        conv = self.patch_embed.proj
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        nn.init.trunc_normal_(conv.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(conv.bias)
        for block in self.blocks:
            nn.init.xavier_uniform_(block.attn.qkv.weight)  # over the packed (3D, D) matrix, as nn.MultiheadAttention
            nn.init.zeros_(block.attn.qkv.bias)
            nn.init.zeros_(block.attn.proj.bias)  # the weight keeps nn.Linear's default
            for linear in (block.mlp.fc1, block.mlp.fc2):
                nn.init.xavier_uniform_(linear.weight)
                nn.init.normal_(linear.bias, std=1e-6)
        if isinstance(self.head.fc, nn.Linear):  # a zero classifier: every class starts equally likely
            nn.init.zeros_(self.head.fc.weight)
            nn.init.zeros_(self.head.fc.bias)

    def no_weight_decay(self) -> tuple[str, ...]:
        """Parameters that :func:`minibones.optim.parameter_groups` does not decay: the class token
        and the position embeddings are learned inputs, not weights of a map, and decaying them
        pulls every position towards zero (timm and the DeiT recipe exempt them too)."""
        return ("cls_token", "pos_embed")

    def convert_reference(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rename through ``name_map``; position embeddings stored for another grid (a checkpoint
        trained at 384 or 518 pixels) are interpolated to this model's grid (section 3.2)."""
        converted = convert_state_dict(self, state_dict, self.name_map)
        pos_embed = converted.get("pos_embed")
        if pos_embed is not None and pos_embed.ndim == 3 and pos_embed.shape != self.pos_embed.shape:
            side = math.isqrt(pos_embed.shape[1] - 1)
            if side * side == pos_embed.shape[1] - 1 and pos_embed.shape[2] == self.pos_embed.shape[2]:
                converted["pos_embed"] = resample_position_embedding(pos_embed, (side, side), self.grid_size)
        return converted

    def patch_grid(self, x: Tensor) -> tuple[int, int]:
        """The number of patches along the height and the width, or a clear error."""
        height, width = x.shape[-2:]
        p = self.patch_size
        if height % p or width % p or height < p or width < p:
            fit = f"{max(p, height // p * p)}x{max(p, width // p * p)}"
            raise ValueError(
                f"{self.config.name} cuts images into {p}x{p} patches, so the height and width must be "
                f"multiples of {p}; got {height}x{width}. Resize or crop to a multiple, e.g. {fit} "
                f"(its native size is {self.config.input_size[1]}x{self.config.input_size[2]})."
            )
        return height // p, width // p

    def position_embedding(self, grid: tuple[int, int]) -> Tensor:
        if grid == self.grid_size:
            return self.pos_embed  # (1, 1 + N, D)
        return resample_position_embedding(self.pos_embed, self.grid_size, grid)

    def embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Eq. 1: z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos. Returns z_0 and the patch grid."""
        self.check_input(x)
        grid = self.patch_grid(x)
        x = self.patch_embed(x)  # (B, N, D)
        cls_token = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D), the same learned vector for every image
        x = torch.cat([cls_token, x], dim=1)  # (B, 1 + N, D)
        x = x + self.position_embedding(grid)
        return self.pos_drop(x), grid

    def tokens_to_grid(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """(B, 1 + N, D) tokens -> (B, D, H/P, W/P) map of the patch tokens, class token dropped."""
        return x[:, 1:].transpose(1, 2).reshape(x.shape[0], x.shape[2], grid[0], grid[1])

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        x, grid = self.embed(x)  # (B, 1 + N, D)
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_indices:
                features.append(self.tokens_to_grid(x, grid))  # (B, D, H/P, W/P)
        return features

    def forward_features(self, x: Tensor) -> Tensor:
        x, _ = self.embed(x)
        return self.norm(self.blocks(x))  # eq. 4's LN, on every token: (B, 1 + N, D)

    def forward_attention(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The logits, and every block's attention weights (B, heads, 1 + N, 1 + N), computed
        with the explicit softmax(QK^T / sqrt(D_h)) V path; token 0 is the class token.
        The logits equal ``forward(x)`` up to rounding."""
        x, _ = self.embed(x)
        attentions = []
        for block in self.blocks:
            x, weights = block.forward_attention(x)
            attentions.append(weights)
        return self.forward_head(self.norm(x)), attentions


# --- the variants: table 1 (Base, Large, Huge), named /P by their patch size -------------------
#             patch  layers  heads  width D  MLP size
VARIANTS = {
    "vit_b_16": (16, 12, 12, 768, 3072),
    "vit_b_32": (32, 12, 12, 768, 3072),
    "vit_l_16": (16, 24, 16, 1024, 4096),
    "vit_l_32": (32, 24, 16, 1024, 4096),
    "vit_h_14": (14, 32, 16, 1280, 5120),
    # not in the paper: a small model for 32x32 images, 8x8 = 64 patches of 4x4 pixels;
    # the paper's design with MLP size 4D, at a width and depth that train on a laptop CPU
    "vit_tiny_cifar": (4, 8, 4, 128, 512),
}


def _vit(name: str, image_size: int = 224, data: dict | None = None, **kwargs) -> VisionTransformer:
    """A variant of the table, built for ``image_size``; ``data``: its reference and normalisation
    (default: torchvision's model of the same name, at the same size, with ImageNet's statistics)."""
    patch_size, depth, num_heads, dim, mlp_dim = VARIANTS[name]
    data = data or dict(reference=f"torchvision.models.{name}", reference_kwargs={"image_size": image_size})
    config = ModelConfig(name=name, paper=PAPER, input_size=(3, image_size, image_size), **data)
    return VisionTransformer(patch_size, depth, num_heads, dim, mlp_dim, config, **kwargs)


@register_model
def vit_b_16(**kwargs) -> VisionTransformer:
    return _vit("vit_b_16", **kwargs)


@register_model
def vit_b_32(**kwargs) -> VisionTransformer:
    return _vit("vit_b_32", **kwargs)


@register_model
def vit_l_16(**kwargs) -> VisionTransformer:
    return _vit("vit_l_16", **kwargs)


@register_model
def vit_l_32(**kwargs) -> VisionTransformer:
    return _vit("vit_l_32", **kwargs)


@register_model
def vit_h_14(**kwargs) -> VisionTransformer:
    """Built for 224 like torchvision's; of its published weights, SWAG_LINEAR is for 224 and
    SWAG_E2E for 518 (``image_size=518``; loaded into a 224 model, their position embeddings
    are interpolated)."""
    return _vit("vit_h_14", **kwargs)


@register_model
def vit_tiny_cifar(num_classes: int = 10, image_size: int = 32, **kwargs) -> VisionTransformer:
    """A teaching ViT for 32x32 images (CIFAR-10/100, the course data): patch 4 (8x8 = 64
    tokens + the class token), width 128, 8 blocks of 4 heads, MLP 512; 1.6M parameters.
    It follows the paper's design exactly, only smaller; there is no reference checkpoint."""
    data = dict(reference="none (Dosovitskiy et al. 2021, scaled down for 32x32 inputs)", mean=CIFAR_MEAN, std=CIFAR_STD)
    return _vit("vit_tiny_cifar", image_size, data, num_classes=num_classes, **kwargs)
