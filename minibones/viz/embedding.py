"""Embeddings: what the classifier reads, for many images at once.

Every backbone ends with one vector per image (``num_features`` wide: the pooled last
stage, or ViT's class token). Projecting these vectors to 2-D shows whether the
classes are already separated before the classifier: PCA (linear, keeps the large-scale
geometry) and t-SNE (van der Maaten & Hinton 2008; non-linear, keeps neighbourhoods,
distances between clusters mean little).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from minibones.viz.display import as_model_dict, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pooled_features(model: nn.Module, images: Tensor | Iterable, batch_size: int = 64) -> Tensor:
    """The vector the classifier reads for every image: the input of ``model.head.fc``.

    ``images`` is a normalised (N, 3, H, W) tensor or an iterable of batches (a DataLoader
    yielding ``(images, labels)`` or images). Returns (N, num_features)."""
    model.eval()
    captured: list[Tensor] = []

    def hook(module, inputs):
        captured.append(inputs[0].detach().flatten(1))

    handle = model.head.fc.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            batches = images.split(batch_size) if isinstance(images, Tensor) else images
            for batch in batches:
                if isinstance(batch, (tuple, list)):
                    batch = batch[0]
                model(batch)
    finally:
        handle.remove()
    if not captured:
        raise ValueError("no images were given")
    return torch.cat(captured)


def embed_2d(features: Tensor | np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) with ``"pca"`` or ``"tsne"`` (scikit-learn)."""
    array = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    array = array.astype(np.float64)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(array)
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError as error:  # pragma: no cover - scikit-learn ships it
            raise ImportError("t-SNE needs scikit-learn: pip install scikit-learn") from error
        perplexity = float(min(30.0, max(2.0, (len(array) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(array)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def plot_embedding(
    models,
    images: Tensor,
    labels: Sequence[int] | Tensor,
    class_names: Sequence[str] | None = None,
    methods: Sequence[str] = ("pca", "tsne"),
    seed: int = 0,
) -> "Figure":
    """One row per backbone, one column per projection: the pooled features of ``images``,
    coloured by class.

    ``images`` must already be normalised the way the models expect (the same tensor is fed
    to every model; give models that share a normalisation)."""
    models = as_model_dict(models)
    labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    classes = np.unique(labels)
    fig, axes = new_figure(len(models), len(methods), cell=2.8)
    import matplotlib

    colours = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for row, (label, model) in enumerate(models.items()):
        features = pooled_features(model, images)
        for col, method in enumerate(methods):
            points = embed_2d(features, method, seed)
            ax = axes[row, col]
            for k, cls in enumerate(classes):
                chosen = labels == cls
                name = class_names[int(cls)] if class_names is not None else str(cls)
                ax.scatter(points[chosen, 0], points[chosen, 1], s=8, color=colours(k % colours.N), label=name)
            ax.set_title(f"{label}: {method.upper()} of {features.shape[1]}-d features", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, -1].legend(fontsize=6, markerscale=1.5, loc="best")
    return fig


__all__ = ["embed_2d", "plot_embedding", "pooled_features"]
