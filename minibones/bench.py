"""Time a minibones model against its reference, side by side.

Speed is part of fidelity: a from-scratch model that is readable but slower
than torchvision would teach the wrong lesson. Both models get the same
weights and the same inputs, and their steps are *interleaved* (ours,
reference, reference, ours, ...) so that a change in machine load hits both
alike. Each step's time is the *fastest* of its rounds: other activity on the
machine can only add time to a round, never remove it, so the minimum is the
estimate least disturbed by it (the median moved by 5-10% between repeated
runs on a shared 2-core machine; the minimum by much less).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import nn

import minibones
from minibones.reference import build_reference, has_reference


@dataclass
class Timing:
    """Seconds per step (the fastest round) of one model pair for one kind of step."""

    model: str
    step: str  # "infer" (forward) or "train" (forward + backward)
    batch_size: int
    image_size: int
    ours_s: float
    reference_s: float

    @property
    def ratio(self) -> float:
        """minibones time / reference time: 1.0 is as fast, below 1 is faster."""
        return self.ours_s / self.reference_s

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.ours_s

    def as_row(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "images_per_s": self.images_per_s}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: nn.Module, x: torch.Tensor, train: bool, amp: bool):
    """One forward (inference) or forward+backward (training) step, as a closure."""
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if amp else nullcontext()
    target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def infer():
        with torch.inference_mode(), autocast:
            model(x)

    def train_step():
        with autocast:
            output = model(x)
            output = output[0] if isinstance(output, tuple) else output  # aux heads of Inception
            loss = nn.functional.cross_entropy(output.float(), target)
        loss.backward()
        for p in model.parameters():
            p.grad = None

    return train_step if train else infer


def time_steps(steps: dict, rounds: int, device: torch.device) -> dict[str, float]:
    """Fastest seconds per call of each step, interleaving the steps round by round."""
    names = list(steps)
    samples = {name: [] for name in names}
    for name in names:  # warm-up: allocator, autotuning, compilation
        steps[name]()
    for i in range(rounds):
        order = names if i % 2 == 0 else names[::-1]  # ABBA: neither is always first
        for name in order:
            synchronize(device)
            start = time.perf_counter()
            steps[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in samples.items()}


def compare_with_reference(
    name: str,
    *,
    batch_size: int = 4,
    image_size: int | None = None,
    rounds: int = 5,
    device: str | torch.device = "cpu",
    amp: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    steps: tuple[str, ...] = ("infer", "train"),
) -> list[Timing]:
    """Time ``name`` against its reference for each kind of step in ``steps``."""
    device = torch.device(device)
    model = minibones.create_model(name)
    if not has_reference(model):
        raise ValueError(f"{name} has no reference implementation to compare with")
    reference = build_reference(model)
    minibones.load_reference_weights(model, reference)
    size = image_size or min(model.config.input_size[1], 224)
    x = torch.randn(batch_size, 3, size, size, device=device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=memory_format)
    pair = {}
    for label, module in (("ours", model), ("reference", reference)):
        module = module.to(device, memory_format=memory_format)
        pair[label] = torch.compile(module) if compile else module

    timings = []
    for step in steps:
        train = step == "train"
        for module in pair.values():
            module.train(train)
        fastest = time_steps({label: make_step(m, x, train, amp) for label, m in pair.items()}, rounds, device)
        timings.append(Timing(name, step, batch_size, size, fastest["ours"], fastest["reference"]))
    return timings


def format_table(timings: list[Timing]) -> str:
    """A Markdown table, one row per model, infer and train side by side."""
    rows = {}
    for t in timings:
        rows.setdefault((t.model, t.batch_size, t.image_size), {})[t.step] = t
    lines = [
        "| model | batch x size | infer ms (ours / ref) | infer ratio | train ms (ours / ref) | train ratio |",
        "|---|---|---|---|---|---|",
    ]
    for (model, batch, size), steps in rows.items():
        cells = []
        for step in ("infer", "train"):
            t = steps.get(step)
            cells += [f"{t.ours_s * 1e3:.1f} / {t.reference_s * 1e3:.1f}", f"{t.ratio:.3f}"] if t else ["-", "-"]
        lines.append(f"| {model} | {batch} x {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
