"""Embeddings: what the classifier reads, for many images at once.

Every backbone ends with one vector per image (``num_features`` wide: the pooled last
stage, or ViT's class token). Projecting these vectors to 2-D shows whether the
classes are already separated before the classifier: PCA (linear, keeps the large-scale
geometry) and t-SNE (van der Maaten & Hinton 2008; non-linear, keeps neighbourhoods,
distances between clusters mean little).

How well the classes are apart is measured, not only drawn: :func:`knn_accuracy` classifies
each test image by the labels of its nearest training images in a feature space, and
:func:`stage_features` gives one such space per stage (each stage's map averaged over its
positions), so that the stages of a backbone can be compared.
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


def stage_features(model: nn.Module, images: Tensor, batch_size: int = 256) -> list[Tensor]:
    """Every stage's map averaged over its positions: one (N, C_stage) tensor per entry of
    ``feature_info``, for normalised ``images`` (N, 3, H, W)."""
    model.eval()
    device = next(model.parameters()).device
    pooled: list[list[Tensor]] = [[] for _ in model.feature_info]
    with torch.no_grad():
        for batch in images.split(batch_size):
            for k, fmap in enumerate(model.forward_stages(batch.to(device))):
                pooled[k].append(fmap.float().mean((2, 3)).cpu())  # (B, C)
    return [torch.cat(chunks) for chunks in pooled]


def knn_accuracy(train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, k: int = 5) -> float:
    """The share of ``test`` vectors whose ``k`` nearest ``train`` vectors (Euclidean, after
    standardising every feature with the training set's mean and spread) vote for their label.

    No training and no hyper-parameter but k: a direct reading of whether images of one class
    lie together in the feature space. Standardising makes the number independent of each
    feature's scale (a random network's features can be tiny)."""
    from sklearn.neighbors import KNeighborsClassifier

    if len(train) != len(train_labels) or len(test) != len(test_labels):
        raise ValueError("give one label per vector, for the training and for the test set")
    mean, std = train.mean(0), train.std(0).clamp_min(1e-12)
    classifier = KNeighborsClassifier(n_neighbors=k).fit(((train - mean) / std).numpy(), train_labels.numpy())
    return float(classifier.score(((test - mean) / std).numpy(), test_labels.numpy()))


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
    features = {label: pooled_features(model, images) for label, model in models.items()}
    return plot_feature_embedding(features, labels, class_names, methods, seed)


def plot_feature_embedding(
    features: dict[str, Tensor],
    labels: Sequence[int] | Tensor,
    class_names: Sequence[str] | None = None,
    methods: Sequence[str] = ("pca", "tsne"),
    seed: int = 0,
    titles: dict[str, str] | None = None,
) -> "Figure":
    """One row per ``{label: (N, D) features}``, one column per projection, points coloured by class
    (with a single projection the feature sets sit side by side instead). ``titles`` adds a line
    under each panel's title (an accuracy, say)."""
    labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    classes = np.unique(labels)
    fig, axes = new_figure(len(features), len(methods), cell=2.8)
    if len(methods) == 1:
        fig, axes = new_figure(1, len(features), cell=2.8)
        axes = axes.T  # (features, 1): one column per feature set
    import matplotlib

    colours = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for row, (label, vectors) in enumerate(features.items()):
        for col, method in enumerate(methods):
            points = embed_2d(vectors, method, seed)
            ax = axes[row, col]
            for k, cls in enumerate(classes):
                chosen = labels == cls
                name = class_names[int(cls)] if class_names is not None else str(cls)
                ax.scatter(points[chosen, 0], points[chosen, 1], s=8, color=colours(k % colours.N), label=name)
            extra = f"\n{titles[label]}" if titles and label in titles else ""
            ax.set_title(f"{label}: {method.upper()} of {vectors.shape[1]}-d features{extra}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{method.upper()} 1 (no unit)", fontsize=9)
            ax.set_ylabel(f"{method.upper()} 2 (no unit)", fontsize=9)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right center", fontsize=9, markerscale=1.5,
               title="class", title_fontsize=9)
    return fig


__all__ = ["embed_2d", "knn_accuracy", "plot_embedding", "plot_feature_embedding", "pooled_features", "stage_features"]
