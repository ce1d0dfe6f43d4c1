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
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import replace

import torch
from torch import nn

from minibones.backbone import Backbone
from minibones.data import Data, ImageTensors
from minibones.registry import create_model
from minibones.train import TrainConfig, fit, seed_everything

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
