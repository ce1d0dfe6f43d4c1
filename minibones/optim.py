"""Optimizers and learning-rate schedules, and the one optimizer step every loop takes.

* SGD with Nesterov momentum or AdamW, with no weight decay on norm weights and biases
  (decaying a BN scale only fights the next layer, Goyal et al. 2017 sec. 3):
  :func:`parameter_groups`, :func:`make_optimizer`;
* a warm-up, then a one-cycle (Smith & Topin 2017) or cosine schedule, stepped every
  batch: :func:`make_scheduler`;
* :func:`optimizer_step`, shared by :func:`minibones.train.fit`, the short runs of the
  dense tasks and :func:`minibones.transfer.train_steps`, and :func:`adamw_one_cycle`, the
  optimizer and schedule of the short runs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from minibones.train import TrainConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv and linear weights only: not on biases, norm scales and
    shifts (1-D), nor on what a model lists in ``no_weight_decay()`` (ViT's position
    embedding and class token)."""
    exempt = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name in exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainConfig, groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or AdamW over ``groups`` (default: :func:`parameter_groups`).

    A group with its own ``"lr"`` keeps it (and the schedule scales it like the others):
    that is how discriminative fine-tuning gives each stage its own rate.
    """
    groups = groups if groups is not None else parameter_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate to report: the largest of the groups' (with one rate per stage, the
    head's; otherwise every group has the same)."""
    return max(group["lr"] for group in optimizer.param_groups)


def make_scheduler(optimizer, config: TrainConfig, total_steps: int):
    """Per-step learning rate. One-cycle: up from lr/25 during the warm-up, then a
    cosine down to ~0, with momentum cycling the other way. Cosine: linear warm-up
    from 0, then a cosine to 0. Constant: lr throughout."""
    warmup = max(1, round(config.warmup * total_steps))
    if config.schedule == "onecycle":
        if total_steps < 4:
            raise ValueError(f"a one-cycle schedule needs at least 4 steps, this run has {total_steps}; "
                             "train longer or use schedule='constant'")
        warmup = min(max(2, warmup), total_steps - 2)  # torch's OneCycleLR needs two steps in each phase
        peaks = [group["lr"] for group in optimizer.param_groups]  # config.lr unless a group has its own
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peaks, total_steps=total_steps, pct_start=warmup / total_steps
        )
    if config.schedule == "cosine":

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def adamw_one_cycle(model: nn.Module, lr: float, weight_decay: float, total_steps: int):
    """AdamW on every trainable parameter (weight decay on all of them) and a one-cycle
    schedule that warms up for the first 20% of ``total_steps``: the short runs of the
    segmenter and the detector, which train a few epochs from a fresh head."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.2)
    return optimizer, scheduler


def optimizer_step(loss: Tensor, optimizer: torch.optim.Optimizer, scheduler) -> None:
    """One step: gradients of ``loss`` (the previous ones dropped), the update, the next rate."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()


__all__ = ["adamw_one_cycle", "current_lr", "make_optimizer", "make_scheduler", "optimizer_step", "parameter_groups"]
