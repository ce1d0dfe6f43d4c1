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

One image proves little: :func:`model_randomization` and :func:`faithfulness` are run over
several images, and :func:`bootstrap_ranking` says how often the order of the methods
survives resampling those images. The deleted images are unlike any training image, so a
deletion score also measures how the network reacts to that damage (Hooker et al., "A
Benchmark for Interpretability Methods in Deep Neural Networks", NeurIPS 2019, retrain
after removing pixels for that reason).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from minibones.viz.attribution import attribute, predicted_class, show_map
from minibones.viz.display import as_input, model_label, new_figure, show_image, show_note

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
    """The blocks re-initialised one after the other, from the output down: the classifier, then
    every top-level block in reverse order of execution, the children of ``stages`` (or
    ``blocks``) one by one. Every trained block is covered, not only those that ``feature_info``
    names (EfficientNet's stage4, stage6 and stage7 would otherwise stay trained)."""
    layers = []
    for name, child in model.named_children():
        if name in ("stages", "blocks"):
            layers += [f"{name}.{sub}" for sub, grandchild in child.named_children() if _has_parameters(grandchild)]
        elif name != "head" and _has_parameters(child):
            layers.append(name)
    head = ["head"] if hasattr(model, "head") else []
    return head + layers[::-1]


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


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


@dataclass
class Randomization:
    """Adebayo et al.'s cascade for several methods on one image.

    ``layers[k]`` is the block re-initialised at step k (cumulatively, from the top);
    ``original[method]`` the map of the trained model, ``maps[method][k]`` the map after step k,
    ``spearman_abs[method][k]`` the rank correlation of |map| with the original |map|."""

    target: int
    layers: list[str]
    original: dict[str, Tensor]
    maps: dict[str, list[Tensor]]
    spearman_abs: dict[str, np.ndarray]
    spearman: dict[str, np.ndarray]


def model_randomization(
    model: nn.Module,
    x: Tensor,
    methods: Sequence[str] = ("saliency", "gradcam"),
    target: int | None = None,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    **options,
) -> Randomization:
    """Cascading model randomization (Adebayo et al. 2018, section 3.1) for several methods at once.

    ``layers`` (module paths, default :func:`cascading_layers`) are re-initialised in order,
    cumulatively, on a copy of ``model`` (the model itself is left untouched); after each
    step every method's map is recomputed for the *original* target (default: the class the
    trained model predicts). ``options`` go to :func:`minibones.viz.attribute`.
    """
    model.eval()
    target = predicted_class(model, x) if target is None else int(target)
    layers = list(layers or cascading_layers(model))
    original = {}
    for method in methods:
        result = attribute(model, x, method, target, **options)
        if not result.ok:
            raise ValueError(f"{method} does not apply to {model_label(model)}: {result.note}")
        original[method] = result.map
    randomized = copy.deepcopy(model)
    maps = {method: [] for method in methods}
    for k, layer in enumerate(layers):
        randomize_module_(randomized.get_submodule(layer), seed + k)
        for method in methods:
            result = attribute(randomized, x, method, target, **options)
            maps[method].append(result.map if result.ok else torch.zeros_like(original[method]))
    spearman_abs = {m: np.array([_rank_correlation(original[m].abs(), step.abs()) for step in maps[m]])
                    for m in methods}
    spearman = {m: np.array([_rank_correlation(original[m], step) for step in maps[m]]) for m in methods}
    return Randomization(target, layers, original, maps, spearman_abs, spearman)


def model_randomization_test(
    model: nn.Module,
    x: Tensor,
    method: str = "gradcam",
    target: int | None = None,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    **options,
) -> tuple[Tensor, list[RandomizationStep]]:
    """One method of :func:`model_randomization`: the original map and one step per layer."""
    run = model_randomization(model, x, (method,), target, layers, seed, **options)
    steps = [RandomizationStep(layer, float(run.spearman_abs[method][k]), float(run.spearman[method][k]),
                               run.maps[method][k]) for k, layer in enumerate(run.layers)]
    return run.original[method], steps


def plot_model_randomization(
    run: Randomization, image: np.ndarray, show_layers: Sequence[str] | None = None, model: nn.Module | None = None
) -> "Figure":
    """Each method's map on the trained model (first column), then after the randomization steps
    named in ``show_layers`` (default: all), with the rank correlation of |map| with the
    original in each title. Maps that pass the check change (rho falls towards 0); a map that
    stays the same (rho near 1) shows the image, not what the model learned. ``run`` comes
    from :func:`model_randomization`, ``image`` is the picture it explained (for display)."""
    methods = list(run.original)
    shown = [k for k, layer in enumerate(run.layers) if show_layers is None or layer in show_layers]
    fig, axes = new_figure(len(methods), len(shown) + 1, cell=1.6)
    for row, method in zip(axes, methods):
        show_map(row[0], image, run.original[method], method, f"{method.replace('_', ' ')}\ntrained")
        for ax, k in zip(row[1:], shown):
            label = _layer_label(model, run.layers[k]) if model is not None else run.layers[k]
            show_map(ax, image, run.maps[method][k], method, f"+ {label}\nrho {run.spearman_abs[method][k]:.2f}")
    return fig


def plot_randomization_curves(
    rho: np.ndarray, methods: Sequence[str], layers: Sequence[str], model: nn.Module | None = None
) -> "Figure":
    """The mean over images of the rank correlation with the trained model's |map| (one line per
    method), before randomisation (1 by definition) and after each cascading step, with the range
    over images shaded. ``rho`` is (images, methods, layers)."""
    from matplotlib.figure import Figure

    labels = ["trained"] + [f"+ {_layer_label(model, layer) if model is not None else layer}" for layer in layers]
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    steps = np.arange(len(layers) + 1)
    for m, method in enumerate(methods):
        values = np.concatenate([np.ones((rho.shape[0], 1)), rho[:, m, :]], axis=1)
        line = ax.plot(steps, values.mean(0), marker="o", label=method.replace("_", " "))[0]
        ax.fill_between(steps, values.min(0), values.max(0), color=line.get_color(), alpha=0.12, linewidth=0)
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.set_xticks(steps, labels, rotation=30, ha="right", fontsize=9)
    ax.set_xlim(-0.3, len(layers) + 0.3)
    ax.set_ylim(min(-0.1, float(rho.min()) - 0.05), 1.05)
    ax.set_xlabel("blocks re-initialised, cumulatively from the top (the classifier first)", fontsize=10)
    ax.set_ylabel("Spearman rho of |map|\nwith the trained model's", fontsize=10)
    ax.tick_params(labelsize=9)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"cascading randomisation: mean over {rho.shape[0]} images, smallest to largest shaded", fontsize=10)
    return fig


def _layer_label(model: nn.Module, path: str) -> str:
    for info in getattr(model, "feature_info", []):
        if info.module == path:
            return info.name
    return path.removeprefix("stages.").removeprefix("blocks.")


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
    batch_size: int = 34,
    blur_sigma: float | None = None,
) -> FaithfulnessCurve:
    """Petsiuk et al.'s deletion and insertion curves for the (H, W) map ``saliency``.

    Pixels are ranked by the map (highest first). Deletion replaces them, ``1/steps`` of the
    image at a time, by 0 (the training data's mean colour after normalisation); insertion starts
    from a Gaussian-blurred copy (sigma: a tenth of the image side by default) and puts the
    original pixels back in the same order. The curves are the softmax probability of
    ``target``; their areas (trapezoid rule over the fraction of pixels, from 0 to 1) are the
    scores: a small deletion area and a large insertion area mean a faithful ranking.
    """
    model.eval()
    target = predicted_class(model, x) if target is None else target
    if saliency.shape != x.shape[-2:]:
        raise ValueError(
            f"the map is {tuple(saliency.shape)} but the image is {tuple(x.shape[-2:])}; upsample it first"
        )
    height, width = x.shape[-2:]
    fractions = np.array([round(k * height * width / steps) for k in range(steps + 1)]) / (height * width)
    deleted, inserted = perturbed_images(x, saliency, fractions, blur_sigma)
    batch = torch.cat([deleted, inserted])  # (2 * (steps + 1), 3, H, W)
    with torch.no_grad():
        probs = torch.cat([model(chunk).softmax(1)[:, target] for chunk in batch.split(batch_size)]).numpy()
    return FaithfulnessCurve(fractions, probs[: steps + 1], probs[steps + 1 :])


def perturbed_images(
    x: Tensor, saliency: Tensor, fractions: Sequence[float], blur_sigma: float | None = None
) -> tuple[Tensor, Tensor]:
    """The images the deletion and insertion curves are made of, (len(fractions), 3, H, W) each:
    the top ``fraction`` of pixels by ``saliency`` set to 0 (the mean colour after
    normalisation), and the same pixels put back into a Gaussian-blurred copy."""
    height, width = x.shape[-2:]
    order = saliency.flatten().argsort(descending=True)
    blurred = gaussian_blur(x, blur_sigma or max(height, width) / 10)
    deleted, inserted = [], []
    for fraction in fractions:
        mask = torch.zeros(height * width, dtype=torch.bool)
        mask[order[: round(fraction * height * width)]] = True
        mask = mask.view(1, 1, height, width)
        deleted.append(torch.where(mask, torch.zeros_like(x), x))
        inserted.append(torch.where(mask, x, blurred))
    return torch.cat(deleted), torch.cat(inserted)


@dataclass
class Faithfulness:
    """Deletion and insertion over many images: per image and method, the curves and their areas.

    ``deletion`` and ``insertion`` are (images, methods, steps + 1); the areas (images, methods)."""

    methods: list[str]
    targets: list[int]
    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> np.ndarray:
        return np.trapezoid(self.deletion, self.fractions, axis=-1)

    @property
    def insertion_auc(self) -> np.ndarray:
        return np.trapezoid(self.insertion, self.fractions, axis=-1)


def faithfulness(
    model: nn.Module,
    images: Sequence[Tensor],
    methods: Sequence[str],
    targets: Sequence[int] | None = None,
    curve_steps: int = 16,
    seed: int = 0,
    **options,
) -> Faithfulness:
    """:func:`deletion_insertion` for every method on every image (each explained for its
    predicted class unless ``targets`` are given). The method ``"random"`` ranks the pixels at
    random (a seeded generator): the baseline every method must beat. ``curve_steps`` is the
    number of deletion (and insertion) steps; ``options`` go to :func:`minibones.viz.attribute`."""
    generator = torch.Generator().manual_seed(seed)
    deletion, insertion, chosen = [], [], []
    for i, x in enumerate(images):
        target = predicted_class(model, x) if targets is None else int(targets[i])
        chosen.append(target)
        rows = []
        for method in methods:
            if method == "random":
                ranking = torch.rand(tuple(x.shape[-2:]), generator=generator)
            else:
                result = attribute(model, x, method, target, **options)
                if not result.ok:
                    raise ValueError(f"{method} does not apply to {model_label(model)}: {result.note}")
                ranking = result.map
            rows.append(deletion_insertion(model, x, ranking, target, steps=curve_steps))
        deletion.append([curve.deletion for curve in rows])
        insertion.append([curve.insertion for curve in rows])
    return Faithfulness(list(methods), chosen, rows[0].fractions, np.array(deletion), np.array(insertion))


@dataclass
class Ranking:
    """Methods ranked by their mean score over images, with bootstrap intervals.

    ``order``: method indices, best first. ``low``/``high``: the 95% bootstrap interval of each
    mean. ``same_order``: the share of bootstrap resamples that rank all methods as ``order``
    does. ``ahead[k]``: the share in which ``order[k]`` beats ``order[k + 1]``."""

    mean: np.ndarray
    sem: np.ndarray
    low: np.ndarray
    high: np.ndarray
    order: np.ndarray
    same_order: float
    ahead: np.ndarray


def bootstrap_ranking(
    scores: np.ndarray, higher_is_better: bool, resamples: int = 2000, seed: int = 0,
    groups: Sequence | None = None,
) -> Ranking:
    """Rank methods by their mean ``scores`` (images, methods) and say how stable that is.

    Images are resampled with replacement (Efron's bootstrap); with ``groups`` (one label per
    image, e.g. the photograph a crop comes from) whole groups are resampled, since crops of
    one photograph are not independent. Resampling keeps every image's methods together, so
    a method that wins on most images stays ahead even when the images differ a lot.
    """
    scores = np.asarray(scores, dtype=np.float64)
    sign = 1.0 if higher_is_better else -1.0
    labels = np.arange(len(scores)) if groups is None else np.asarray(groups)
    units = [np.flatnonzero(labels == g) for g in np.unique(labels)]
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, scores.shape[1]))
    for b in range(resamples):
        picked = np.concatenate([units[u] for u in rng.integers(0, len(units), len(units))])
        means[b] = scores[picked].mean(0)
    mean = scores.mean(0)
    order = np.argsort(-sign * mean, kind="stable")
    ranks = np.argsort(-sign * means, axis=1, kind="stable")
    same = float((ranks == order).all(1).mean())
    ahead = np.array([(sign * (means[:, a] - means[:, b]) > 0).mean() for a, b in zip(order[:-1], order[1:])])
    sem = scores.std(0, ddof=1) / np.sqrt(len(units)) if len(units) > 1 else np.zeros_like(mean)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return Ranking(mean, sem, low, high, order, same, ahead)


def plot_faithfulness(result: Faithfulness) -> "Figure":
    """Mean deletion and insertion curves over the images (the standard error shaded), and each
    method's mean area with its 95% bootstrap interval."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 7.0), layout="constrained")
    axes = fig.subplots(2, 2)
    n = result.deletion.shape[0]
    for col, (name, curves, areas, better) in enumerate([
        ("deletion", result.deletion, result.deletion_auc, "lower"),
        ("insertion", result.insertion, result.insertion_auc, "higher"),
    ]):
        ax = axes[0, col]
        for m, method in enumerate(result.methods):
            mean, sem = curves[:, m].mean(0), curves[:, m].std(0, ddof=1) / np.sqrt(n)
            style = dict(color="0.3", linestyle="--") if method == "random" else {}
            line = ax.plot(result.fractions, mean, label=method.replace("_", " "), **style)[0]
            ax.fill_between(result.fractions, mean - sem, mean + sem, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xlabel(f"fraction of pixels {'deleted' if name == 'deletion' else 'inserted'}", fontsize=10)
        ax.set_ylabel("probability of the explained class", fontsize=10)
        ax.set_title(f"{name}: mean over {n} images (+- standard error)", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=9)
        if col == 0:
            ax.legend(fontsize=9, loc="upper right")
        ranking = bootstrap_ranking(areas, higher_is_better=(better == "higher"))
        ax = axes[1, col]
        positions = np.arange(len(result.methods))
        if "random" in result.methods:
            ax.axvline(ranking.mean[result.methods.index("random")], color="0.5", linestyle="--", linewidth=1)
        ax.errorbar(ranking.mean, positions, xerr=[ranking.mean - ranking.low, ranking.high - ranking.mean],
                    fmt="o", color="k", capsize=3)
        ax.set_yticks(positions, [m.replace("_", " ") for m in result.methods], fontsize=9)
        ax.invert_yaxis()
        ax.set_xlabel(f"area under the {name} curve ({better} is better)", fontsize=10)
        ax.set_title("mean area, 95% bootstrap interval (dashed: random ranking)", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.grid(axis="x", color="0.9")
    return fig


def plot_deletion_insertion(
    model: nn.Module, photo="cat", methods: Sequence[str] = ("saliency", "gradcam", "occlusion"),
    size: int | None = None, curve_steps: int = 16, target: int | None = None, **options,
) -> "Figure":
    """Each method's map, and its deletion and insertion curves with their areas
    (deletion: lower is better; insertion: higher is better), on one image."""
    from matplotlib.figure import Figure

    x, image = as_input(model, photo, size)
    target = predicted_class(model, x) if target is None else target
    fig = Figure(figsize=(2.0 * len(methods) + 7.5, 2.9), layout="constrained")
    grid = fig.add_gridspec(1, len(methods) + 3, width_ratios=[1.0] * (len(methods) + 1) + [1.9, 1.9])
    axes = [fig.add_subplot(grid[0, k]) for k in range(len(methods) + 3)]
    show_image(axes[0], image, f"class {target}")
    deletion_ax, insertion_ax = axes[-2], axes[-1]
    for ax, method in zip(axes[1:-2], methods):
        result = attribute(model, x, method, target, **options)
        if not result.ok:
            show_note(ax, image, result.note or "not available", method)
            continue
        result.show(ax, image, method.replace("_", " "))
        curve = deletion_insertion(model, x, result.map, target, steps=curve_steps)
        deletion_ax.plot(curve.fractions, curve.deletion, label=f"{method} ({curve.deletion_auc:.2f})")
        insertion_ax.plot(curve.fractions, curve.insertion, label=f"{method} ({curve.insertion_auc:.2f})")
    for ax, title in [(deletion_ax, "deletion (area: lower is better)"),
                      (insertion_ax, "insertion (area: higher is better)")]:
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("fraction of pixels", fontsize=9)
        ax.set_ylabel(f"p(class {target})", fontsize=9)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=9)
        ax.legend(fontsize=8)
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


def _rank_correlation(a: Tensor, b: Tensor) -> float:
    """Spearman's rho of two maps (ties get their mean rank); a constant map has no ranking
    and counts as uncorrelated (0)."""
    from scipy.stats import spearmanr

    a, b = a.flatten().numpy(), b.flatten().numpy()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)
