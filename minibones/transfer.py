"""Transfer learning: reuse a pretrained backbone on a new task.

Three ways to use a backbone on a new, small dataset, from cheapest to most flexible:

* **linear probe** - freeze the whole backbone and train only a new classifier on its
  features (Donahue et al. 2014, "DeCAF"; the standard measure of how good features are);
* **fine-tuning** - train everything, starting from the pretrained weights, usually with
  smaller learning rates for the early, generic stages than for the late, task-specific
  ones (Yosinski et al. 2014 measured how transferable each depth is; Howard & Ruder 2018
  call the per-stage rates *discriminative fine-tuning*);
* **from scratch** - the same network, randomly initialised: the baseline that says what
  the pretraining bought.

The stages come from the model's ``feature_info``, so every helper here works for every
family: :func:`stage_groups` splits the parameters by stage, :func:`freeze` and
:func:`unfreeze` switch stages off and on (gradual unfreezing is a loop over stages),
:func:`param_groups` gives the optimizer one learning rate per stage, and
:func:`transfer_experiment` runs the three recipes on one dataset.

How many labels do pretrained features save? The last part measures it cheaply, as a
*label-efficiency curve* (accuracy against labelled images per class):
:func:`labelled_subset` draws k images of every class, :func:`split_at` cuts a network
into a frozen trunk (run once over the data, :func:`run_trunk`) and a trainable top,
:func:`linear_probe` fits a logistic regression on frozen features by L-BFGS
(:func:`recalibrate_batchnorm` prepares the randomly initialised control network),
:func:`train_steps` trains any module with one fixed optimizer, schedule and number of
steps (so that two recipes get the same budget), and :class:`LabelEfficiency` collects
the runs over seeds and draws the curve with its spread.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minibones.backbone import Backbone
from minibones.data import Data, ImageTensors
from minibones.registry import create_model
from minibones.train import TrainConfig, fit, make_scheduler, seed_everything

HEAD, CLASSIFIER = "head", "classifier"


# --- which parameter belongs to which stage ---------------------------------------


def stage_groups(model: Backbone) -> OrderedDict[str, list[tuple[str, nn.Parameter]]]:
    """The parameters of ``model``, split by stage, earliest first, then ``"head"`` and ``"classifier"``.

    A stage owns the parameters of its module (``feature_info[i].module``). Parameters
    outside every stage module (a stem that is not a stage, ViT's class token and
    position embedding, blocks between two tapped stages) belong to the next stage in
    registration order, which is the order of the forward pass in every minibones family.
    ``"classifier"`` is the last layer (``head.fc``), the only part a linear probe trains;
    ``"head"`` is everything between the last stage and it (VGG's fc6 and fc7, ViT's final
    LayerNorm, EfficientNet's last 1x1 conv when it is not a stage).
    """
    prefixes = [(info.name, info.module + ".") for info in model.feature_info]
    groups: OrderedDict[str, list] = OrderedDict((name, []) for name, _ in prefixes)
    groups[HEAD], groups[CLASSIFIER] = [], []
    pending = []  # parameters waiting for the next stage
    for name, parameter in model.named_parameters():
        if name.startswith("head.fc."):
            groups[CLASSIFIER].append((name, parameter))
            continue
        stage = next((stage for stage, prefix in prefixes if name.startswith(prefix)), None)
        if stage is None:
            pending.append((name, parameter))
        else:
            groups[stage] += pending + [(name, parameter)]
            pending = []
    groups[HEAD] += pending
    return OrderedDict((name, params) for name, params in groups.items() if params or name == CLASSIFIER)


def _select(model: Backbone, stages) -> list[str]:
    """Stage names from names, indices, or a slice-like ``up_to`` stage."""
    names = list(stage_groups(model))
    chosen = []
    for stage in stages:
        if isinstance(stage, int):
            chosen.append(names[stage])
        elif stage in names:
            chosen.append(stage)
        else:
            raise ValueError(f"{model.config.name} has no stage {stage!r}; its parameter groups are {names}")
    return chosen


# --- freezing -----------------------------------------------------------------------


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode: it normalises with its running statistics and
    never updates them, even inside ``model.train()``.

    Freezing the weights is not enough for batch norm: in training mode it normalises with
    the *batch's* statistics and keeps updating its running ones, so a "frozen" backbone
    would still drift towards the new data (and behave differently at test time). This is
    the convention of detection libraries (Detectron2, torchvision's FrozenBatchNorm2d); here
    the module keeps its class's parameters and buffers, so state dicts are unchanged.
    """

    def train(self, mode: bool = True):
        return super().train(False)


def _set_batchnorm_frozen(module: nn.Module, frozen: bool) -> None:
    for sub in module.modules():
        if frozen and type(sub) is nn.BatchNorm2d:
            sub.__class__ = FrozenBatchNorm2d
            sub.eval()
        elif not frozen and type(sub) is FrozenBatchNorm2d:
            sub.__class__ = nn.BatchNorm2d
            sub.train(getattr(module, "training", True))


def _modules_of(model: Backbone, parameter_names: set[str]) -> list[nn.Module]:
    """The modules all of whose own parameters are in ``parameter_names`` (to freeze their BN)."""
    modules = []
    for name, module in model.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if own and all(p in parameter_names for p in own):
            modules.append(module)
    return modules


def freeze(model: Backbone, stages=None, *, batchnorm: bool = True) -> Backbone:
    """Stop training ``stages`` (names or indices of :func:`stage_groups`; default: everything
    but the classifier, i.e. a linear probe). Their batch norms are frozen too (running
    statistics used and kept, see :class:`FrozenBatchNorm2d`) unless ``batchnorm=False``."""
    groups = stage_groups(model)
    names = [n for n in groups if n != CLASSIFIER] if stages is None else _select(model, stages)
    frozen = {name for stage in names for name, _ in groups[stage]}
    for name, parameter in model.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    if batchnorm:
        for module in _modules_of(model, frozen):
            _set_batchnorm_frozen(module, True)
    return model


def unfreeze(model: Backbone, stages=None) -> Backbone:
    """Train ``stages`` again (default: all of them), batch-norm statistics included."""
    groups = stage_groups(model)
    names = list(groups) if stages is None else _select(model, stages)
    thawed = {name for stage in names for name, _ in groups[stage]}
    for name, parameter in model.named_parameters():
        if name in thawed:
            parameter.requires_grad_(True)
    for module in _modules_of(model, thawed):
        _set_batchnorm_frozen(module, False)
    return model


def freeze_up_to(model: Backbone, stage: str | int, *, batchnorm: bool = True) -> Backbone:
    """Freeze every stage up to and including ``stage`` (the early, generic ones), train the rest."""
    names = list(stage_groups(model))
    last = names.index(_select(model, [stage])[0])
    return freeze(model, names[: last + 1], batchnorm=batchnorm)


def trainable_summary(model: Backbone) -> str:
    """One line per stage: trainable / total parameters, and whether its batch norms are frozen."""
    lines = []
    for stage, params in stage_groups(model).items():
        total = sum(p.numel() for _, p in params)
        trainable = sum(p.numel() for _, p in params if p.requires_grad)
        lines.append(f"{stage:<12} {trainable:>12,} / {total:>12,} trainable")
    return "\n".join(lines)


# --- discriminative learning rates ------------------------------------------------


def param_groups(
    model: Backbone,
    lr: float,
    *,
    decay: float = 0.5,
    weight_decay: float = 0.0,
    classifier_lr: float | None = None,
) -> list[dict]:
    """Optimizer parameter groups with one learning rate per stage (discriminative fine-tuning).

    The classifier gets ``classifier_lr`` (default ``lr``), the head ``lr``, the last stage
    ``lr * decay`` and each earlier stage ``decay`` times the rate of the next: with
    ``decay=0.5``, ResNet's five stages train at lr/32, lr/16, lr/8, lr/4 and lr/2.
    ``decay=1`` is plain fine-tuning. Frozen parameters are
    left out. With ``weight_decay``, biases and norm weights (1-D tensors) get none, as is
    usual. Each group carries a ``"name"`` for display; optimizers ignore it.
    """
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1] (the ratio of a stage's rate to the next one's), got {decay}")
    groups = stage_groups(model)
    names = list(groups)
    stages = [name for name in names if name not in (HEAD, CLASSIFIER)]
    rates = {CLASSIFIER: lr if classifier_lr is None else classifier_lr, HEAD: lr}
    for k, name in enumerate(reversed(stages), start=1):
        rates[name] = lr * decay**k
    result = []
    for name in names:
        params = [p for _, p in groups[name] if p.requires_grad]
        if not params:
            continue
        if weight_decay:
            decayed = [p for p in params if p.ndim > 1]
            plain = [p for p in params if p.ndim <= 1]
            result += [g for g in (
                {"name": name, "params": decayed, "lr": rates[name], "weight_decay": weight_decay},
                {"name": f"{name} (no decay)", "params": plain, "lr": rates[name], "weight_decay": 0.0},
            ) if g["params"]]
        else:
            result.append({"name": name, "params": params, "lr": rates[name]})
    if not result:
        raise ValueError("every parameter is frozen: unfreeze something (minibones.transfer.unfreeze) first")
    return result


# --- the experiment: linear probe vs fine-tuning vs from scratch ----------------------

RECIPES = ("linear_probe", "fine_tune", "from_scratch")  # the default comparison
ALL_RECIPES = RECIPES + ("discriminative",)


def class_subset(data: Data, classes, name: str | None = None) -> Data:
    """The images of ``classes`` only, relabelled 0..k-1: a new task from an old dataset.

    ``class_subset(digits, range(5))`` and ``class_subset(digits, range(5, 10))`` make a
    source task to pretrain on and a different target task to transfer to, offline.
    """
    classes = list(classes)
    if not isinstance(data.train, ImageTensors):
        raise TypeError("class_subset needs a dataset held in memory (digits, CIFAR); filter an ImageFolder by folder")

    def keep(split):
        mask = torch.isin(split.labels, torch.tensor(classes))
        remap = torch.full((int(split.labels.max()) + 1,), -1, dtype=torch.long)
        remap[torch.tensor(classes)] = torch.arange(len(classes))
        return ImageTensors(split.images[mask], remap[split.labels[mask]])

    label = name or f"{data.name}[{','.join(data.classes[c] for c in classes)}]"
    return replace(data, name=label, train=keep(data.train), test=keep(data.test),
                   classes=[data.classes[c] for c in classes])


class TransferResult:
    """The runs of :func:`transfer_experiment`: one :class:`~minibones.train.History` per recipe."""

    def __init__(self, model: str, source: str, target: str, runs: dict, trainable: dict, total: int):
        self.model, self.source, self.target = model, source, target
        self.histories = runs
        self.trainable = trainable
        self.total = total

    @property
    def rows(self) -> list[dict]:
        return [
            {
                "recipe": recipe,
                "trainable_params": self.trainable[recipe],
                "epochs": len(history),
                "final_test_acc": history.last["test_acc"],
                "best_test_acc": max(history["test_acc"]),
                "seconds": sum(history["seconds"]),
            }
            for recipe, history in self.histories.items()
        ]

    def table(self) -> str:
        lines = [f"{self.model}: source {self.source} -> target {self.target}", "",
                 "| recipe | trainable params | epochs | test accuracy (final) | best | seconds |",
                 "|---|---|---|---|---|---|"]
        for row in self.rows:
            lines.append(f"| {row['recipe']} | {row['trainable_params']:,} of {self.total:,} | {row['epochs']} "
                         f"| {row['final_test_acc']:.1%} | {row['best_test_acc']:.1%} | {row['seconds']:.1f} |")
        return "\n".join(lines)

    def plot(self, ax=None):
        """Test accuracy per epoch, one line per recipe."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
        for recipe, history in self.histories.items():
            ax.plot(history["epoch"], history["test_acc"], "o-", label=recipe.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"{self.model}: {self.source} -> {self.target}", fontsize=9)
        ax.legend()
        return ax.figure

    def __repr__(self) -> str:
        return self.table()


def transfer_experiment(
    model: str,
    target,
    *,
    source="imagenet",
    config=None,
    recipes: tuple[str, ...] = RECIPES,
    fine_tune_lr_scale: float = 0.1,
    stage_decay: float = 0.5,
    seed: int = 0,
) -> TransferResult:
    """Train ``model`` on ``target`` (a :class:`~minibones.data.Data`) three ways and compare.

    ``source`` is where the pretrained weights come from:
      * ``"imagenet"`` - the reference's published weights (:mod:`minibones.pretrained`; they
        must be in the cache or downloadable); the target is then normalised with their mean/std;
      * a ``Data`` - pretrain on it first with the same ``config`` (offline: a source task such
        as ``class_subset(digits, range(5))`` for the target ``class_subset(digits, range(5, 10))``);
      * a model - its weights, as they are.

    Every recipe trains with :func:`minibones.train.fit` for ``config.epochs`` epochs:
      * ``linear_probe``: :func:`freeze` everything but a new classifier, at ``config.lr``;
      * ``fine_tune``: everything, from the pretrained weights, at ``fine_tune_lr_scale * config.lr``
        (large steps would wreck the features the run is meant to reuse);
      * ``from_scratch``: the same network, randomly initialised, at ``config.lr``;
      * ``discriminative`` (not in the default list): everything, with one rate per stage
        (:func:`param_groups`): ``config.lr`` for the new classifier and the head, then
        ``stage_decay`` times less for each stage further from it (Howard & Ruder 2018).
    """
    unknown = set(recipes) - set(ALL_RECIPES)
    if unknown:
        raise ValueError(f"unknown recipes {sorted(unknown)}; choose from {ALL_RECIPES}")
    config = replace(config or TrainConfig(epochs=5), out=None)

    # the starting point
    if isinstance(source, str):
        if source != "imagenet":
            raise ValueError(f"source must be 'imagenet', a Data or a model, got {source!r}")
        seed_everything(seed)
        start = create_model(model, pretrained=True)
        preprocess = start.transforms
        target = replace(target, mean=tuple(preprocess.mean), std=tuple(preprocess.std))
        source_name = f"ImageNet ({start.pretrained_weights.source})"
    elif isinstance(source, Data):
        seed_everything(seed)
        start = create_model(model, num_classes=source.num_classes)
        if config.verbose:
            print(f"pretraining {model} on {source.name}")
        fit(start, source, config)
        source_name = source.name
    elif isinstance(source, nn.Module):
        start, source_name = source, f"given {type(source).__name__}"
    else:
        raise TypeError(f"source must be 'imagenet', a Data or a model, got {type(source).__name__}")

    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    base_lr = config.resolved(device).lr  # the optimizer's default when config.lr is None
    runs, trainable, total = {}, {}, 0
    for recipe in recipes:
        seed_everything(seed)
        if recipe == "from_scratch":
            net = create_model(model, num_classes=target.num_classes)
        else:
            net = copy.deepcopy(start)
            unfreeze(net)
            net.reset_classifier(target.num_classes)
            if recipe == "linear_probe":
                freeze(net)
        lr = base_lr * fine_tune_lr_scale if recipe == "fine_tune" else base_lr
        groups = param_groups(net, lr, decay=stage_decay, weight_decay=config.weight_decay) \
            if recipe == "discriminative" else None
        trainable[recipe] = sum(p.numel() for p in net.parameters() if p.requires_grad)
        total = sum(p.numel() for p in net.parameters())
        if config.verbose:
            rates = f"lr {lr:.3g}" if groups is None else f"lr {min(g['lr'] for g in groups):.3g} to {lr:.3g} by stage"
            print(f"{recipe}: {trainable[recipe]:,} of {total:,} parameters trained, {rates}")
        runs[recipe] = fit(net, target, replace(config, lr=lr), param_groups=groups)
        del net
    return TransferResult(model, source_name, target.name, runs, trainable, total)


# --- label efficiency: what pretrained features buy, per labelled image ---------------


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
    was_training = model.training
    model.eval()
    x = torch.randn(2, 3, 64, 64, device=next(model.parameters()).device)
    features, expected = top[:-1](trunk(x)), model.forward_features(x)  # before the classifier, which may be zero
    same = features.shape == expected.shape and torch.allclose(features, expected, atol=1e-5)
    same = same and torch.allclose(top(trunk(x)), model(x), atol=1e-5)
    model.train(was_training)
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
    """Measure every batch norm's running statistics on ``inputs`` (one pass, averaged over all
    of them); no weight changes. Returns ``model`` in eval mode.

    Why: a randomly initialised network is the control that separates what pretraining
    bought from what the architecture gives for free. But with batch norm at its initial
    statistics (mean 0, variance 1) a random network's activations shrink or grow block
    after block, and its features end up nearly constant: a probe on them would measure the
    initialisation, not the architecture. With statistics measured on the task's images,
    every normalised layer is back at zero mean and unit variance, the strongest baseline
    that trains no weight. Only the batch norms run in training mode (dropout and stochastic
    depth stay off, so they cannot bias the statistics).
    """
    norms = [m for m in model.modules() if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)]
    if not norms:
        raise ValueError(f"{type(model).__name__} has no (unfrozen) batch norm whose statistics could be measured")
    momenta = [m.momentum for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches, not an exponential one
        norm.train()
    try:
        for batch in inputs.split(batch_size):
            model(batch)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Fraction of ``inputs`` whose most probable class is the label (eval mode)."""
    was_training = model.training
    model.eval()
    predicted = torch.cat([model(batch).argmax(-1) for batch in inputs.split(batch_size)])
    model.train(was_training)
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
        loss = F.cross_entropy(model(inputs[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if test is not None and step in checkpoints:
            curve[step] = accuracy(model, *test)
            model.train()
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
