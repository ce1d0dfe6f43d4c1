"""Backbones side by side: what each one costs, what it buys, and proof that ours equals the reference.

Three questions, three tools:

* :func:`compare_models` - *which backbone?* One row per model: parameters, multiply-adds
  (counted on a real forward pass, not copied from a paper), the activation memory a
  training step keeps for backward, latency and throughput on this device, the published
  ImageNet accuracy of its reference weights, and accuracy on your data when given.
  :func:`format_table` prints it, :func:`plot_tradeoffs` draws accuracy against
  multiply-adds and against latency.
* :func:`side_by_side` - *is it really the same network?* Port a randomly initialised
  reference into the minibones model and compare logits, every stage's feature map and a
  Grad-CAM; :func:`plot_side_by_side` shows them with their differences.
* :func:`compare_predictions` - *and with real weights?* The same photographs through
  minibones and its reference loaded with the same trained checkpoint (for EfficientNet-Lite,
  whose weights come with the course: :func:`packaged_reference`), top-5 and the largest
  difference of probability.

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

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import minibones
from minibones.backbone import Backbone, count_parameters
from minibones.pretrained import (
    Prediction,
    PretrainedWeightsError,
    imagenet_categories,
    predict,
    preprocess_for,
    weights_for,
)
from minibones.reference import build_reference, has_reference, randomize_, relative_error

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
    was_training = model.training
    model.eval()
    try:
        with countable_attention(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
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

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            output = model(_input(model, image_size))
        del output
    finally:
        model.train(was_training)
    return sum(storages.values())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_batch(model: nn.Module, image_size: int, batch_size: int, rounds: int = 5) -> float:
    """Wall time of one inference forward pass: the fastest of ``rounds`` (after a warm-up pass).

    The fastest, not the mean: other processes and the OS only ever *add* time, so the
    minimum is the best estimate of what the model itself costs (as ``timeit`` advises).
    """
    x = _input(model, image_size, batch_size)
    device = x.device
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            model(x)  # warm-up: allocator, cuDNN autotuning, lazy initialisation
            for _ in range(rounds):
                _synchronize(device)
                start = time.perf_counter()
                model(x)
                _synchronize(device)
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return min(times)


def seconds_per_training_step(model: nn.Module, inputs: Tensor, rounds: int = 1) -> float:
    """Wall time of one SGD step (forward, backward, update) on the batch ``inputs``: the
    fastest of ``rounds`` after a warm-up step. The model's weights change; pass a copy."""
    device = inputs.device
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    times = []
    for round_ in range(rounds + 1):  # the first is the warm-up
        _synchronize(device)
        start = time.perf_counter()
        loss = model(inputs).float().logsumexp(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronize(device)
        if round_:
            times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def evaluate(model: nn.Module, data, device: torch.device | str | None = None) -> float:
    """Top-1 accuracy (%) of ``model`` over ``data``, an iterable of (images, labels) batches
    already prepared for the model (a ``DataLoader``)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for images, labels in data:
            logits = model(images.to(device))
            correct += int((logits.argmax(-1).cpu() == labels).sum())
            total += len(labels)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("the data is empty: evaluate() needs at least one (images, labels) batch")
    return 100.0 * correct / total


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
        accuracy=evaluate(model, data) if data is not None else None,
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
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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


# --- side by side with the reference ----------------------------------------------


def _as_grid(output, like: Tensor) -> Tensor | None:
    """``output`` as a (B, C, h, w) map shaped like ``like``, or None.

    CNN stages already are maps. A transformer block outputs tokens (B, 1 + N, D), class
    token first; its patch tokens, laid back on their grid, are the map (as ViT's
    ``forward_stages`` does)."""
    if not isinstance(output, Tensor):
        return None
    if output.shape == like.shape:
        return output
    batch, channels, height, width = like.shape
    if output.ndim == 3 and output.shape[0] == batch and output.shape[2] == channels and output.shape[1] >= height * width:
        return output[:, -height * width:].transpose(1, 2).reshape(batch, channels, height, width)
    return None


def match_reference_modules(
    reference: nn.Module, stages: list[Tensor], x: Tensor, tolerance: float = 1e-4
) -> list[tuple[str, Tensor] | tuple[None, None]]:
    """For each of our stage outputs, the reference module computing the same map, and its map.

    Found by running the reference once with a hook on every module and looking for an
    output equal to ours (the outermost module wins: ``layer4`` rather than its last ReLU).
    The reference's modules may be reused and in place (torchvision's ResNet): the match is
    then only as good as the hook outputs, so check the reported names.
    """
    outputs: list[tuple[str, Tensor]] = []
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: outputs.append((name, o)))
             for name, module in reference.named_modules() if name]
    try:
        with torch.no_grad():
            reference(x)
    finally:
        for hook in hooks:
            hook.remove()
    matches = []
    for stage in stages:
        found = []
        for name, output in outputs:
            grid = _as_grid(output, stage)
            if grid is not None and relative_error(grid, stage) < tolerance:
                found.append((name, grid))
        # the outermost module, and among those the last to run (an in-place ReLU rewrites the
        # output of the batch norm before it, which then looks like a match too)
        outermost = min((name.count(".") for name, _ in found), default=None)
        found = [f for f in found if f[0].count(".") == outermost]
        matches.append(found[-1] if found else (None, None))
    return matches


def grad_cam(model: nn.Module, layer: nn.Module, x: Tensor, target: int, like: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017): weight each channel of ``layer``'s map by the mean
    gradient of the ``target`` logit, sum, ReLU; upsampled to the input. ``like`` gives the
    map's shape (token outputs are laid on their grid, see :func:`_as_grid`)."""
    return _grad_cam(model, layer, x, target, like)[0]


def _grad_cam(model: nn.Module, layer: nn.Module, x: Tensor, target: int, like: Tensor) -> tuple[Tensor, bool]:
    """The Grad-CAM, and whether the logit depends on the map at all (a non-zero gradient)."""
    captured = {}
    hook = layer.register_forward_hook(lambda m, i, o: captured.__setitem__("output", o))
    try:
        with torch.enable_grad():
            logits = model(x)
            (gradient,) = torch.autograd.grad(logits[:, target].sum(), captured["output"])
    finally:
        hook.remove()
    activations = _as_grid(captured["output"].detach(), like)
    gradient = _as_grid(gradient, like)
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): how much each channel matters
    cam = torch.relu((weights * activations).sum(1, keepdim=True))  # (B, 1, h, w)
    cam = nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return cam[:, 0], bool(gradient.abs().sum() > 0)


@dataclass
class SideBySide:
    """Ours and the reference on the same input, with the same (random) weights."""

    name: str
    logits_error: float
    top5_ours: list[int]
    top5_reference: list[int]
    stage_names: list[str]
    reference_modules: list[str | None]  # the reference module computing each of our stages
    stage_errors: list[float | None]
    gradcam_stage: str
    gradcam_error: float
    maps: dict = field(default_factory=dict, repr=False)  # tensors for plotting

    def summary(self) -> str:
        lines = [f"{self.name}: logits relative error {self.logits_error:.1e}, "
                 f"top-5 {'identical' if self.top5_ours == self.top5_reference else 'DIFFERENT'} "
                 f"({self.top5_ours} vs {self.top5_reference})"]
        for stage, module, error in zip(self.stage_names, self.reference_modules, self.stage_errors):
            shown = f"{error:.1e}" if error is not None else "no matching reference module"
            lines.append(f"  stage {stage:<10} = reference {module or '?':<32} relative error {shown}")
        blank = " (all zero here: the ReLU clipped every location)" if float(self.maps["gradcam_ours"].max()) == 0 else ""
        lines.append(f"  Grad-CAM at {self.gradcam_stage}: relative error {self.gradcam_error:.1e}{blank}")
        return "\n".join(lines)


def side_by_side(
    model: str | Backbone,
    x: Tensor | None = None,
    *,
    reference: nn.Module | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> SideBySide:
    """Port a random reference into ``model`` (or use the given pair) and compare everything.

    ``x`` defaults to the cat photograph at the model's input size (a ViT named by a string is
    built for ``x``'s size, since torchvision's asserts it). The Grad-CAM is taken at
    the last stage whose map the predicted class's logit depends on: the classifier of a ViT
    reads only the class token, so the patch tokens that the *last* block outputs get no
    gradient (PITFALLS.md), and the stage before is used.
    """
    if isinstance(model, str):
        torch.manual_seed(seed)
        model = minibones.create_model(model)
        fixed_size = model.config.reference_kwargs.get("image_size")  # torchvision's ViT asserts its size
        if x is not None and fixed_size is not None and x.shape[-1] != fixed_size:
            torch.manual_seed(seed)
            model = minibones.create_model(model.config.name, image_size=x.shape[-1])
    if reference is None:
        if not has_reference(model):
            raise ValueError(f"{model.config.name} has no reference implementation to compare with")
        reference = randomize_(build_reference(model), seed)
        minibones.load_reference_weights(model, reference)
    model.eval()
    reference.eval()
    if x is None:
        from minibones.photos import load_photo

        size = image_size or model.config.input_size[1]
        x = load_photo("cat", size=size, mean=model.config.mean, std=model.config.std).tensor
    with torch.no_grad():
        ours_logits, reference_logits = model(x), reference(x)
        stages = model.forward_stages(x)
    matches = match_reference_modules(reference, stages, x)
    modules = [name for name, _ in matches]
    errors = [None if theirs is None else relative_error(ours, theirs) for ours, (_, theirs) in zip(stages, matches)]

    target = int(ours_logits[0].argmax())
    cam_ours = cam_reference = None
    for index in reversed(range(len(stages))):
        if modules[index] is None:
            continue
        layer = model.get_submodule(model.feature_info[index].module)
        cam_ours, depends = _grad_cam(model, layer, x, target, stages[index])
        if depends:
            cam_reference = grad_cam(reference, reference.get_submodule(modules[index]), x, target, stages[index])
            break
    if cam_reference is None:
        raise RuntimeError(f"{model.config.name}: no stage has both a matching reference module and a gradient")
    return SideBySide(
        name=model.config.name,
        logits_error=relative_error(ours_logits, reference_logits),
        top5_ours=ours_logits[0].topk(5).indices.tolist(),
        top5_reference=reference_logits[0].topk(5).indices.tolist(),
        stage_names=model.stage_names(),
        reference_modules=modules,
        stage_errors=errors,
        gradcam_stage=model.feature_info[index].name,
        gradcam_error=relative_error(cam_ours, cam_reference),
        maps={"input": x, "stages": stages, "reference_stages": [theirs for _, theirs in matches],
              "gradcam_ours": cam_ours, "gradcam_reference": cam_reference},
    )


def plot_side_by_side(result: SideBySide, channel: int = 0):
    """Rows: minibones, reference, |difference|; columns: one channel of every stage, then the Grad-CAM.

    Each column shares one colour scale across its three rows, so a difference that is zero
    looks like the lowest value of the maps above it. The Grad-CAM is non-negative: a
    sequential map starting at zero.
    """
    import matplotlib.pyplot as plt

    maps = result.maps
    columns = len(result.stage_names) + 1
    figure, axes = plt.subplots(3, columns, figsize=(2.2 * columns, 6.8), layout="constrained")
    cams = (maps["gradcam_ours"][0], maps["gradcam_reference"][0])
    panels = [(name, ours[0, channel], theirs[0, channel] if theirs is not None else None, "viridis")
              for name, ours, theirs in zip(result.stage_names, maps["stages"], maps["reference_stages"])]
    panels.append((f"Grad-CAM\n{result.gradcam_stage}", *cams, "inferno"))
    for j, (title, ours, theirs, cmap) in enumerate(panels):
        theirs = theirs if theirs is not None else torch.full_like(ours, float("nan"))
        low, high = float(torch.minimum(ours.min(), torch.zeros(()))), float(ours.max())
        for i, image in enumerate((ours, theirs, (ours - theirs).abs())):
            axes[i, j].imshow(image.numpy(), cmap=cmap, vmin=0 if cmap == "inferno" or i == 2 else low, vmax=high)
        axes[0, j].set_title(title if "\n" in title else f"{title}\nchannel {channel}", fontsize=9)
    for i, label in enumerate(("minibones", "reference", "|difference|")):
        axes[i, 0].set_ylabel(label, fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(f"{result.name}: logits relative error {result.logits_error:.1e}", fontsize=10)
    return figure


def predictions_side_by_side(model: Backbone, reference: nn.Module, image, topk: int = 5) -> str:
    """The top-k of minibones and of the reference for one image, with the same preprocessing."""
    preprocess = preprocess_for(model)
    categories = getattr(getattr(model, "pretrained_weights", None), "categories", None) or imagenet_categories()
    ours = predict(model, image, topk, preprocess=preprocess, categories=categories)
    theirs = predict(reference, image, topk, preprocess=preprocess, categories=categories)
    lines = [f"{'minibones':<40} | reference"]
    lines += [f"{str(a):<40} | {b}" for a, b in zip(ours, theirs)]
    return "\n".join(lines)


# --- real weights: minibones and the reference, loaded with the same file ----------


def packaged_reference(model: Backbone) -> nn.Module:
    """timm's ``tf_efficientnet_lite*`` loaded with the same installed checkpoint as ``model``.

    Independent of our name map: the file lists its tensors in the order of timm's state
    dict (PITFALLS.md), so they are matched by position, checking that every shape and the
    kind of tensor (``weight``, ``bias``, ``running_mean``, ...) agree. Needs timm, which the
    test extra installs (``pip install 'minibones[test]'``).
    """
    from minibones.pretrained import PACKAGED_WEIGHTS, fetch

    name = model.config.name
    if name not in PACKAGED_WEIGHTS:
        raise ValueError(f"{name} has no weights installed with minibones; choose one of {sorted(PACKAGED_WEIGHTS)}")
    try:
        import timm
    except ImportError as error:
        raise ImportError(f"the reference of {name} is timm's tf_{name}, and timm is not installed: "
                          "pip install 'minibones[test]' (or pip install timm) and run this again") from error
    reference = timm.create_model(f"tf_{name}", pretrained=False)
    theirs = torch.load(fetch(weights_for(model)), map_location="cpu", weights_only=True)
    ours = reference.state_dict()
    if len(theirs) != len(ours):
        raise ValueError(f"the checkpoint has {len(theirs)} tensors, timm's tf_{name} {len(ours)}")
    for (their_name, tensor), (our_name, target) in zip(theirs.items(), ours.items()):
        if tensor.shape != target.shape or their_name.rsplit(".", 1)[-1] != our_name.rsplit(".", 1)[-1]:
            raise ValueError(f"checkpoint tensor {their_name} {tuple(tensor.shape)} does not line up with "
                             f"timm's {our_name} {tuple(target.shape)}")
    reference.load_state_dict(dict(zip(ours, theirs.values())))
    return reference.eval()


@dataclass
class PredictionMatch:
    """One image through two networks: their top-5 and how far apart their probabilities are."""

    image: str
    top5_ours: list
    top5_reference: list
    max_probability_difference: float  # over all classes
    max_logit_difference: float

    @property
    def same_top5(self) -> bool:
        return [p.index for p in self.top5_ours] == [p.index for p in self.top5_reference]


@torch.no_grad()
def compare_predictions(model: Backbone, reference: nn.Module, images: dict) -> list[PredictionMatch]:
    """Every image of ``images`` (name -> image) through both networks, with ``model``'s
    preprocessing for both: the top-5 of each and the largest difference of probability
    (over all classes) and of logit."""
    preprocess = preprocess_for(model)
    categories = getattr(getattr(model, "pretrained_weights", None), "categories", None) or imagenet_categories()
    matches = []
    for name, image in images.items():
        x = preprocess(image).unsqueeze(0)
        ours, theirs = model.eval()(x)[0], reference.eval()(x)[0]
        p, q = ours.softmax(-1), theirs.softmax(-1)

        def top5(probabilities):
            values, indices = probabilities.topk(5)
            return [Prediction(int(i), categories[int(i)], float(v)) for v, i in zip(values, indices)]

        matches.append(PredictionMatch(name, top5(p), top5(q), float((p - q).abs().max()), float((ours - theirs).abs().max())))
    return matches
