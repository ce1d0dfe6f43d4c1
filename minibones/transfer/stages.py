"""Which parameter belongs to which stage, and what to do with a stage: freeze it, train it
again, or give it its own learning rate.

The stages come from the model's ``feature_info``, so every helper here works for every
family: :func:`stage_groups` splits the parameters by stage, :func:`freeze` and
:func:`unfreeze` switch stages off and on (gradual unfreezing is a loop over stages), and
:func:`param_groups` gives the optimizer one learning rate per stage.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from minibones.backbone import Backbone

HEAD, CLASSIFIER = "head", "classifier"


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
    """One line per stage: its trainable and its total parameters."""
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


__all__ = ["CLASSIFIER", "HEAD", "FrozenBatchNorm2d", "freeze", "freeze_up_to", "param_groups", "stage_groups",
           "trainable_summary", "unfreeze"]
