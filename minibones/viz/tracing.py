"""Following a forward pass: the receptive-field geometry of every tensor, operation by operation.

The interpreter behind :func:`minibones.viz.receptive_fields`. :class:`GeometryTracer` is a
``TorchFunctionMode``: it runs every torch operation as usual and records, for each output
tensor, what its units see in the image (a :class:`_Geometry`: field size, jump and start
along each axis, and which of the tensor's dimensions are the image's). Convolutions and
pooling windows apply the recurrence of Araujo et al. (2019) (:func:`_window`); where paths
meet, the operands' regions are joined (:func:`_union`); slicing, padding, permutations and
reshapes move the start, the stride or the spatial dimensions; reductions, attention and
global normalisation over the image make the result *global*. An operation that resamples
the map (upsampling, transposed convolutions) raises an error rather than being guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary


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


class GeometryTracer(TorchFunctionMode):
    """Runs every torch operation as usual and records the geometry of its tensor outputs."""

    def __init__(self):
        super().__init__()
        self.geometry = WeakTensorKeyDictionary()

    def mark_input(self, x: Tensor) -> None:
        """``x`` is the image: each of its pixels sees itself."""
        self.geometry[x] = _Geometry.identity()

    def get(self, tensor) -> _Geometry | None:
        return self.geometry.get(tensor) if isinstance(tensor, Tensor) else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in ("__get__", "__set__", "dim", "size", "numel", "__len__"):
            return out
        inputs = [(t, self.geometry[t]) for t in tensors_in((args, kwargs)) if t in self.geometry]
        if not inputs:
            return out
        outputs = tensors_in(out)
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
    before = math.prod(old_shape[: spatial[0]])
    inside = math.prod(old_shape[spatial[0] : spatial[-1] + 1])
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


def tensors_in(obj) -> list[Tensor]:
    """The tensors in ``obj`` (a tensor, or lists, tuples and dicts of them), in order."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in tensors_in(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in tensors_in(item)]
    return []


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list, torch.Size)):
        return (int(value[0]), int(value[-1])) if len(value) else (1, 1)
    return (int(value), int(value))
