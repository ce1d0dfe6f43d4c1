"""Training: one small loop for the notebooks, the command line and ``torchrun``.

    >>> data = load_data("digits")
    >>> model = create_model("resnet20", num_classes=data.num_classes)
    >>> history = fit(model, data, TrainConfig(epochs=5, out="runs/r20"))
    >>> history.plot()

What the loop does, in the order you meet it in :func:`fit`:
  * SGD with Nesterov momentum or AdamW, with no weight decay on norm weights and
    biases, a warm-up, then a one-cycle or cosine schedule stepped every batch
    (:mod:`minibones.optim`); label smoothing (Szegedy et al. 2016, sec. 7);
  * on a GPU by default: bf16 autocast (bf16 has float32's range of exponents, so unlike
    float16 it needs no loss scaling), ``channels_last``; ``torch.compile`` on request;
  * a progress bar (tqdm: a widget in JupyterLab, text in a terminal) and one
    :class:`History` row per epoch (loss, accuracy, learning rate, images/s);
  * nothing lost: a checkpoint after every epoch (model, optimizer, schedule and every
    RNG, :mod:`minibones.checkpoint`), written atomically, from which a run resumes
    exactly where it stopped; a NaN or infinite loss stops the run with an error and
    leaves the last good checkpoint alone; Ctrl-C finishes the current step, saves, and stops;
  * under ``torchrun --nproc_per_node=N``: DistributedDataParallel, each process
    training on its slice of every batch, metrics summed across processes, only
    rank 0 writing files (:mod:`minibones.distributed`).

The host waits for the device only every ``log_every`` steps (to read the running
loss, check it is finite, and agree on stopping), so the GPU is not starved by
per-step ``.item()`` calls.

:func:`train_briefly` is the other loop: the few epochs of the dense tasks (segmentation,
detection), whose losses and metrics are not a classifier's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from minibones.backbone import mode
from minibones.checkpoint import (
    CHECKPOINT, Position, check_compatible, load_checkpoint, resume_batches, rng_state, save_checkpoint,
    seed_everything, set_rng_state,
)
from minibones.data import Data
from minibones.distributed import (
    GracefulInterrupt, StopRequested, barrier, default_device, gather_from_processes, rank_and_world_size,
    sum_across_processes,
)
from minibones.optim import adamw_one_cycle, current_lr, make_optimizer, make_scheduler, optimizer_step


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

    def plot(self, title: str | None = None, axes=None):
        """Loss and accuracy per epoch, as ``fit`` measured them: train averaged during the epoch,
        test after it. Loss on a log scale (an early spike would otherwise flatten every later
        epoch), accuracy in percent from 0 to 100, whole epochs on the x axis. Returns the figure."""
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

        if axes is None:
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
        else:
            fig = axes[0].figure
        left, right = axes
        epochs = self["epoch"]
        for split, style in (("train", "o-"), ("test", "s-")):
            left.plot(epochs, self[f"{split}_loss"], style, label=split)
            right.plot(epochs, [100 * a for a in self[f"{split}_acc"]], style, label=split)
        left.set_yscale("log")
        # ticks at 1, 2 and 5 times each power of ten, written as plain numbers (0.2, 0.5, 1):
        # a loss that spans less than a decade still gets a readable scale
        left.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        left.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        left.yaxis.set_minor_formatter(NullFormatter())
        left.set_ylabel("cross-entropy, nats/image (log)")
        right.set_ylabel("accuracy (%)")
        right.set_ylim(0, 100)
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, not crowded on long runs
            ax.grid(alpha=0.3)
        left.legend(loc="upper right")
        right.legend(loc="lower right")
        if title:
            fig.suptitle(title)
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


# --- the loop ---------------------------------------------------------------------------


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
    run, (train_loader, test_loader) = _Run.start(model, data, config or TrainConfig(), param_groups)
    run.resume_or_seed()
    config, model = run.config, run.model
    net = model
    if run.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[run.device.index] if run.device.type == "cuda"
                                                  else None)
    train_net = torch.compile(net) if config.compile else net
    eval_net = torch.compile(model) if config.compile else model  # not DDP: test shards may differ in length

    with GracefulInterrupt() as interrupt:
        try:
            for epoch in range(run.position.epoch, config.epochs):
                run.position.epoch = epoch
                totals, stop, seconds = run.train_epoch(train_net, train_loader, interrupt, callbacks)
                test_loss, test_acc = evaluate(eval_net, test_loader, run.loss_fn, run.autocast, run.device,
                                               run.memory_format)
                run.end_epoch(totals, seconds, test_loss, test_acc)
                if stop:
                    raise StopRequested
        except KeyboardInterrupt as error:
            run.save_on_interrupt(error)
            raise
    return run.history


@dataclass
class _Run:
    """One call of :func:`fit`: what it trains and how (set once), and where it is (saved in
    every checkpoint, so that a resumed run goes on from exactly there)."""

    config: TrainConfig  # resolved for the device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    identity: dict  # what is trained on what: a checkpoint resumes only the same
    steps_per_epoch: int
    history: History = field(default_factory=History)
    position: Position = field(default_factory=Position)
    running: Tensor | None = None  # sum of losses, correct predictions, images: this epoch, this process
    epoch_rng: dict | None = None  # the random state when this epoch began (its loader's order)
    images_before: float = 0.0  # images of this epoch trained before a resume (not timed here)
    mid_step: bool = False  # between a step's first and last line: its state is half updated

    def __post_init__(self):
        self.rank, self.world_size = rank_and_world_size()
        self.memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=self.config.label_smoothing)
        if self.running is None:
            self.running = torch.zeros(3, device=self.device)

    @classmethod
    def start(cls, model: nn.Module, data: Data | tuple, config: TrainConfig, param_groups) -> tuple[_Run, tuple]:
        """The model on its device, the loaders, the optimizer and the schedule."""
        device = torch.device(config.device) if config.device else default_device()
        config = config.resolved(device)
        model.to(device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
        if rank_and_world_size()[1] > 1 and device.type == "cuda":  # batch statistics over the global batch
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # (on GPUs only, in torch)
        if isinstance(data, Data):
            loaders = data.loaders(config.batch_size, device, seed=config.seed, workers=config.workers,
                                   channels_last=config.channels_last)
        else:
            loaders = data
        optimizer = make_optimizer(model, config, param_groups)
        scheduler = make_scheduler(optimizer, config, config.epochs * len(loaders[0]))
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        identity = {"model": getattr(getattr(model, "config", None), "name", type(model).__name__),
                    "data": data.name if isinstance(data, Data) else "custom loaders"}
        return cls(config, model, optimizer, scheduler, device, identity, len(loaders[0])), loaders

    @property
    def path(self) -> Path | None:
        return Path(self.config.out) / CHECKPOINT if self.config.out else None

    def resume_or_seed(self) -> None:
        """Go on from the checkpoint in ``config.out`` if there is one (and ``config.resume``), else seed."""
        path = self.path
        if not (path and self.config.resume and path.is_file()):
            seed_everything(self.config.seed + self.rank)  # different dropout masks per process
            return
        saved = load_checkpoint(path)
        check_compatible(saved, self.config, self.identity, path)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.history, self.position = History(saved["history"]), Position(**saved["position"])
        mine = self.rank if len(saved["rng"]) == self.world_size else 0
        set_rng_state(saved["rng"][mine])
        self.epoch_rng = saved["epoch_rng"][mine]
        if self.rank == 0:  # the partial sums of an interrupted epoch are global: rank 0 carries them
            self.running = saved["running"].to(self.device)
        self.images_before = float(saved["running"][2])
        if self.rank == 0 and self.config.verbose:
            position = self.position
            done = f"{position.batch} batches of epoch {position.epoch + 1}" if position.batch else \
                f"epoch {position.epoch} of {self.config.epochs}"
            print(f"resuming from {path}, written after {done}")

    def train_epoch(self, net: nn.Module, loader, interrupt: GracefulInterrupt, callbacks) -> tuple[list, bool, float]:
        """Train on what is left of this epoch. Returns its sums over all processes (loss,
        correct, images), whether a process asked to stop, and the seconds it took."""
        config, position = self.config, self.position
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(position.epoch)
        if position.batch == 0:
            self.epoch_rng = rng_state()  # before iter(): a DataLoader draws its shuffling seed there
        batches = resume_batches(loader, position.batch, self.epoch_rng)
        net.train()
        start = time.perf_counter()
        desc, show = f"epoch {position.epoch + 1}/{config.epochs}", config.progress and self.rank == 0
        with tqdm(total=self.steps_per_epoch, initial=position.batch, desc=desc, disable=not show, leave=False,
                  dynamic_ncols=True) as bar:
            for images, labels in batches:
                loss = self.step(net, images, labels)
                bar.update()
                for callback in callbacks:
                    callback(StepInfo(position.epoch, position.batch, position.step, loss, self.model, self.optimizer))
                # every process syncs at the same steps; a lone process may also stop at once
                if position.batch % config.log_every == 0 or (interrupt.requested and self.world_size == 1):
                    (loss_sum, correct, seen), stop = self.sync(interrupt.requested)
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.1%}",
                                    lr=f"{current_lr(self.optimizer):.3g}", refresh=False)
                    if stop:
                        raise StopRequested
            totals, stop = self.sync(interrupt.requested)  # the whole epoch, all processes
        return totals, stop, time.perf_counter() - start

    def step(self, net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        """One optimizer step on a batch; its loss and accuracy join the epoch's sums on the device."""
        self.mid_step = True
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        labels = labels.to(self.device, non_blocking=True)
        with self.autocast:
            logits = net(images)
            loss = self.loss_fn(logits.float(), labels)
        optimizer_step(loss, self.optimizer, self.scheduler)
        n = labels.shape[0]
        self.running += torch.stack([loss.detach() * n, (logits.argmax(1) == labels).sum(), loss.new_tensor(n)])
        self.position.batch += 1
        self.position.step += 1
        self.mid_step = False
        return loss.detach()

    def sync(self, stop_requested: bool) -> tuple[list[float], bool]:
        """Wait for the device: the epoch's running sums over all processes, and whether any wants to stop."""
        stop = torch.tensor([float(stop_requested)], device=self.device)
        totals = sum_across_processes(torch.cat([self.running, stop]))
        loss_sum, correct, seen, stop = totals.tolist()
        if not math.isfinite(loss_sum):
            path = self.path
            kept = f"the last good checkpoint, {path}, was left as it was" if path and path.is_file() else \
                "no checkpoint was written"
            raise NonFiniteLossError(
                f"the training loss became {loss_sum / max(seen, 1)} in epoch {self.position.epoch + 1} (seen at "
                f"batch {self.position.batch} of {self.steps_per_epoch}, learning rate "
                f"{current_lr(self.optimizer):.3g}). Training stopped and {kept}. "
                "Try a lower learning rate or a longer warm-up, turn AMP off, or check the inputs for NaNs."
            )
        return [loss_sum, correct, seen], stop > 0

    def end_epoch(self, totals: list[float], seconds: float, test_loss: float, test_acc: float) -> None:
        """The epoch's row of the history, printed, and a checkpoint."""
        loss_sum, correct, seen = totals
        self.history.rows.append({
            "epoch": self.position.epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
            "test_loss": test_loss, "test_acc": test_acc, "lr": current_lr(self.optimizer),
            "images_per_s": (seen - self.images_before) / seconds, "seconds": seconds,
        })
        self.images_before = 0.0
        if self.rank == 0 and self.config.verbose:
            row = self.history.last
            print(f"epoch {row['epoch']:>3}/{self.config.epochs}  train loss {row['train_loss']:.3f} acc "
                  f"{row['train_acc']:6.1%}  test loss {row['test_loss']:.3f} acc {row['test_acc']:6.1%}  "
                  f"lr {row['lr']:.3g}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f} s", flush=True)
        self.position.epoch, self.position.batch = self.position.epoch + 1, 0
        self.running.zero_()
        self.save("epoch")

    def save(self, reason: str) -> None:
        """Rank 0 writes; every process first contributes its random state."""
        states = gather_from_processes((rng_state(), self.epoch_rng))
        totals = sum_across_processes(self.running.clone())  # an interrupted epoch's partial sums, over all processes
        if self.rank == 0 and self.path:
            config, rows = asdict(self.config), self.history.rows
            save_checkpoint(self.path, {
                "format": 2, "reason": reason, "config": config, "identity": self.identity,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": [s[0] for s in states], "epoch_rng": [s[1] for s in states],
                "position": asdict(self.position), "running": totals.cpu(), "history": rows,
            }, {"config": config, "identity": self.identity, "history": rows})
        barrier()

    def save_on_interrupt(self, error: KeyboardInterrupt) -> None:
        """Ctrl-C: once all processes agreed to stop (or there is only one), save where the run is.
        Not from inside a step (a second Ctrl-C stops at once): its weights may be updated and
        its position not yet, and a resumed run would train that batch twice."""
        if self.path and self.mid_step:
            if self.rank == 0:
                print(f"stopped inside a step: {self.path} was left as it was", flush=True)
        elif self.path and (self.world_size == 1 or isinstance(error, StopRequested)):
            self.save("interrupted")
            if self.rank == 0:
                print(f"interrupted in epoch {self.position.epoch + 1} after {self.position.batch} batches; saved "
                      f"{self.path}; run again with the same out folder to resume", flush=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader, loss_fn=None, autocast=None, device=None,
             memory_format=torch.contiguous_format) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``loader``, summed over all processes."""
    device = device or next(model.parameters()).device
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    autocast = autocast or torch.autocast(device.type, enabled=False)
    sums = torch.zeros(3, device=device)
    with mode(model, False):
        for images, labels in loader:
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            with autocast:
                logits = model(images).float()
            n = labels.shape[0]
            sums += torch.stack([loss_fn(logits, labels) * n, (logits.argmax(1) == labels).sum(), sums.new_tensor(n)])
    loss_sum, correct, seen = sum_across_processes(sums).tolist()
    return loss_sum / max(seen, 1), correct / max(seen, 1)


# --- the short loop of the dense tasks ------------------------------------------------------


def train_briefly(
    model: nn.Module,
    batches: Callable[[], Iterable],
    loss: Callable[[nn.Module, Tensor, object], tuple[Tensor, dict[str, Tensor]]],
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float,
    weight_decay: float,
    device: str | torch.device | None = None,
    test_metrics: Callable[[], dict] | None = None,
    evaluate_every: int = 1,
) -> list[dict]:
    """A few epochs of AdamW with a one-cycle schedule (:func:`minibones.optim.adamw_one_cycle`),
    for :func:`minibones.neck.train_segmenter` and :func:`minibones.detection.train_detector`.

    Every epoch iterates over ``batches()`` (pairs of inputs and targets, moved to ``device``).
    ``loss(model, inputs, targets)`` returns the loss to minimise and the terms to report:
    an epoch's record holds each term's mean over its images, and every ``evaluate_every``
    epochs and after the last, what ``test_metrics()`` returns. The sums stay on the device
    until the epoch ends (as in :func:`fit`, no step waits for the device to report), and an
    epoch whose loss was not finite stops the run with an error.

    Why not :func:`fit`? Its accuracy counts one label per image and its checkpoints and
    processes serve long runs; these tasks score pixels and boxes, in runs of seconds.
    """
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    optimizer, scheduler = adamw_one_cycle(model, lr, weight_decay, epochs * steps_per_epoch)
    history = []
    for epoch in range(epochs):
        model.train()
        total_sum, sums, count = 0.0, {}, 0
        for inputs, targets in batches():
            inputs, targets = _to(inputs, device), _to(targets, device)
            total, terms = loss(model, inputs, targets)
            optimizer_step(total, optimizer, scheduler)
            total_sum = total_sum + total.detach()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach() * len(inputs)
            count += len(inputs)
        if not math.isfinite(float(total_sum)):
            raise NonFiniteLossError(f"the loss was not finite in epoch {epoch + 1} of {epochs}: "
                                     f"lower the learning rate (it was {lr:g}) or check the inputs for NaNs")
        record = {"epoch": epoch + 1, **{name: float(value) / count for name, value in sums.items()}}
        if test_metrics is not None and ((epoch + 1) % evaluate_every == 0 or epoch + 1 == epochs):
            record.update(test_metrics())
        history.append(record)
    return history


def _to(batch, device: torch.device):
    """A tensor, or a list or dict of them (detection targets), on ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: _to(value, device) for key, value in batch.items()}
    return [_to(item, device) for item in batch]


__all__ = ["History", "NonFiniteLossError", "StepInfo", "TrainConfig", "evaluate", "fit", "train_briefly"]
