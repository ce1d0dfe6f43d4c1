"""Receptive fields: which input pixels can change a unit of a feature map.

**Analytic** (Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional
Neural Networks", Distill 2019). Along each axis a unit ``i`` of a feature map sees
the input pixels ``[i*S - P, i*S - P + r - 1]``: ``r`` is the receptive field
size, ``S`` the effective stride (the product of the strides so far), ``P`` the
effective padding. A layer with kernel ``k``, stride ``s``, padding ``p`` and
dilation ``d`` (effective kernel ``k' = d(k-1) + 1``) updates them by

    r <- r + (k' - 1) * S        S <- S * s        P <- P + p * S

:func:`receptive_fields` does not read a table: it runs the model once (on the meta
device: shapes only, no arithmetic) and follows every operation the forward pass
performs (a ``TorchFunctionMode``, :mod:`minibones.viz.tracing`, sees each ``conv2d``,
pooling, slicing, padding, addition, concatenation, reshape...), carrying ``(r, S, P)``
along with each tensor.
So it works for any model written with ordinary torch operations, including the ones
a hook on modules would miss (a strided slice in a shortcut, an ``F.pad``, a residual
``+``). An operation it does not know and that changes the spatial size (upsampling,
transposed convs) raises an error rather than being guessed.

The region of a unit near the border includes zero padding; and where unpadded strided
convs drop the last rows of a map (Inception, Xception), a pixel or two at the far
border reach no unit at all.

What happens where paths meet (section "Arbitrary computation graphs" of the paper):

* **residual additions, multiplications and concatenations** (ResNet, Inception's
  parallel branches) take the *union* of the operands' regions: the leftmost start
  and the rightmost end. When the regions are centred (the usual case) this is the
  largest receptive field of the branches, as Araujo et al. compute it. The operands
  must have the same effective stride (they do in every backbone here).
* **global operations** (global pooling, squeeze-and-excitation gates, attention,
  normalisation over the whole map) make a unit depend on *every* pixel. They are not
  folded into ``size``; the row says ``global_context=True`` instead. ``size`` stays
  the size of the local, convolutional window (for ViT: the 16x16 patch), which is
  the number the literature reports; every pixel outside it still reaches the unit
  through the global path.

**Effective** (Luo, Li, Urtasun & Zemel, "Understanding the Effective Receptive
Field in Deep Convolutional Neural Networks", NeurIPS 2016): the gradient of the
centre unit with respect to the input, averaged over inputs. It is roughly Gaussian
and occupies only a fraction of the analytic field.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor, nn

from minibones.backbone import mode
from minibones.viz.activations import resolve_layer, stage_or_layer_output
from minibones.viz.display import as_input, model_label, new_figure, show_image
from minibones.viz.tracing import GeometryTracer, tensors_in

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of the units of one feature map.

    ``size``, ``stride`` and ``padding`` are ``(height, width)`` pairs; unit ``(i, j)``
    sees input rows ``i*stride[0] - padding[0]`` to ``... + size[0] - 1`` (and likewise
    for columns), before clipping to the image. ``global_context`` is true when a
    global operation (pooling, a squeeze-and-excitation gate, attention) lets every
    input pixel reach the unit as well. ``size`` is ``None`` for a map that is *only*
    global (a pooled vector).
    """

    name: str
    size: tuple[int, int] | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    global_context: bool = False

    def region(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) input pixels seen by unit (i, j), inclusive, not clipped."""
        if self.size is None:
            raise ValueError(f"{self.name} is a global feature: every input pixel reaches it")
        top = i * self.stride[0] - self.padding[0]
        left = j * self.stride[1] - self.padding[1]
        return top, left, top + self.size[0] - 1, left + self.size[1] - 1

    def center(self, i: int, j: int) -> tuple[float, float]:
        """The input coordinates (row, column) of the centre of unit (i, j)'s field."""
        top, left, bottom, right = self.region(i, j)
        return (top + bottom) / 2, (left + right) / 2

    def __str__(self) -> str:
        size = "global" if self.size is None else _fmt(self.size)
        extra = " + global context" if self.global_context and self.size is not None else ""
        return f"{self.name}: size {size}{extra}, stride {_fmt(self.stride)}, padding {_fmt(self.padding)}"


def _in_channels(model: nn.Module) -> int:
    """The channels the model reads: those of its first conv (3 for every backbone here, 1 for a
    network on grey images), so that any network can be traced, not only RGB ones."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def receptive_fields(
    model: nn.Module,
    input_size: int | tuple[int, int] | None = None,
    layers: str | Sequence[str] = "stages",
) -> list[ReceptiveField]:
    """The analytic receptive field of every stage (or of every layer) of ``model``.

    The model's forward pass is followed once on an image of ``input_size`` (default: the
    model's own size; the result does not depend on it as long as every stage keeps at
    least one pixel), on the meta device, so it costs no computation.

    ``layers="stages"`` gives one row per entry of ``feature_info``, read from what
    ``forward_stages`` returns; ``layers="all"`` one row per module, in the order the
    forward pass calls them; a list of names picks stages or module paths.

        >>> import minibones
        >>> from minibones.viz import receptive_fields
        >>> [str(rf) for rf in receptive_fields(minibones.create_model("resnet18"), 64)][-1]
        'conv5_x: size 435, stride 32, padding 217'
    """
    if input_size is None:
        input_size = model.config.input_size[1:] if hasattr(model, "config") else (224, 224)
    height, width = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    # Only shapes matter, so the pass runs on the "meta" device: the input and (for the
    # duration of the pass) the parameters are meta tensors, which have a shape and no data.
    x = torch.zeros(1, _in_channels(model), height, width, device="meta")

    tracer = GeometryTracer()
    tracer.mark_input(x)
    module_rows: list[tuple[str, Tensor | None]] = []
    wanted = None if isinstance(layers, str) else list(layers)
    stage_names = [info.name for info in getattr(model, "feature_info", [])]
    handles = []
    if layers == "all" or wanted is not None:
        hooked = {}
        if wanted is not None:
            for name in wanted:
                if name not in stage_names:
                    hooked[resolve_layer(model, name)] = name
        else:
            hooked = {name: name for name, _ in model.named_modules() if name}
        for path, label in hooked.items():
            module = model.get_submodule(path)
            handles.append(module.register_forward_hook(_make_hook(module_rows, label)))
    elif layers != "stages":
        raise ValueError(f"layers must be 'stages', 'all' or a list of stage/module names, got {layers!r}")

    try:
        with mode(model, False), torch.no_grad(), _on_meta(model), tracer:
            stages = model.forward_stages(x) if hasattr(model, "forward_stages") else [model(x)]
    finally:
        for handle in handles:
            handle.remove()

    rows = []
    if layers == "stages" or wanted is not None:
        names = stage_names or ["output"]
        for name, feature in zip(names, stages):
            if wanted is None or name in wanted:
                rows.append(_row(name, tracer.get(feature)))
    for name, output in module_rows:
        geometry = tracer.get(output) if output is not None else None
        if geometry is None and layers == "all":
            continue  # a module whose output does not come from the image (nothing to report)
        rows.append(_row(name, geometry))
    if wanted is not None:
        order = {name: i for i, name in enumerate(wanted)}
        rows.sort(key=lambda row: order.get(row.name, len(order)))
    return rows


@contextmanager
def _on_meta(model: nn.Module):
    """Swap every parameter and buffer for a meta tensor of the same shape, and put the real
    ones back afterwards, even if the forward pass fails."""
    saved = []
    try:
        for module in model.modules():
            for store in (module._parameters, module._buffers):
                for name, tensor in list(store.items()):
                    if tensor is not None and tensor.device.type != "meta":
                        saved.append((store, name, tensor))
                        meta = torch.empty_like(tensor, device="meta")
                        if isinstance(tensor, nn.Parameter):
                            meta = nn.Parameter(meta, tensor.requires_grad)
                        store[name] = meta
        yield
    finally:
        for store, name, tensor in saved:
            store[name] = tensor


def format_receptive_fields(rows: Sequence[ReceptiveField]) -> str:
    """A markdown table of ``rows`` (what the course notes and issue notes show)."""
    lines = [
        "| layer | receptive field | effective stride | effective padding | global context |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        size = "global" if row.size is None else _fmt(row.size)
        context = "yes" if row.global_context else "no"
        lines.append(f"| {row.name} | {size} | {_fmt(row.stride)} | {_fmt(row.padding)} | {context} |")
    return "\n".join(lines)


# --- the effective receptive field (Luo et al. 2016) ----------------------------------


def effective_receptive_field(
    model: nn.Module,
    layer: str | None = None,
    input_size: int | None = None,
    samples: int = 8,
    seed: int = 0,
    inputs: Tensor | None = None,
) -> Tensor:
    """Luo et al. 2016, section 2: |d y_centre / d x|, summed over colours, averaged over inputs.

    ``y_centre`` is the sum over channels of the centre unit of ``layer`` (a stage name
    or a module path; default: the last stage). The inputs are ``samples`` images of
    standard normal noise (or ``inputs``), as in the paper's experiments. The model is
    used as it is (random or trained weights), in eval mode. Returns an (H, W) map
    whose values sum to 1.
    """
    if inputs is None:
        size = input_size or model.config.input_size[1]
        generator = torch.Generator().manual_seed(seed)
        inputs = torch.randn(samples, _in_channels(model), size, size, generator=generator)
    inputs = inputs.to(device=_device(model), dtype=_dtype(model)).clone().requires_grad_(True)
    with mode(model, False):
        feature = stage_or_layer_output(model, inputs, layer)
        if feature.ndim != 4:
            raise ValueError(
                f"{layer!r} gives a {tuple(feature.shape)} tensor; the effective receptive field needs a "
                "(B, C, H, W) map. For ViT pass a stage name such as 'block2' (patch tokens as a grid)."
            )
        h, w = feature.shape[-2:]
        feature[:, :, h // 2, w // 2].sum().backward()
    erf = inputs.grad.abs().sum(1).mean(0)
    total = erf.sum()
    return (erf / total if total > 0 else erf).detach()


def erf_extent(erf: Tensor, mass: float = 0.5, centre: tuple[int, int] | None = None) -> int:
    """The side, in pixels, of the smallest square centred on ``centre`` that holds ``mass`` of the
    effective receptive field ``erf`` (H, W).

    One number for the size of a field that has no edge: Luo et al. (2016) see a roughly
    Gaussian blob, so its size is a matter of how much of its mass one wants to count.
    ``centre`` defaults to the field's centre of mass, rounded: the unit's centre, even where
    TensorFlow's "SAME" padding shifts it by a pixel from the middle of the image. The square
    may reach past the image (only the part inside counts), so the side is always odd.
    """
    if erf.ndim != 2:
        raise ValueError(f"expected an (H, W) effective receptive field, got shape {tuple(erf.shape)}")
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    erf = erf.detach().double().cpu()
    if (erf < 0).any() or erf.sum() <= 0:
        raise ValueError("an effective receptive field is non-negative and not all zero")
    erf = erf / erf.sum()
    height, width = erf.shape
    if centre is None:
        rows = torch.arange(height, dtype=erf.dtype)
        cols = torch.arange(width, dtype=erf.dtype)
        centre = (round(float(erf.sum(1) @ rows)), round(float(erf.sum(0) @ cols)))
    cy, cx = centre
    for half in range(max(height, width) + 1):
        inside = erf[max(cy - half, 0) : cy + half + 1, max(cx - half, 0) : cx + half + 1].sum()
        if inside >= mass - 1e-9:
            return 2 * half + 1
    raise ValueError(f"centre {centre} lies outside the {height} x {width} field")


def plot_effective_receptive_fields(
    erfs: dict[str, dict[str, Tensor]], masses: tuple[float, float] = (0.5, 0.9), cell: float = 1.9
) -> "Figure":
    """Rows: networks (``{label: {stage: erf}}``); columns: stages. Each panel shows one
    effective receptive field around its centre (sequential colours from 0, scaled to the
    99th percentile of the pixels that reach the unit, so that one hot pixel does not hide the
    rest), with the squares
    holding ``masses`` of it (:func:`erf_extent`; solid, then dashed), zoomed to twice the
    larger square, in pixels from the centre."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    labels = list(erfs)
    stages = list(next(iter(erfs.values())))
    fig, axes = new_figure(len(labels), len(stages), cell=cell)
    styles = ("-", "--")
    for row, label in enumerate(labels):
        for col, stage in enumerate(stages):
            ax = axes[row, col]
            erf = erfs[label][stage].detach().float().cpu()
            erf = erf / erf.sum()
            rows = torch.arange(erf.shape[0], dtype=erf.dtype)
            cols = torch.arange(erf.shape[1], dtype=erf.dtype)
            cy, cx = round(float(erf.sum(1) @ rows)), round(float(erf.sum(0) @ cols))
            sides = [erf_extent(erf, mass, (cy, cx)) for mass in masses]
            half = max(sides[-1], 9)
            top, bottom = max(cy - half, 0), min(cy + half, erf.shape[0] - 1)
            left, right = max(cx - half, 0), min(cx + half, erf.shape[1] - 1)
            window = erf[top : bottom + 1, left : right + 1]
            extent = (left - cx - 0.5, right - cx + 0.5, bottom - cy + 0.5, top - cy - 0.5)
            support = erf[erf > 0]  # the pixels that reach the unit at all
            scale = float(torch.quantile(support, 0.99)) if len(support) else 1.0
            ax.imshow((window / scale).clamp(max=1).numpy(), cmap="magma", vmin=0, vmax=1, extent=extent,
                      interpolation="nearest")
            for side, style in zip(sides, styles):
                ax.add_patch(Rectangle((-side / 2, -side / 2), side, side, fill=False, edgecolor="cyan",
                                       linestyle=style, linewidth=1.2))
            ax.set_title(f"{stage}\n" + ", ".join(f"{m:.0%}: {s} px" for m, s in zip(masses, sides)), fontsize=9)
            ax.tick_params(labelsize=9)
            if row == len(labels) - 1:
                ax.set_xlabel("pixels from the centre", fontsize=9)
        axes[row, 0].set_ylabel(label, fontsize=9)
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap="magma"), ax=axes, fraction=0.025, pad=0.02)
    bar.set_label("|gradient| / its 99th percentile", fontsize=9)
    bar.ax.tick_params(labelsize=9)
    squares = " and ".join(f"{m:.0%} ({'solid' if k == 0 else 'dashed'})" for k, m in enumerate(masses))
    fig.suptitle(f"effective receptive fields; squares holding {squares} of each", fontsize=10)
    return fig


def plot_receptive_field(
    model: nn.Module,
    photo="cat",
    layer: str | None = None,
    unit: tuple[int, int] | None = None,
    size: int | None = None,
    samples: int = 8,
    effective: bool = True,
) -> "Figure":
    """Left: the analytic receptive field of one unit of ``layer`` as a box on the photograph
    (its centre marked). Right: the effective receptive field of the centre unit (Luo et al.)
    with the same analytic box, so the two can be compared at a glance.

        >>> model = minibones.create_model("resnet18")
        >>> fig = plot_receptive_field(model, "astronaut", layer="conv4_x")  # doctest: +SKIP
    """
    from matplotlib.patches import Rectangle

    x, image = as_input(model, photo, size)
    layer = layer or model.feature_info[-1].name
    (rf,) = receptive_fields(model, tuple(x.shape[-2:]), layers=[layer])
    with torch.no_grad():
        feature = stage_or_layer_output(model.eval(), x, layer)
    h, w = feature.shape[-2:]
    unit = unit or (h // 2, w // 2)
    fig, axes = new_figure(1, 2 if effective else 1, cell=3.2)
    panels = [axes[0, 0]]
    show_image(axes[0, 0], image, f"{model_label(model)} {layer}: unit {unit}\n{rf}")
    if effective:
        erf = effective_receptive_field(model, layer, inputs=torch.randn(samples, *x.shape[1:]))
        centre = (h // 2, w // 2)
        ax = axes[0, 1]
        ax.imshow(erf.numpy(), cmap="magma")
        inside = _fraction_inside(erf, rf, centre)
        title = f"effective RF of unit {centre} (Luo et al.)\n{inside:.0%} of it inside the analytic box"
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        panels.append((ax, centre))
    for i, panel in enumerate(panels):
        ax, where = (panel, unit) if i == 0 else panel
        (top, left, bottom, right) = (0, 0, image.shape[0] - 1, image.shape[1] - 1)
        if rf.size is not None:
            top, left, bottom, right = rf.region(*where)
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1,
                                   fill=False, edgecolor="cyan", linewidth=1.5))
            cy, cx = rf.center(*where)
            ax.plot([cx], [cy], marker="+", color="cyan", markersize=8)
        # show the whole box, even where it reaches past the image (into the zero padding)
        margin = 2
        ax.set_xlim(min(left, 0) - margin, max(right, image.shape[1] - 1) + margin)
        ax.set_ylim(max(bottom, image.shape[0] - 1) + margin, min(top, 0) - margin)
    return fig


def _fraction_inside(erf: Tensor, rf: ReceptiveField, unit: tuple[int, int]) -> float:
    if rf.size is None:
        return 1.0
    top, left, bottom, right = rf.region(*unit)
    h, w = erf.shape
    inside = erf[max(top, 0) : min(bottom, h - 1) + 1, max(left, 0) : min(right, w - 1) + 1].sum()
    return float(inside / erf.sum()) if erf.sum() > 0 else 0.0


def _make_hook(rows: list, name: str):
    def hook(module, inputs, output):
        tensors = tensors_in(output)
        rows.append((name, tensors[0] if tensors else None))

    return hook


def _row(name: str, g) -> ReceptiveField:
    """The row of a map whose geometry the tracer recorded as ``g`` (None: it could not follow)."""
    if g is None:
        raise RuntimeError(
            f"could not follow the input to {name!r}: an operation in between is not a torch operation "
            "(numpy? a custom C++ op?). receptive_fields needs the forward pass written in torch."
        )
    return ReceptiveField(name, g.size, g.jump, tuple(-s for s in g.start), g.global_context)


def _fmt(pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _dtype(model: nn.Module) -> torch.dtype:
    param = next(model.parameters(), None)
    return param.dtype if param is not None and param.is_floating_point() else torch.float32


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
