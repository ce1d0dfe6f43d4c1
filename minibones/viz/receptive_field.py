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
performs (a ``TorchFunctionMode`` sees each ``conv2d``, pooling, slicing, padding,
addition, concatenation, reshape...), carrying ``(r, S, P)`` along with each tensor.
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
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary

from minibones.viz.activations import resolve_layer, stage_or_layer_output
from minibones.viz.display import as_input, model_label, new_figure, show_image

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

    tracer = _GeometryTracer()
    tracer.set(x, _Geometry.identity())
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

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _on_meta(model), tracer:
            stages = model.forward_stages(x) if hasattr(model, "forward_stages") else [model(x)]
    finally:
        model.train(was_training)
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
    was_training = model.training
    model.eval()
    try:
        feature = stage_or_layer_output(model, inputs, layer)
        if feature.ndim != 4:
            raise ValueError(
                f"{layer!r} gives a {tuple(feature.shape)} tensor; the effective receptive field needs a "
                "(B, C, H, W) map. For ViT pass a stage name such as 'block2' (patch tokens as a grid)."
            )
        h, w = feature.shape[-2:]
        feature[:, :, h // 2, w // 2].sum().backward()
    finally:
        model.train(was_training)
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


# --- the tracer: (r, S, P) carried along every tensor -----------------------------------


@dataclass(frozen=True)
class _Geometry:
    """What a tensor's units see. ``start`` is ``-P`` (where unit 0's field begins).

    ``spatial`` says which dimensions of the tensor are the image's: ``(2, 3)`` for an
    NCHW map, ``(1, 2)`` channels-last, ``(1,)`` for a sequence of patch tokens, ``None``
    when unknown (after an operation that scrambles the layout, such as an attention matrix).
    """

    size: tuple[int, int] | None
    jump: tuple[int, int]
    start: tuple[int, int]
    global_context: bool
    spatial: tuple[int, ...] | None

    @staticmethod
    def identity() -> "_Geometry":
        return _Geometry((1, 1), (1, 1), (0, 0), False, (2, 3))

    def with_(self, **changes) -> "_Geometry":
        fields = dict(size=self.size, jump=self.jump, start=self.start,
                      global_context=self.global_context, spatial=self.spatial)
        fields.update(changes)
        return _Geometry(**fields)

    def made_global(self, spatial=...) -> "_Geometry":
        return self.with_(global_context=True, spatial=self.spatial if spatial is ... else spatial)


def _union(geometries: list[_Geometry], spatial) -> _Geometry:
    """Where paths meet: the smallest region containing every operand's region."""
    local = [g for g in geometries if g.size is not None]
    is_global = any(g.global_context for g in geometries)
    if not local:
        g = geometries[0]
        return _Geometry(None, g.jump, g.start, True, spatial)
    size, jump, start = [], [], []
    for axis in range(2):
        jump_axis = max(g.jump[axis] for g in local)  # equal in every backbone (checked by the tests)
        first = min(g.start[axis] for g in local)
        last = max(g.start[axis] + g.size[axis] - 1 for g in local)
        size.append(last - first + 1)
        jump.append(jump_axis)
        start.append(first)
    return _Geometry(tuple(size), tuple(jump), tuple(start), is_global, spatial)


def _window(g: _Geometry, kernel, stride, padding, dilation) -> _Geometry:
    """A conv or pooling window over the two spatial axes: the recurrence of the paper."""
    kernel, stride, padding, dilation = (_pair(v) for v in (kernel, stride, padding, dilation))
    if g.spatial == (3, 2):  # a map whose height and width were swapped by a transpose
        g = g.with_(size=g.size and g.size[::-1], jump=g.jump[::-1], start=g.start[::-1])
    size = None
    if g.size is not None:
        size = tuple(g.size[a] + dilation[a] * (kernel[a] - 1) * g.jump[a] for a in range(2))
    start = tuple(g.start[a] - padding[a] * g.jump[a] for a in range(2))
    jump = tuple(g.jump[a] * stride[a] for a in range(2))
    return _Geometry(size, jump, start, g.global_context, (2, 3))


_REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod",
               "std_mean", "var_mean", "nansum", "nanmean", "median", "argmax", "argmin"}
_ATTENTION = {"scaled_dot_product_attention", "multi_head_attention_forward", "matmul", "bmm", "baddbmm",
              "einsum", "__matmul__", "__rmatmul__"}
_RESHAPES = {"reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_GLOBAL_NORMS = {"group_norm", "instance_norm", "local_response_norm"}
_UPSAMPLING = {"interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "conv_transpose2d", "pixel_shuffle",
               "pixel_unshuffle", "grid_sample", "fold", "unfold", "roll"}


class _GeometryTracer(TorchFunctionMode):
    """Runs every torch operation as usual and records the geometry of its tensor outputs."""

    def __init__(self):
        super().__init__()
        self.geometry = WeakTensorKeyDictionary()

    def set(self, tensor: Tensor, geometry: _Geometry) -> None:
        self.geometry[tensor] = geometry

    def get(self, tensor) -> _Geometry | None:
        return self.geometry.get(tensor) if isinstance(tensor, Tensor) else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in ("__get__", "__set__", "dim", "size", "numel", "__len__"):
            return out
        inputs = [(t, self.geometry[t]) for t in _tensors((args, kwargs)) if t in self.geometry]
        if not inputs:
            return out
        outputs = _tensors(out)
        if not outputs:
            return out
        self._propagate(name, args, kwargs, inputs, outputs)
        return out

    def _propagate(self, name, args, kwargs, inputs, outputs) -> None:
        first, g = inputs[0]
        arg = _Args(args, kwargs)
        if name == "conv2d":
            weight = arg.get(1, "weight")
            padding = arg.get(4, "padding", 0)
            dilation = arg.get(5, "dilation", 1)
            if isinstance(padding, str):  # "same" (stride 1) or "valid"
                k, d = _pair(weight.shape[-2:]), _pair(dilation)
                padding = tuple((d[a] * (k[a] - 1)) // 2 for a in range(2)) if padding == "same" else 0
            result = _window(g, tuple(weight.shape[-2:]), arg.get(3, "stride", 1), padding, dilation)
        elif name in ("max_pool2d", "_max_pool2d", "max_pool2d_with_indices"):
            kernel = arg.get(1, "kernel_size")
            stride = arg.get(2, "stride", None) or kernel
            result = _window(g, kernel, stride, arg.get(3, "padding", 0), arg.get(4, "dilation", 1))
        elif name == "avg_pool2d":
            kernel = arg.get(1, "kernel_size")
            stride = arg.get(2, "stride", None) or kernel
            result = _window(g, kernel, stride, arg.get(3, "padding", 0), 1)
        elif name.startswith("adaptive_") or name.startswith("_adaptive_"):
            result = self._adaptive(g, first, outputs[0])
        elif name == "pad":
            result = self._pad(g, first, arg.get(1, "pad"))
        elif name == "__getitem__":
            result = self._getitem(g, first, args[1])
        elif name in ("permute", "transpose", "swapaxes", "swapdims", "movedim", "t"):
            result = g.with_(spatial=self._permuted(name, g.spatial, first.ndim, args[1:], kwargs))
        elif name in _RESHAPES:
            result = g.with_(spatial=_reshaped(g.spatial, tuple(first.shape), tuple(outputs[0].shape)))
        elif name in _ATTENTION:
            activations = [t for t, _ in inputs]
            spatial = _inherit(inputs, outputs[0])
            result = _union([geo for _, geo in inputs], spatial)
            if len(activations) >= 2 or name in ("scaled_dot_product_attention", "multi_head_attention_forward"):
                result = result.made_global()  # a product of two activations: every token reads every token
        elif name in _REDUCTIONS and not isinstance(arg.get(1, "dim"), Tensor):  # not torch.max(a, b)
            result = self._reduction(g, first, arg, outputs[0])
        elif name in ("softmax", "log_softmax", "cumsum", "cumprod", "sort", "argsort", "topk"):
            dim = arg.get(1, "dim", None)
            result = g.made_global() if _touches_spatial(g.spatial, dim, first.ndim) else g
        elif name == "layer_norm":
            shape = arg.get(1, "normalized_shape")
            count = len(shape) if isinstance(shape, (tuple, list, torch.Size)) else 1
            normalised = set(range(first.ndim - count, first.ndim))
            result = g.made_global() if g.spatial is None or normalised & set(g.spatial) else g
        elif name in _GLOBAL_NORMS:
            result = g.made_global()
        elif name in _UPSAMPLING:
            raise NotImplementedError(
                f"receptive_fields does not know how {name} changes the geometry of a feature map "
                "(it handles convolutions, pooling, padding, slicing, reshapes and elementwise operations)."
            )
        else:  # elementwise, concatenation, linear layers on channels, normalisation per position...
            result = _union([geo for _, geo in inputs], _inherit(inputs, outputs[0]))
            if name == "cat":
                result = result.with_(spatial=_inherit(inputs, outputs[0], ignore_dim=arg.get(1, "dim", 0)))
        for tensor in outputs:  # e.g. max's values and indices, unbind's pieces: all see the same
            self.geometry[tensor] = result

    @staticmethod
    def _adaptive(g: _Geometry, x: Tensor, out: Tensor) -> _Geometry:
        in_size, out_size = tuple(x.shape[-2:]), tuple(out.shape[-2:])
        if out_size == (1, 1):
            return _Geometry(None, g.jump, g.start, True, g.spatial)
        if all(i % o == 0 for i, o in zip(in_size, out_size)):
            kernel = tuple(i // o for i, o in zip(in_size, out_size))
            return _window(g, kernel, kernel, 0, 1)
        # uneven bins (e.g. VGG's 7x7 pool on another input size): no single window describes them
        return g.made_global()

    @staticmethod
    def _pad(g: _Geometry, x: Tensor, pad) -> _Geometry:
        """``F.pad``'s pairs go from the last dimension backwards; padding shifts the start."""
        if g.spatial is None or len(g.spatial) != 2:
            return g
        start = list(g.start)
        for k in range(len(pad) // 2):
            dim = x.ndim - 1 - k
            if dim in g.spatial:
                axis = g.spatial.index(dim)
                start[axis] -= pad[2 * k] * g.jump[axis]
        return g.with_(start=tuple(start))

    @staticmethod
    def _getitem(g: _Geometry, x: Tensor, index) -> _Geometry:
        """Slices of the spatial axes move the start (``x[..., 1:, :]``) and multiply the stride
        (``x[:, :, ::2, ::2]``, ResNet's option-A shortcut); integer indices drop an axis."""
        if g.spatial is None:
            return g
        index = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, (Tensor, list)) or i is None for i in index):
            return g.with_(spatial=None)
        if Ellipsis in index:
            at = index.index(Ellipsis)
            index = index[:at] + (slice(None),) * (x.ndim - len(index) + 1) + index[at + 1 :]
        start, jump = list(g.start), list(g.jump)
        removed = []
        for dim, item in enumerate(index):
            if isinstance(item, int):
                removed.append(dim)
            elif isinstance(item, slice) and dim in g.spatial and len(g.spatial) == 2:
                axis = g.spatial.index(dim)
                first, _, step = item.indices(x.shape[dim])
                start[axis] += first * jump[axis]
                jump[axis] *= step
        spatial = tuple(d - sum(r < d for r in removed) for d in g.spatial if d not in removed)
        if len(spatial) != len(g.spatial):
            spatial = spatial or None
        return g.with_(start=tuple(start), jump=tuple(jump), spatial=spatial)

    @staticmethod
    def _permuted(name, spatial, ndim, rest, kwargs):
        if spatial is None:
            return None
        dims = list(range(ndim))
        if name == "permute":
            perm = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
            perm = kwargs.get("dims", perm)
            dims = [d % ndim for d in perm]
        elif name in ("transpose", "swapaxes", "swapdims"):
            a, b = (d % ndim for d in rest[:2])
            dims[a], dims[b] = dims[b], dims[a]
        elif name == "t":
            dims = dims[::-1]
        else:  # movedim
            source, destination = rest[:2]
            source = [source] if isinstance(source, int) else list(source)
            destination = [destination] if isinstance(destination, int) else list(destination)
            return _movedim(ndim, source, destination, spatial)
        return tuple(dims.index(d) for d in spatial)

    @staticmethod
    def _reduction(g: _Geometry, x: Tensor, arg: "_Args", out: Tensor) -> _Geometry:
        dim = arg.get(1, "dim", None)
        keepdim = arg.get(2, "keepdim", False)
        if dim is None or g.spatial is None:
            return _Geometry(None, g.jump, g.start, True, None)
        dims = {d % x.ndim for d in ((dim,) if isinstance(dim, int) else dim)}
        spatial = g.spatial if keepdim else tuple(d - sum(r < d for r in dims) for d in g.spatial if d not in dims)
        if dims & set(g.spatial):
            return _Geometry(None, g.jump, g.start, True, spatial or None)
        return g.with_(spatial=spatial)


def _movedim(ndim, source, destination, spatial):
    order = [d for d in range(ndim) if d not in [s % ndim for s in source]]
    for dst, src in sorted(zip([d % ndim for d in destination], [s % ndim for s in source])):
        order.insert(dst, src)
    return tuple(order.index(d) for d in spatial)


def _reshaped(spatial, old_shape, new_shape):
    """Where the spatial block of ``old_shape`` lands in ``new_shape`` (matched by the
    number of elements before and inside it), or ``None`` if a reshape splits it."""
    if spatial is None or list(spatial) != list(range(spatial[0], spatial[-1] + 1)):
        return None
    before = _prod(old_shape[: spatial[0]])
    inside = _prod(old_shape[spatial[0] : spatial[-1] + 1])
    cumulative, first, last = 1, None, None
    for dim, size in enumerate(new_shape):
        if cumulative == before and first is None and size != 1:
            first = dim
        cumulative *= size
        if first is not None and cumulative == before * inside:
            last = dim
            break
    if first is None or last is None:
        return None
    return tuple(range(first, last + 1))


def _inherit(inputs, out: Tensor, ignore_dim=None):
    """The spatial dims of the output: those of an input with the same number of dimensions
    whose spatial sizes match the output's (elementwise ops, linear layers on channels)."""
    for tensor, g in inputs:
        if g.spatial is None or tensor.ndim != out.ndim:
            continue
        if ignore_dim is not None:
            return g.spatial
        if all(tensor.shape[d] == out.shape[d] for d in g.spatial):
            return g.spatial
    return None


def _touches_spatial(spatial, dim, ndim) -> bool:
    if spatial is None or dim is None:
        return True
    return dim % ndim in spatial


class _Args:
    """Positional-or-keyword access to a torch function's arguments."""

    def __init__(self, args, kwargs):
        self.args, self.kwargs = args, kwargs

    def get(self, position: int, name: str, default=None):
        if name in self.kwargs:
            return self.kwargs[name]
        if position < len(self.args):
            return self.args[position]
        return default


def _tensors(obj) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


def _make_hook(rows: list, name: str):
    def hook(module, inputs, output):
        tensors = _tensors(output)
        rows.append((name, tensors[0] if tensors else None))

    return hook


def _row(name: str, g: _Geometry | None) -> ReceptiveField:
    if g is None:
        raise RuntimeError(
            f"could not follow the input to {name!r}: an operation in between is not a torch operation "
            "(numpy? a custom C++ op?). receptive_fields needs the forward pass written in torch."
        )
    return ReceptiveField(name, g.size, g.jump, tuple(-s for s in g.start), g.global_context)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list, torch.Size)):
        return (int(value[0]), int(value[-1])) if len(value) else (1, 1)
    return (int(value), int(value))


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= v
    return result


def _fmt(pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _dtype(model: nn.Module) -> torch.dtype:
    param = next(model.parameters(), None)
    return param.dtype if param is not None and param.is_floating_point() else torch.float32


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
