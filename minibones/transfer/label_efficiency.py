"""How many labels do pretrained features save? A label-efficiency curve, measured cheaply.

Accuracy against labelled images per class: :func:`labelled_subset` draws k images of
every class, :func:`split_at` cuts a network into a frozen trunk (run once over the data,
:func:`run_trunk`) and a trainable top, :func:`linear_probe` fits a logistic regression on
frozen features by L-BFGS (:func:`recalibrate_batchnorm` prepares the randomly initialised
control network), :func:`train_steps` trains any module with one fixed optimizer, schedule
and number of steps (so that two recipes get the same budget), and
:class:`LabelEfficiency` collects the runs over seeds and draws the curve with its spread.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minibones.backbone import Backbone, measure_batch_norm_, mode
from minibones.optim import make_scheduler, optimizer_step
from minibones.train import TrainConfig


def labelled_subset(labels: Tensor, per_class: int | str, seed: int) -> Tensor:
    """Indices of ``per_class`` images of every class (``"all"``: every image), drawn with ``seed``.

    The few labelled images a new task starts with: a different ``seed`` draws other images,
    which is most of the run-to-run spread when ``per_class`` is small.
    """
    if per_class == "all":
        per_class = None
    elif isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive whole number or 'all', got {per_class!r}")
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique().tolist():
        members = torch.nonzero(labels == label).flatten()
        if per_class is not None and len(members) < per_class:
            raise ValueError(f"class {label} has {len(members)} images, fewer than the {per_class} asked for")
        members = members[torch.randperm(len(members), generator=generator)]
        chosen.append(members if per_class is None else members[:per_class])
    return torch.cat(chosen)


def resize_inputs(images: Tensor, size: int, mean, std) -> Tensor:
    """uint8 (N, 3, H, W) images -> the float (N, 3, size, size) a model reads: resized
    (bilinear, antialiased when shrinking) and normalised with ``mean`` and ``std``."""
    x = images.float() / 255
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    mean = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x.clamp(0, 1) - mean) / std


def _chain(model: Backbone) -> list[tuple[str, nn.Module]]:
    """The model's top-level modules in forward order, with ``stages`` opened up."""
    chain = []
    for name, child in model.named_children():
        if name == "stages":
            chain += list(child.named_children())
        else:
            chain.append((name, child))
    return chain


@torch.no_grad()
def split_at(model: Backbone, stage: str) -> tuple[nn.Sequential, nn.Sequential]:
    """Cut ``model`` just before ``stage``: a *trunk* (everything earlier) and a *top*
    (``stage``, everything after it, and the head), with ``top(trunk(x)) == model(x)``.
    Cut before the first module (``"stem"``) and the trunk is empty: the whole network trains.

    Why: a frozen trunk gives the same output for an image at every step, so it can be run
    once over the whole dataset (:func:`run_trunk`); training the top then costs only the
    top. Works for the families whose forward pass is a chain of their children (stem,
    stages, [conv_head], head: ResNet, EfficientNet and Lite, MobileNet), which is checked.
    """
    chain = _chain(model)
    names = [name for name, _ in chain]
    if stage not in names or stage == names[-1]:
        raise ValueError(f"cannot cut {model.config.name} before {stage!r}; choose one of {names[:-1]} "
                         f"(before {names[0]!r}: the trunk is empty and the whole network trains)")
    cut = names.index(stage)
    trunk, top = nn.Sequential(OrderedDict(chain[:cut])), nn.Sequential(OrderedDict(chain[cut:]))
    with mode(model, False):
        x = torch.randn(2, 3, 64, 64, device=next(model.parameters()).device)
        features, expected = top[:-1](trunk(x)), model.forward_features(x)  # before the classifier, which may be zero
        same = features.shape == expected.shape and torch.allclose(features, expected, atol=1e-5)
        same = same and torch.allclose(top(trunk(x)), model(x), atol=1e-5)
    if not same:
        raise ValueError(f"{model.config.name}'s forward is not the chain {names}: split_at cannot cut it")
    return trunk, top


@torch.no_grad()
def run_trunk(trunk: nn.Module, inputs: Tensor, batch_size: int = 128) -> Tensor:
    """The frozen trunk's output for every input, computed once (eval mode: running BN statistics)."""
    trunk.eval()
    return torch.cat([trunk(batch) for batch in inputs.split(batch_size)])


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: Tensor, batch_size: int = 256) -> nn.Module:
    """Measure every batch norm's running statistics on ``inputs``
    (:func:`minibones.backbone.measure_batch_norm_`); no weight changes. Returns ``model`` in eval mode.

    Why: a randomly initialised network is the control that separates what pretraining
    bought from what the architecture gives for free. But with batch norm at its initial
    statistics (mean 0, variance 1) a random network's activations shrink or grow block
    after block, and its features end up nearly constant: a probe on them would measure the
    initialisation, not the architecture. With statistics measured on the task's images,
    every normalised layer is back at zero mean and unit variance, the strongest baseline
    that trains no weight.
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no batch norm whose statistics could be measured")
    return measure_batch_norm_(model, inputs, batch_size).eval()


@torch.no_grad()
def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Fraction of ``inputs`` whose most probable class is the label (eval mode)."""
    with mode(model, False):
        predicted = torch.cat([model(batch).argmax(-1) for batch in inputs.split(batch_size)])
    return float((predicted == labels.to(predicted.device)).float().mean())


class LinearProbe(nn.Module):
    """A linear classifier on frozen features: ``W (x - mean) + b``.

    Centring with the training features' mean is part of the model, so the probe can be
    applied to new features as they come out of the backbone.
    """

    def __init__(self, mean: Tensor, num_classes: int):
        super().__init__()
        self.register_buffer("mean", mean)
        self.fc = nn.Linear(mean.numel(), num_classes)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        self.gradient_norm = float("nan")  # of the training objective at the end of the fit

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features - self.mean)


def linear_probe(features: Tensor, labels: Tensor, num_classes: int | None = None, *,
                 weight_decay: float = 1e-3, max_iter: int = 500) -> LinearProbe:
    """Multinomial logistic regression on frozen ``features`` (N, D), fit to convergence.

    The objective is convex (mean cross-entropy + ``weight_decay / 2 * ||W||^2``), so unlike
    a network it has one optimum and a run can be *seen* to reach it: L-BFGS uses the whole
    training set at every step and stops when the gradient is flat (``probe.gradient_norm``
    says how flat). The penalty keeps the weights finite when the classes are separable,
    as they always are with fewer images than feature dimensions.
    """
    features, labels = features.detach().float(), labels.to(features.device)
    num_classes = num_classes or int(labels.max()) + 1
    probe = LinearProbe(features.mean(0), num_classes).to(features.device)
    optimizer = torch.optim.LBFGS(probe.fc.parameters(), lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(features), labels) + weight_decay / 2 * probe.fc.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
        objective()
    probe.gradient_norm = float(torch.cat([p.grad.flatten() for p in probe.fc.parameters()]).norm())
    probe.requires_grad_(False)
    return probe.eval()


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear classifier")
    return linears[-1]


def train_steps(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 0.1,
    classifier_lr: float | None = None,
    weight_decay: float = 5e-4,
    seed: int = 0,
    test: tuple[Tensor, Tensor] | None = None,
    evaluate_at: tuple[float, ...] = (0.75, 1.0),
) -> dict[int, float]:
    """Train ``model`` for exactly ``steps`` steps on tensors already in memory; return the
    test accuracy at the given fractions of the run (``{step: accuracy}``).

    One recipe for every run that is compared, so that the budgets match: SGD with Nesterov
    momentum 0.9 and a one-cycle schedule (:mod:`minibones.train`'s), batches of
    ``min(batch_size, N)`` drawn without replacement and reshuffled every epoch from
    ``seed``, weight decay on weights but not on biases and norms, no augmentation.
    The last ``nn.Linear`` (the new classifier) may get its own rate, ``classifier_lr``:
    a fresh classifier needs large steps, pretrained layers small ones.
    """
    device = inputs.device
    model.to(device).train()
    classifier = {id(p) for p in _last_linear(model).parameters()}
    groups = []
    for is_classifier, rate in ((False, lr), (True, classifier_lr or lr)):
        params = [p for p in model.parameters() if p.requires_grad and (id(p) in classifier) == is_classifier]
        groups += [{"params": [p for p in params if p.ndim > 1], "lr": rate, "weight_decay": weight_decay},
                   {"params": [p for p in params if p.ndim <= 1], "lr": rate, "weight_decay": 0.0}]
    optimizer = torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=0.9, nesterov=True)
    scheduler = make_scheduler(optimizer, TrainConfig(), steps)  # one-cycle: warm-up, then cosine to ~0
    generator = torch.Generator().manual_seed(seed)
    batch = min(batch_size, len(inputs))
    checkpoints = {max(1, round(fraction * steps)) for fraction in evaluate_at}
    order, position, curve = torch.randperm(len(inputs), generator=generator), 0, {}
    for step in range(1, steps + 1):
        if position + batch > len(order):  # a new epoch: reshuffle (the incomplete last batch is dropped)
            order, position = torch.randperm(len(inputs), generator=generator), 0
        index = order[position : position + batch].to(device)
        position += batch
        optimizer_step(F.cross_entropy(model(inputs[index]), labels[index]), optimizer, scheduler)
        if test is not None and step in checkpoints:
            curve[step] = accuracy(model, *test)  # in eval mode, then back to training
    return curve


@dataclass
class LabelEfficiency:
    """Test accuracy per recipe, labelled images per class and seed: a label-efficiency curve.

    ``per_class`` lists the numbers of labelled images per class (``"all"``: every training
    image, about ``images_per_class_all`` per class). :meth:`add` records one run (and, for trained runs,
    its gain over the last quarter of training: near zero means it had reached a plateau).
    """

    per_class: list
    images_per_class_all: float
    accuracy: dict = field(default_factory=dict)  # (recipe, per_class) -> [accuracy per seed]
    late_gain: dict = field(default_factory=dict)  # (recipe, per_class) -> [accuracy gain over the last quarter]

    def add(self, recipe: str, per_class, accuracy: float, late_gain: float | None = None) -> None:
        self.accuracy.setdefault((recipe, per_class), []).append(accuracy)
        if late_gain is not None:
            self.late_gain.setdefault((recipe, per_class), []).append(late_gain)

    @property
    def recipes(self) -> list[str]:
        return list(dict.fromkeys(recipe for recipe, _ in self.accuracy))

    def _label(self, per_class) -> str:
        return str(per_class)

    def _x(self, per_class) -> float:
        return self.images_per_class_all if per_class == "all" else per_class

    def difference(self, recipe: str, baseline: str) -> dict:
        """Per number of labels: the mean and standard deviation over seeds of
        ``recipe - baseline`` (points of accuracy). Paired by seed: with the same seed both
        recipes saw the same labelled images, so the spread of the difference excludes the
        luck of the draw that both share."""
        result = {}
        for k in self.per_class:
            a = torch.tensor(self.accuracy[(recipe, k)], dtype=torch.float64)
            b = torch.tensor(self.accuracy[(baseline, k)], dtype=torch.float64)
            d = (a - b) * 100
            result[k] = (float(d.mean()), float(d.std()) if len(d) > 1 else 0.0)
        return result

    def table(self) -> str:
        """Mean ± standard deviation over seeds (and the number of seeds), in %."""
        header = "| recipe | " + " | ".join(f"{self._label(k)} per class" for k in self.per_class) + " |"
        lines = [header, "|---" * (len(self.per_class) + 1) + "|"]
        for recipe in self.recipes:
            cells = []
            for k in self.per_class:
                values = torch.tensor(self.accuracy.get((recipe, k), []), dtype=torch.float64) * 100
                sd = float(values.std()) if len(values) > 1 else 0.0
                cells.append(f"{float(values.mean()):.1f} ± {sd:.1f} (n={len(values)})" if len(values) else "-")
            lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plateau_table(self) -> str:
        """For each trained recipe: the largest test-accuracy gain (points) over the last quarter of a run."""
        lines = []
        for recipe in dict.fromkeys(r for r, _ in self.late_gain):
            gains = [f"{self._label(k)}: {100 * max(self.late_gain[(recipe, k)], key=abs):+.1f}"
                     for k in self.per_class if (recipe, k) in self.late_gain]
            lines.append(f"{recipe:<14} " + "   ".join(gains))
        return "\n".join(lines)

    def plot(self, ax=None, chance: float | None = None, recipes: list[str] | None = None):
        """Mean accuracy against labelled images per class (log scale), each seed as a dot and
        the range over seeds shaded; ``recipes`` picks which to draw (default: all).

        The accuracy axis spans the plotted data (and chance, if given) with a small margin,
        not 0 to 100 %: differences of a few points between recipes must stay visible. A
        recipe keeps its colour whichever subset is drawn, so two panels can be compared.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
        recipes = self.recipes if recipes is None else list(recipes)
        unknown = [r for r in recipes if r not in self.recipes]
        if unknown:
            raise ValueError(f"no runs of {unknown}; the recipes recorded are {self.recipes}")
        xs = [self._x(k) for k in self.per_class]
        plotted = []
        for recipe in recipes:
            colour = f"C{self.recipes.index(recipe)}"
            runs = [torch.tensor(self.accuracy[(recipe, k)]) * 100 for k in self.per_class]
            plotted += [float(v) for r in runs for v in r]
            ax.plot(xs, [float(r.mean()) for r in runs], "o-", label=recipe, lw=2, color=colour)
            ax.fill_between(xs, [float(r.min()) for r in runs], [float(r.max()) for r in runs],
                            color=colour, alpha=0.2, lw=0)
            for x, r in zip(xs, runs):
                ax.scatter([x] * len(r), r.tolist(), s=12, color=colour, alpha=0.6, zorder=3)
        if chance is not None:
            plotted.append(100 * chance)
            ax.axhline(100 * chance, color="grey", ls=":", lw=1)
            ax.annotate("chance", (xs[-1], 100 * chance), textcoords="offset points", xytext=(-2, 3),
                        ha="right", fontsize=9, color="grey")
        low = max(0.0, 5 * math.floor((min(plotted) - 2) / 5))
        high = min(100.0, 5 * math.ceil((max(plotted) + 2) / 5))
        ax.set_ylim(low, high)
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"all\n(~{self.images_per_class_all:.0f})" if k == "all" else str(k)
                           for k in self.per_class])
        ax.minorticks_off()
        ax.set_xlabel("labelled training images per class")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=9)
        return ax.figure


__all__ = [
    "LabelEfficiency", "LinearProbe", "accuracy", "labelled_subset", "linear_probe", "recalibrate_batchnorm",
    "resize_inputs", "run_trunk", "split_at", "train_steps",
]
