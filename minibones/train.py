"""Training: one small loop for the notebooks, the command line and ``torchrun``.

    >>> data = load_data("digits")
    >>> model = create_model("resnet20", num_classes=data.num_classes)
    >>> history = fit(model, data, TrainConfig(epochs=5, out="runs/r20"))
    >>> history.plot()

What the loop does, in the order you meet it in :func:`fit`:
  * SGD with Nesterov momentum or AdamW, with no weight decay on norm weights and
    biases (decaying a BN scale only fights the next layer, Goyal et al. 2017 sec. 3);
  * a warm-up, then a one-cycle (Smith & Topin 2017) or cosine schedule, stepped
    every batch; label smoothing (Szegedy et al. 2016, sec. 7);
  * on a GPU by default: bf16 autocast, ``channels_last``; ``torch.compile`` on request;
  * a progress bar (tqdm: a widget in JupyterLab, text in a terminal) and one
    :class:`History` row per epoch (loss, accuracy, learning rate, images/s);
  * nothing lost: a checkpoint after every epoch (model, optimizer, schedule,
    grad scaler and every RNG), written to a temporary file and renamed, from which
    a run resumes exactly where it stopped; a NaN or infinite loss stops the run
    with an error and leaves the last good checkpoint alone; Ctrl-C finishes the
    current step, saves, and stops;
  * under ``torchrun --nproc_per_node=N``: DistributedDataParallel, each process
    training on its slice of every batch, metrics summed across processes, only
    rank 0 writing files.

The host waits for the device only every ``log_every`` steps (to read the running
loss, check it is finite, and agree on stopping), so the GPU is not starved by
per-step ``.item()`` calls.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from minibones.data import Data, load_data

CHECKPOINT = "last.pt"
HISTORY = "history.json"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message says where and what to try."""


@dataclass
class TrainConfig:
    """Everything that decides a training run. ``None`` means "the usual choice for this device/optimizer"."""

    epochs: int = 10
    batch_size: int = 128  # global: split across processes under torchrun
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    lr: float | None = None  # peak learning rate; default 0.1 for SGD, 1e-3 for AdamW
    momentum: float = 0.9
    weight_decay: float | None = None  # default 5e-4 for SGD, 0.05 for AdamW; never on norms and biases
    schedule: str = "onecycle"  # "onecycle", "cosine" (both after a linear warm-up) or "constant"
    warmup: float = 0.15  # fraction of all steps spent warming up
    label_smoothing: float = 0.0
    amp: bool | None = None  # bf16 autocast; default: on for CUDA
    channels_last: bool | None = None  # default: on for CUDA
    compile: bool = False  # torch.compile the model (minutes of compilation on a CPU)
    device: str | None = None  # default: cuda if available, else cpu
    seed: int = 0
    workers: int | None = None  # DataLoader workers for image folders
    out: str | None = None  # folder for the checkpoint and history.json; None: keep nothing on disk
    resume: bool = True  # continue from out/last.pt when it exists
    log_every: int = 10  # steps between host-device syncs (progress bar, NaN check, Ctrl-C agreement)
    progress: bool = True  # tqdm progress bars
    verbose: bool = True  # one printed line per epoch

    def resolved(self, device: torch.device) -> TrainConfig:
        """The same config with every ``None`` replaced by what it means on ``device``."""
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ValueError(f"schedule must be 'onecycle', 'cosine' or 'constant', got {self.schedule!r}")
        if not 0 < self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the run, between 0 and 1 (exclusive); got {self.warmup}")
        sgd = self.optimizer == "sgd"
        cuda = device.type == "cuda"
        return replace(
            self,
            lr=self.lr if self.lr is not None else (0.1 if sgd else 1e-3),
            weight_decay=self.weight_decay if self.weight_decay is not None else (5e-4 if sgd else 0.05),
            amp=cuda if self.amp is None else self.amp,
            channels_last=cuda if self.channels_last is None else self.channels_last,
            device=str(device),
        )


# Fields that do not change the numbers a run produces: a run may resume with other values.
_RESUMABLE_CHANGES = {"out", "resume", "log_every", "progress", "verbose", "device", "compile", "workers"}


@dataclass
class History:
    """One row per epoch: ``epoch, train_loss, train_acc, test_loss, test_acc, lr, images_per_s, seconds``."""

    rows: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, column: str) -> list:
        return [row[column] for row in self.rows]

    @property
    def last(self) -> dict:
        return self.rows[-1] if self.rows else {}

    def plot(self, axes=None):
        """Loss and accuracy per epoch, train and test, side by side. Returns the figure."""
        import matplotlib.pyplot as plt

        if axes is None:
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
        else:
            fig = axes[0].figure
        epochs = self["epoch"]
        for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
            ax.plot(epochs, self[f"train_{metric}"], "o-", label="train")
            ax.plot(epochs, self[f"test_{metric}"], "o-", label="test")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.legend()
        axes[1].set_ylim(0, 1)
        return fig

    def __repr__(self) -> str:
        if not self.rows:
            return "History(empty)"
        last = self.last
        return (f"History({len(self)} epochs; last: train loss {last['train_loss']:.3f}, "
                f"test acc {last['test_acc']:.1%})")


@dataclass
class StepInfo:
    """What a callback sees after every optimizer step (``loss`` stays on the device: no sync)."""

    epoch: int  # 0-based
    batch: int  # batches done in this epoch
    step: int  # optimizer steps done in the whole run
    loss: Tensor
    model: nn.Module
    optimizer: torch.optim.Optimizer


# --- seeding and the random state ------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every generator's state, as tensors and numbers only, so that checkpoints load
    with ``torch.load(weights_only=True)`` (which refuses arbitrary pickled objects)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss"]))


# --- processes: one, or several under torchrun -----------------------------------------


def init_distributed() -> bool:
    """Join the process group when launched by ``torchrun`` (it sets ``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK`` and the rendezvous address). NCCL on GPUs, gloo on CPUs.
    Returns True if this call created the group (the caller then destroys it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


# --- optimizer and schedule -------------------------------------------------------------


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


# --- checkpoints -----------------------------------------------------------------------


def save_atomically(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash
    mid-write leaves the previous file intact, never a truncated one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json_atomically(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by :func:`fit`, loaded safely (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Put the weights of a :func:`fit` checkpoint into ``model``."""
    model.load_state_dict(load_checkpoint(path)["model"])
    return model


# --- Ctrl-C -----------------------------------------------------------------------------


class GracefulInterrupt:
    """While active, the first Ctrl-C (or SIGTERM) only *asks* the loop to stop: it
    finishes the step, saves a checkpoint and raises KeyboardInterrupt. A second
    Ctrl-C stops at once. (Signal handlers can only be set from the main thread;
    elsewhere Ctrl-C arrives as a KeyboardInterrupt, which is also caught.)"""

    def __init__(self):
        self.requested = False
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step to save a checkpoint (Ctrl-C again to stop at once)", flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# --- the loop ---------------------------------------------------------------------------


@dataclass
class _Position:
    """Where the run is: ``batch`` batches of ``epoch`` done, ``step`` optimizer steps in all."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


def fit(
    model: nn.Module,
    data: Data | tuple,
    config: TrainConfig | None = None,
    *,
    param_groups: list[dict] | None = None,
    callbacks: list[Callable[[StepInfo], None]] = (),
) -> History:
    """Train ``model`` on ``data`` and return its :class:`History`.

    ``data`` is a :class:`~minibones.data.Data` (loaders are built here, on the right
    device, sharded under torchrun) or a ``(train_loader, test_loader)`` pair of
    iterables of ``(images, labels)``; a loader with ``set_epoch`` gets the epoch
    number, so that its order depends on the epoch alone.

    With ``config.out`` set, ``out/last.pt`` is rewritten after every epoch and
    ``out/history.json`` holds the rows so far; if ``last.pt`` is already there (and
    ``resume``), training continues from it, and the result is identical to a run
    that was never stopped (exactly, on the CPU). ``callbacks`` are called after
    every optimizer step with a :class:`StepInfo`. ``param_groups`` replaces the default
    optimizer groups, for example one learning rate per stage from
    :func:`minibones.transfer.param_groups`.
    """
    config = config or TrainConfig()
    rank, world_size = rank_and_world_size()
    main = rank == 0
    device = torch.device(config.device) if config.device else default_device()
    config = config.resolved(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

    model.to(device, memory_format=memory_format)
    if world_size > 1 and device.type == "cuda":  # batch statistics over the global batch (GPU only in torch)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(data, Data):
        train_loader, test_loader = data.loaders(config.batch_size, device, seed=config.seed, workers=config.workers,
                                                 channels_last=config.channels_last)
    else:
        train_loader, test_loader = data
    steps_per_epoch = len(train_loader)
    optimizer = make_optimizer(model, config, param_groups)
    scheduler = make_scheduler(optimizer, config, config.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling; kept for checkpoints
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    identity = {"model": getattr(getattr(model, "config", None), "name", type(model).__name__),
                "data": data.name if isinstance(data, Data) else "custom loaders"}
    out = Path(config.out) if config.out else None
    checkpoint_path = out / CHECKPOINT if out else None
    history, position = History(), _Position()
    running = torch.zeros(3, device=device)  # sum of losses, correct predictions, images: this epoch, this process
    epoch_rng = None
    images_before = 0.0  # images of the current epoch trained before a resume (not timed here)
    if checkpoint_path and config.resume and checkpoint_path.is_file():
        saved = load_checkpoint(checkpoint_path)
        _check_compatible(saved, config, identity, checkpoint_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        history = History(saved["history"])
        position = _Position(**saved["position"])
        mine = rank if len(saved["rng"]) == world_size else 0
        set_rng_state(saved["rng"][mine])
        epoch_rng = saved["epoch_rng"][mine]
        if main:  # the partial sums of an interrupted epoch are global: rank 0 carries them
            running = saved["running"].to(device)
        images_before = float(saved["running"][2])
        if main and config.verbose:
            done = f"{position.batch} batches of epoch {position.epoch + 1}" if position.batch else \
                f"epoch {position.epoch} of {config.epochs}"
            print(f"resuming from {checkpoint_path}, written after {done}")
    else:
        seed_everything(config.seed + rank)  # different dropout masks per process

    net = model
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    train_net = torch.compile(net) if config.compile else net
    eval_net = torch.compile(model) if config.compile else model  # not DDP: test shards may differ in length

    def checkpoint(reason: str) -> None:
        """Rank 0 writes; every process first contributes its random state."""
        states = [None] * world_size
        if world_size > 1:
            dist.all_gather_object(states, (rng_state(), epoch_rng))
        else:
            states = [(rng_state(), epoch_rng)]
        totals = running.clone()
        if world_size > 1:  # an interrupted epoch's partial sums, over all processes
            dist.all_reduce(totals)
        if main and checkpoint_path:
            save_atomically({
                "format": 1, "reason": reason, "config": asdict(config), "identity": identity,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": [s[0] for s in states], "epoch_rng": [s[1] for s in states],
                "position": asdict(position), "running": totals.cpu(), "history": history.rows,
            }, checkpoint_path)
            _write_json_atomically({"config": asdict(config), "identity": identity, "history": history.rows},
                                   out / HISTORY)
        if world_size > 1:
            dist.barrier()

    def sync(stop_requested: bool) -> tuple[list[float], bool]:
        """Wait for the device: the epoch's running sums over all processes, and whether any wants to stop."""
        totals = torch.cat([running, torch.tensor([float(stop_requested)], device=device)])
        if world_size > 1:
            dist.all_reduce(totals)
        loss_sum, correct, seen, stop = totals.tolist()
        if not math.isfinite(loss_sum):
            kept = f"the last good checkpoint, {checkpoint_path}, was left as it was" if checkpoint_path and \
                checkpoint_path.is_file() else "no checkpoint was written"
            raise NonFiniteLossError(
                f"the training loss became {loss_sum / max(seen, 1)} in epoch {position.epoch + 1} (seen at batch "
                f"{position.batch} of {steps_per_epoch}, learning rate {current_lr(optimizer):.3g}). "
                f"Training stopped and {kept}. "
                "Try a lower learning rate or a longer warm-up, turn AMP off, or check the inputs for NaNs."
            )
        return [loss_sum, correct, seen], stop > 0

    bar = None
    with GracefulInterrupt() as interrupt:
        try:
            for epoch in range(position.epoch, config.epochs):
                position.epoch = epoch
                if hasattr(train_loader, "set_epoch"):
                    train_loader.set_epoch(epoch)
                if position.batch == 0:
                    epoch_rng = rng_state()  # before iter(): a DataLoader draws its shuffling seed there
                batches = _batches(train_loader, position.batch, epoch_rng)
                net.train()
                start = time.perf_counter()
                bar = tqdm(total=steps_per_epoch, initial=position.batch, desc=f"epoch {epoch + 1}/{config.epochs}",
                           disable=not (config.progress and main), leave=False, dynamic_ncols=True)
                for images, labels in batches:
                    images = images.to(device, non_blocking=True, memory_format=memory_format)
                    labels = labels.to(device, non_blocking=True)
                    with autocast:
                        logits = train_net(images)
                        loss = loss_fn(logits.float(), labels)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    n = labels.shape[0]
                    running += torch.stack([loss.detach() * n, (logits.argmax(1) == labels).sum(), loss.new_tensor(n)])
                    position.batch += 1
                    position.step += 1
                    bar.update()
                    for callback in callbacks:
                        callback(StepInfo(epoch, position.batch, position.step, loss.detach(), model, optimizer))
                    # every process syncs at the same steps; a lone process may also stop at once
                    if position.batch % config.log_every == 0 or (interrupt.requested and world_size == 1):
                        totals, stop = sync(interrupt.requested)
                        bar.set_postfix(loss=f"{totals[0] / totals[2]:.3f}", acc=f"{totals[1] / totals[2]:.1%}",
                                        lr=f"{current_lr(optimizer):.3g}", refresh=False)
                        if stop:
                            raise _StopRequested
                totals, stop = sync(interrupt.requested)  # the whole epoch, all processes
                bar.close()
                seconds = time.perf_counter() - start
                test_loss, test_acc = evaluate(eval_net, test_loader, loss_fn, autocast, device, memory_format)
                history.rows.append({
                    "epoch": epoch + 1, "train_loss": totals[0] / totals[2], "train_acc": totals[1] / totals[2],
                    "test_loss": test_loss, "test_acc": test_acc, "lr": current_lr(optimizer),
                    "images_per_s": (totals[2] - images_before) / seconds, "seconds": seconds,
                })
                images_before = 0.0
                if main and config.verbose:
                    _print_row(history.last, config.epochs)
                position.epoch, position.batch = epoch + 1, 0
                running.zero_()
                checkpoint("epoch")
                if stop:
                    raise _StopRequested
        except KeyboardInterrupt as error:
            if bar is not None:
                bar.close()
            # all processes agreed to stop (or there is only one): save where we are
            if checkpoint_path and (world_size == 1 or isinstance(error, _StopRequested)):
                checkpoint("interrupted")
                if main:
                    print(f"interrupted in epoch {position.epoch + 1} after {position.batch} batches; saved "
                          f"{checkpoint_path}; run again with the same out folder to resume", flush=True)
            raise
    return history


class _StopRequested(KeyboardInterrupt):
    """Raised by every process at the same step once one of them got Ctrl-C."""


def _batches(loader, skip: int, epoch_rng: dict | None):
    """An iterator over ``loader``, past the first ``skip`` batches.

    Resuming mid-epoch must see the same batches in the same order as the
    interrupted run: the loader's order was drawn when the epoch started, so the
    random state of that moment is put back while the iterator is made and the
    done batches are replayed (read, not trained on), then the current state returns.
    """
    if skip == 0:
        return iter(loader)
    now = rng_state()
    set_rng_state(epoch_rng)
    batches = iter(loader)
    for _ in range(skip):
        next(batches)
    set_rng_state(now)
    return batches


@torch.no_grad()
def evaluate(model: nn.Module, loader, loss_fn=None, autocast=None, device=None,
             memory_format=torch.contiguous_format) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``loader``, summed over all processes."""
    device = device or next(model.parameters()).device
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    autocast = autocast or torch.autocast(device.type, enabled=False)
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, device=device)
    for images, labels in loader:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with autocast:
            logits = model(images).float()
        n = labels.shape[0]
        sums += torch.stack([loss_fn(logits, labels) * n, (logits.argmax(1) == labels).sum(), sums.new_tensor(n)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    model.train(was_training)
    loss_sum, correct, seen = sums.tolist()
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def _check_compatible(saved: dict, config: TrainConfig, identity: dict, path: Path) -> None:
    """A checkpoint continues only the run that wrote it."""
    if saved.get("identity") != identity:
        raise ValueError(f"{path} was written training {saved.get('identity')}, not {identity}; "
                         "choose another out folder, or resume=False to start over there")
    before = saved["config"]
    now = asdict(config)
    changed = [f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in now
               if k not in _RESUMABLE_CHANGES and before.get(k) != now[k]]
    if changed:
        raise ValueError(f"{path} belongs to a run with other settings ({'; '.join(changed)}), which would not "
                         "continue it exactly (the schedule depends on the epochs). Use another out folder, or "
                         "resume=False (--no-resume) to start over in this one.")


def _print_row(row: dict, epochs: int) -> None:
    print(f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.3f} acc {row['train_acc']:6.1%}  "
          f"test loss {row['test_loss']:.3f} acc {row['test_acc']:6.1%}  lr {row['lr']:.3g}  "
          f"{row['images_per_s']:.0f} img/s  {row['seconds']:.1f} s", flush=True)


# --- the entry point of the command line and torchrun ----------------------------------


def build_model(spec: str, num_classes: int) -> nn.Module:
    """A registered name (``resnet18``) or your own builder as ``module:function``
    (``mymodels:tiny_net``), called with ``num_classes``."""
    if ":" in spec:
        module, _, function = spec.partition(":")
        try:
            builder = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"cannot import {spec!r} ({error}); is the module's folder on PYTHONPATH?") from error
        return builder(num_classes=num_classes)
    from minibones import create_model

    return create_model(spec, num_classes=num_classes)


def train(
    model: str,
    data: str = "digits",
    config: TrainConfig | None = None,
    *,
    root: str | Path | None = None,
    download: bool = True,
    fallback: bool = True,
    image_size: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
) -> tuple[nn.Module, History]:
    """Build ``model`` for ``data`` and :func:`fit` it: what ``python -m minibones train``
    runs, in one process or in each of the processes ``torchrun`` starts."""
    config = config or TrainConfig()
    created_group = init_distributed()
    try:
        rank, world_size = rank_and_world_size()
        if rank != 0:  # rank 0 downloads first; the others then read its copy
            dist.barrier()
        dataset = load_data(data, root, download=download and rank == 0, fallback=fallback, image_size=image_size,
                            verbose=rank == 0)
        if rank == 0 and world_size > 1:
            dist.barrier()
        dataset = dataset.subset(train_size, test_size)
        seed_everything(config.seed)  # the same initial weights in every process (DDP also broadcasts them)
        net = build_model(model, dataset.num_classes)
        history = fit(net, dataset, config)
        return net, history
    finally:
        if created_group:
            dist.destroy_process_group()


__all__ = [
    "History", "NonFiniteLossError", "StepInfo", "TrainConfig", "build_model", "evaluate", "fit",
    "load_checkpoint", "load_weights", "seed_everything", "train",
]
