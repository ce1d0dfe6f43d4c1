"""The experiment: linear probe, fine-tuning and training from scratch, on one dataset.

:func:`transfer_experiment` trains one model three ways with :func:`minibones.train.fit`
and returns a :class:`TransferResult` (a table and a plot); :func:`class_subset` makes a
source and a target task from one dataset, offline.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from minibones.checkpoint import seed_everything
from minibones.data import Data, ImageTensors
from minibones.registry import create_model
from minibones.train import TrainConfig, fit
from minibones.transfer.stages import freeze, param_groups, unfreeze

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
    start, target, source_name = _starting_point(model, source, target, config, seed)
    base_lr = config.resolved(torch.device("cpu")).lr  # the optimizer's default when config.lr is None
    runs, trainable, total = {}, {}, 0
    for recipe in recipes:
        seed_everything(seed)
        net = _network_for(recipe, model, start, target.num_classes)
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


def _starting_point(model: str, source, target: Data, config: TrainConfig, seed: int) -> tuple[nn.Module, Data, str]:
    """The pretrained network the recipes start from, the target (normalised as the
    pretrained weights expect), and the name of the source."""
    if isinstance(source, str):
        if source != "imagenet":
            raise ValueError(f"source must be 'imagenet', a Data or a model, got {source!r}")
        seed_everything(seed)
        start = create_model(model, pretrained=True)
        preprocess = start.transforms
        target = replace(target, mean=tuple(preprocess.mean), std=tuple(preprocess.std))
        return start, target, f"ImageNet ({start.pretrained_weights.source})"
    if isinstance(source, Data):
        seed_everything(seed)
        start = create_model(model, num_classes=source.num_classes)
        if config.verbose:
            print(f"pretraining {model} on {source.name}")
        fit(start, source, config)
        return start, target, source.name
    if isinstance(source, nn.Module):
        return source, target, f"given {type(source).__name__}"
    raise TypeError(f"source must be 'imagenet', a Data or a model, got {type(source).__name__}")


def _network_for(recipe: str, model: str, start: nn.Module, num_classes: int) -> nn.Module:
    """A fresh network for ``recipe``: random weights from scratch, else a copy of ``start``
    with a new classifier (and everything else frozen for a linear probe)."""
    if recipe == "from_scratch":
        return create_model(model, num_classes=num_classes)
    net = copy.deepcopy(start)
    unfreeze(net)
    net.reset_classifier(num_classes)
    if recipe == "linear_probe":
        freeze(net)
    return net

__all__ = ["ALL_RECIPES", "RECIPES", "TransferResult", "class_subset", "transfer_experiment"]
