"""What each backbone costs and what it buys, side by side: one row per model.

:func:`compare_models` answers *which backbone?* One row per model: parameters, multiply-adds
(counted on a real forward pass, not copied from a paper), the activation memory a
training step keeps for backward, latency and throughput on this device, the published
ImageNet accuracy of its reference weights, and accuracy on your data when given.
:func:`format_table` prints it, :func:`plot_tradeoffs` draws accuracy against
multiply-adds and against latency. Whether a minibones model equals its reference is
:mod:`minibones.parity`.

Counting (PITFALLS.md): the course's unit of compute is the multiply-add (MAC).
``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-add, while
torchvision's and most papers' "FLOPs" are multiply-adds; reports keep the counter's
``gflops`` and show ``gmacs`` (half of it). The counter only sees matmuls and convolutions it has a
formula for: on the CPU it misses ``nn.MultiheadAttention``'s fused fast path and the fused
CPU kernel of ``F.scaled_dot_product_attention``. Measured on ViT-B/16 at 224 (torch 2.14.1):
torchvision's model counts 11.27 GMACs instead of 17.56 (-36%), minibones' 16.85 (-4%, the
QK^T and AV products). So :func:`count_flops` switches both to their explicit, countable
form while counting, and gets 17.564, torchvision's published figure.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import minibones
from minibones.backbone import Backbone, count_parameters, mode
from minibones.bench import time_steps
from minibones.distributed import default_device
from minibones.pretrained import PretrainedWeightsError, weights_for
from minibones.train import evaluate

# --- measuring one model ----------------------------------------------------------


@contextmanager
def countable_attention():
    """Route attention through plain matmuls, which the FLOP counter sees.

    ``nn.MultiheadAttention`` (torchvision's ViT) takes a fused fast path at inference, and
    ``F.scaled_dot_product_attention`` (minibones' ViT) a fused CPU kernel; neither is counted.
    The math backend computes softmax(QK^T / sqrt(d)) V with two batched matmuls: the same
    result, every multiply-add counted.
    """
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)


def _input(model: nn.Module, image_size: int, batch_size: int = 1) -> Tensor:
    parameter = next(model.parameters())
    return torch.randn(batch_size, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype)


@torch.no_grad()
def count_flops(model: nn.Module, input_size: int | tuple[int, ...]) -> int:
    """FLOPs of one forward pass (2 per multiply-add), attention included.

    ``input_size``: an image size for a backbone (one square RGB image), or the whole input
    shape for any module, such as ``(1, 64, 56, 56)`` for one block. Works on the meta device
    (:func:`minibones.registry.build_on_meta`), where nothing is computed.
    """
    if isinstance(input_size, int):
        x = _input(model, input_size)
    else:
        like = next(model.parameters(), None)
        x = torch.zeros(input_size, device=like.device if like is not None else "cpu",
                        dtype=like.dtype if like is not None else torch.float32)
    with mode(model, False), countable_attention(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def count_macs(model: nn.Module, input_size: int | tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass: the course's unit of compute (what torchvision and most
    papers call "FLOPs"). ``input_size`` as in :func:`count_flops`, which counts twice as many."""
    return count_flops(model, input_size) // 2


def activation_bytes(model: nn.Module, image_size: int) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one image: the activation
    memory of training, which grows with the batch (the weights' memory does not).

    Counted with ``saved_tensors_hooks``, once per storage (a ReLU's output saved by the ReLU
    and by the next conv counts once), parameters excluded. Eval mode, so that the batch-norm
    statistics are left alone; train mode saves about the same.
    """
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with mode(model, False), torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(_input(model, image_size))
    del output
    return sum(storages.values())


def seconds_per_batch(model: nn.Module, image_size: int, batch_size: int, rounds: int = 5) -> float:
    """Wall time of one inference forward pass: the fastest of ``rounds`` (after a warm-up pass).

    The fastest, not the mean: other processes and the OS only ever *add* time, so the
    minimum is the best estimate of what the model itself costs (as ``timeit`` advises).
    """
    x = _input(model, image_size, batch_size)
    with mode(model, False), torch.inference_mode():
        return time_steps({"forward": lambda: model(x)}, rounds, x.device)["forward"]


def seconds_per_training_step(model: nn.Module, inputs: Tensor, rounds: int = 1) -> float:
    """Wall time of one SGD step (forward, backward, update) on the batch ``inputs``: the
    fastest of ``rounds`` after a warm-up step. The model's weights change; pass a copy."""
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def step():
        loss = model(inputs).float().logsumexp(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return time_steps({"train": step}, rounds, inputs.device)["train"]


# --- the table --------------------------------------------------------------------


@dataclass
class ModelReport:
    """What one backbone costs and buys, measured here."""

    name: str
    params: int
    image_size: int
    gflops: float  # counted, 2 FLOPs per multiply-add, one image
    activation_mb: float  # kept for backward, one image (MiB)
    latency_ms: float  # one image, inference
    throughput: float  # images per second at batch_size, inference
    batch_size: int
    device: str
    published_top1: float | None = None  # the reference weights' ImageNet top-1, %, as published
    published_gmacs: float | None = None  # the reference's published multiply-adds (torchvision "GFLOPS")
    accuracy: float | None = None  # top-1 % measured on the given data
    notes: dict = field(default_factory=dict)

    @property
    def gmacs(self) -> float:
        """Multiply-adds, the unit papers and torchvision call "FLOPs"."""
        return self.gflops / 2

    def as_row(self) -> dict:
        return {**asdict(self), "gmacs": self.gmacs}


def measure(
    model: Backbone,
    *,
    image_size: int | None = None,
    batch_size: int | None = None,
    rounds: int = 5,
    data=None,
) -> ModelReport:
    """One :class:`ModelReport` for a model already on its device."""
    device = next(model.parameters()).device
    size = image_size or model.config.input_size[1]
    batch_size = batch_size or (32 if device.type == "cuda" else 8)
    try:
        weights = weights_for(model)
        top1, gmacs = weights.top1, weights.published_gmacs
    except (PretrainedWeightsError, ImportError, ValueError):
        top1 = gmacs = None
    latency = seconds_per_batch(model, size, 1, rounds)
    per_batch = seconds_per_batch(model, size, batch_size, rounds)
    return ModelReport(
        name=model.config.name,
        params=count_parameters(model),
        image_size=size,
        gflops=count_flops(model, size) / 1e9,
        activation_mb=activation_bytes(model, size) / 2**20,
        latency_ms=latency * 1e3,
        throughput=batch_size / per_batch,
        batch_size=batch_size,
        device=_describe(device),
        published_top1=top1,
        published_gmacs=gmacs,
        accuracy=100 * evaluate(model, data)[1] if data is not None else None,  # top-1 %
    )


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


def compare_models(
    models: list[str | Backbone],
    *,
    data=None,
    device: str | torch.device | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    rounds: int = 5,
    pretrained: bool = False,
) -> list[ModelReport]:
    """Measure every model in ``models`` (names or built models) on ``device`` (default: CUDA
    if available), one after the other; each is built, measured and released in turn.

    ``image_size``: one size for all (default: each model's own, as its FLOPs are published).
    ``data``: an iterable of (images, labels) batches for the accuracy column; it must suit
    every model (same preprocessing and classes), or measure models one at a time with
    :func:`measure`. ``pretrained=True`` loads the reference weights (see
    :mod:`minibones.pretrained`); the published accuracy is shown either way.
    """
    device = torch.device(device) if device else default_device()
    reports = []
    for entry in models:
        model = minibones.create_model(entry, pretrained=pretrained) if isinstance(entry, str) else entry
        model = model.to(device)
        reports.append(measure(model, image_size=image_size, batch_size=batch_size, rounds=rounds, data=data))
        del model
    return reports


def format_table(reports: list[ModelReport]) -> str:
    """A Markdown table of the reports, in the order given. Compute is in multiply-adds (GMACs),
    the course's unit: the counter's FLOPs divided by 2."""
    header = ("| model | params (M) | input | GMACs counted (published) | activations (MiB) "
              "| latency (ms) | throughput (img/s) | ImageNet top-1 (published) | accuracy |")
    lines = [header, "|---" * (header.count("|") - 1) + "|"]

    def number(value, fmt):
        return format(value, fmt) if value is not None else "-"

    for r in reports:
        lines.append(
            f"| {r.name} | {r.params / 1e6:.2f} | {r.image_size} "
            f"| {r.gmacs:.3f} ({number(r.published_gmacs, '.3f')}) | {r.activation_mb:.1f} "
            f"| {r.latency_ms:.1f} | {r.throughput:.1f} (batch {r.batch_size}) "
            f"| {number(r.published_top1, '.2f')} | {number(r.accuracy, '.2f')} |"
        )
    devices = sorted({r.device for r in reports})
    lines.append("")
    lines.append(f"device: {', '.join(devices)}; GMACs: multiply-adds counted by FlopCounterMode (which counts "
                 "2 FLOPs per multiply-add) / 2, next to the published value; activations: tensors saved for "
                 "backward, one image; latency: one image, fastest of the rounds; throughput: inference at the given batch.")
    return "\n".join(lines)


def plot_tradeoffs(reports: list[ModelReport], accuracy: str = "auto"):
    """Accuracy against FLOPs and against latency, one point per model (a matplotlib figure).

    ``accuracy``: ``"published"`` (the reference weights' ImageNet top-1), ``"measured"`` (on
    the data given to :func:`compare_models`), or ``"auto"`` (measured when there is any).
    """
    import matplotlib.pyplot as plt

    if accuracy == "auto":
        accuracy = "measured" if any(r.accuracy is not None for r in reports) else "published"
    if accuracy not in ("published", "measured"):
        raise ValueError(f"accuracy must be 'published', 'measured' or 'auto', got {accuracy!r}")
    key = "published_top1" if accuracy == "published" else "accuracy"
    points = [r for r in reports if getattr(r, key) is not None]
    if not points:
        raise ValueError(f"no model has a {accuracy} accuracy to plot")
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (attribute, label) in zip(axes, [("gmacs", "multiply-adds per image (GMACs, counted)"),
                                             ("latency_ms", "latency (ms per image)")]):
        for r in points:
            x = getattr(r, attribute)
            ax.scatter(x, getattr(r, key))
            ax.annotate(r.name, (x, getattr(r, key)), textcoords="offset points", xytext=(4, 4), fontsize=9)
        ax.margins(x=0.25, y=0.12)  # room for the names of the points at the edges
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("ImageNet top-1 % (published)" if accuracy == "published" else "top-1 % (measured)")
    figure.suptitle(f"accuracy against cost (latency measured on {points[0].device})")
    figure.tight_layout()
    return figure
