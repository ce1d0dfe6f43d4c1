"""Are the maps trustworthy? Two checks from the literature.

* **Cascading model randomization** (Adebayo et al., "Sanity Checks for Saliency Maps",
  NeurIPS 2018, section 3.1): re-initialise the network's weights from the top (the
  classifier) down, one block at a time, and recompute the map after each step. A map that
  explains the *model* must change as the model is destroyed; a map that stays the same
  (high rank correlation with the original) is showing the image, not the model. The paper
  found guided backprop and guided Grad-CAM nearly invariant; gradients and Grad-CAM are not.
* **Deletion and insertion** (Petsiuk, Das & Saenko, "RISE", BMVC 2018, section 4.1): remove
  pixels from the image in the order of the map's importance and follow the class
  probability (it should fall fast: small area under the curve); or start from a blurred
  image and insert the pixels in that order (it should rise fast: large area).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from minibones.viz.attribution import attribute, predicted_class
from minibones.viz.display import as_input, model_label, new_figure, show_image, show_note, show_overlay

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class RandomizationStep:
    """The map after re-initialising everything from the top down to ``layer`` (inclusive).

    ``spearman_abs`` compares |map| with the original's |map| (the paper's main measure),
    ``spearman`` the signed maps."""

    layer: str
    spearman_abs: float
    spearman: float
    map: Tensor | None


def cascading_layers(model: nn.Module) -> list[str]:
    """The blocks re-initialised one after the other: the classifier, then the stages, top down."""
    stages = [info.module for info in reversed(model.feature_info)]
    head = ["head"] if hasattr(model, "head") else []
    seen, layers = set(), []
    for path in head + stages:
        if path not in seen:
            seen.add(path)
            layers.append(path)
    return layers


def randomize_module_(module: nn.Module, seed: int) -> None:
    """Fresh random weights for every layer inside ``module`` (its own ``reset_parameters``
    where it has one, a normal draw otherwise), as if it had never been trained."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for sub in module.modules():
            if hasattr(sub, "reset_parameters") and callable(sub.reset_parameters):
                sub.reset_parameters()
            else:
                for param in sub.parameters(recurse=False):
                    nn.init.normal_(param, std=0.02)
    finally:
        torch.random.set_rng_state(generator_state)


def model_randomization_test(
    model: nn.Module,
    x: Tensor,
    method: str = "gradcam",
    target: int | None = None,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    **options,
) -> tuple[Tensor, list[RandomizationStep]]:
    """Adebayo et al.'s cascading randomization: the original map and one step per layer.

    ``layers`` (module paths, default :func:`cascading_layers`) are re-initialised in order,
    cumulatively, on a copy of ``model``; the target class stays the original prediction.
    ``options`` go to :func:`minibones.viz.attribute`.
    """
    from scipy.stats import spearmanr

    model.eval()
    target = predicted_class(model, x) if target is None else target
    original = attribute(model, x, method, target, **options)
    if not original.ok:
        raise ValueError(f"{method} does not apply to {model_label(model)}: {original.note}")
    reference = original.map.flatten().numpy()
    randomized = copy.deepcopy(model)
    steps = []
    for k, layer in enumerate(layers or cascading_layers(model)):
        randomize_module_(randomized.get_submodule(layer), seed + k)
        result = attribute(randomized, x, method, target, **options)
        values = result.map.flatten().numpy()
        rho_abs = _spearman(spearmanr, np.abs(reference), np.abs(values))
        rho = _spearman(spearmanr, reference, values)
        steps.append(RandomizationStep(layer, rho_abs, rho, result.map))
    return original.map, steps


def plot_model_randomization(
    model: nn.Module, photo="cat", methods: Sequence[str] = ("saliency", "gradcam"), size: int | None = None, **options
) -> "Figure":
    """Top rows: each method's map on the original model, then after each randomization step.
    Bottom: the rank correlation (of |map|) with the original map, per step and method.
    Methods that pass the check fall towards 0; a line that stays near 1 is a warning
    (the map shows the image, not what the model learned)."""
    from matplotlib.figure import Figure

    x, image = as_input(model, photo, size)
    target = predicted_class(model, x)
    layers = cascading_layers(model)
    labels = [_layer_label(model, layer) for layer in layers]
    rows, cols = len(methods), len(layers) + 1
    fig = Figure(figsize=(1.6 * cols + 0.5, 1.6 * rows + 2.4), layout="constrained")
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.3])
    plot_ax = fig.add_subplot(grid[rows, :])
    for row, method in enumerate(methods):
        axes = [fig.add_subplot(grid[row, col]) for col in range(cols)]
        try:
            original, steps = model_randomization_test(model, x, method, target, **options)
        except ValueError as error:
            show_note(axes[0], image, str(error), method)
            for ax in axes[1:]:
                ax.set_axis_off()
            continue
        show_overlay(axes[0], image, original, f"{method}\noriginal")
        for ax, step, label in zip(axes[1:], steps, labels):
            show_overlay(ax, image, step.map, f"up to {label}\nrho {step.spearman_abs:.2f}")
        plot_ax.plot(range(1, len(steps) + 1), [s.spearman_abs for s in steps], marker="o", label=method)
    plot_ax.set_xticks(range(1, len(layers) + 1), [f"up to {label}" for label in labels], fontsize=7)
    plot_ax.set_xlim(0.5, len(layers) + 0.5)
    plot_ax.set_ylim(-0.1, 1.05)
    plot_ax.axhline(0, color="0.7", linewidth=0.8)
    plot_ax.set_ylabel("rank correlation\nwith original |map|", fontsize=8)
    plot_ax.legend(fontsize=7)
    plot_ax.set_title(f"{model_label(model)}: cascading randomization from the top (Adebayo et al. 2018)", fontsize=9)
    return fig


def _layer_label(model: nn.Module, path: str) -> str:
    for info in getattr(model, "feature_info", []):
        if info.module == path:
            return info.name
    return path


# --- deletion / insertion (RISE) -----------------------------------------------------------------


@dataclass
class FaithfulnessCurve:
    """Class probability against the fraction of pixels deleted (or inserted), and the areas."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> float:
        return float(np.trapezoid(self.deletion, self.fractions))

    @property
    def insertion_auc(self) -> float:
        return float(np.trapezoid(self.insertion, self.fractions))


def deletion_insertion(
    model: nn.Module,
    x: Tensor,
    saliency: Tensor,
    target: int | None = None,
    steps: int = 16,
    batch_size: int = 17,
    blur_sigma: float | None = None,
) -> FaithfulnessCurve:
    """Petsiuk et al.'s deletion and insertion curves for the (H, W) map ``saliency``.

    Pixels are ranked by the map (highest first). Deletion replaces them, ``1/steps`` of the
    image at a time, by 0 (the dataset mean after normalisation); insertion starts from a
    Gaussian-blurred copy (sigma: a tenth of the image side by default) and puts the original
    pixels back in the same order. The curves are the softmax probability of ``target``.
    """
    model.eval()
    target = predicted_class(model, x) if target is None else target
    if saliency.shape != x.shape[-2:]:
        raise ValueError(
            f"the map is {tuple(saliency.shape)} but the image is {tuple(x.shape[-2:])}; upsample it first"
        )
    height, width = x.shape[-2:]
    order = saliency.flatten().argsort(descending=True)
    counts = [round(k * height * width / steps) for k in range(steps + 1)]
    blurred = gaussian_blur(x, blur_sigma or max(height, width) / 10)
    deleted, inserted = [], []
    for count in counts:
        mask = torch.zeros(height * width, dtype=torch.bool)
        mask[order[:count]] = True
        mask = mask.view(1, 1, height, width)
        deleted.append(torch.where(mask, torch.zeros_like(x), x))
        inserted.append(torch.where(mask, x, blurred))
    probabilities = []
    with torch.no_grad():
        for images in (deleted, inserted):
            batch = torch.cat(images)
            probs = torch.cat([model(chunk).softmax(1)[:, target] for chunk in batch.split(batch_size)])
            probabilities.append(probs.numpy())
    fractions = np.array(counts) / (height * width)
    return FaithfulnessCurve(fractions, probabilities[0], probabilities[1])


def plot_deletion_insertion(
    model: nn.Module, photo="cat", methods: Sequence[str] = ("saliency", "gradcam", "occlusion"),
    size: int | None = None, steps: int = 16, **options,
) -> "Figure":
    """Each method's map, and its deletion and insertion curves with their areas
    (deletion: lower is better; insertion: higher is better)."""
    x, image = as_input(model, photo, size)
    target = predicted_class(model, x)
    fig, axes = new_figure(1, len(methods) + 3, cell=2.2)
    show_image(axes[0, 0], image, f"{model_label(model)}\nclass {target}")
    deletion_ax, insertion_ax = axes[0, -2], axes[0, -1]
    for ax, method in zip(axes[0, 1:-2], methods):
        result = attribute(model, x, method, target, **options)
        if not result.ok:
            show_note(ax, image, result.note or "not available", method)
            continue
        show_overlay(ax, image, result.map, result.title())
        curve = deletion_insertion(model, x, result.map, target, steps=steps)
        deletion_ax.plot(curve.fractions, curve.deletion, label=f"{method} ({curve.deletion_auc:.2f})")
        insertion_ax.plot(curve.fractions, curve.insertion, label=f"{method} ({curve.insertion_auc:.2f})")
    titles = [(deletion_ax, "deletion: AUC lower is better"), (insertion_ax, "insertion: AUC higher is better")]
    for ax, title in titles:
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("fraction of pixels", fontsize=7)
        ax.set_ylabel(f"p(class {target})", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    return fig


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """A separable Gaussian blur (kernel of +-2 sigma) with reflected borders, per channel."""
    radius = max(1, int(2 * sigma))
    radius = min(radius, min(x.shape[-2:]) - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    x = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _spearman(spearmanr, a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant map has no ranking: count it as uncorrelated
        return 0.0
    return float(spearmanr(a, b).statistic)
