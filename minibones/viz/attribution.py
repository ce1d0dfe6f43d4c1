"""Attributions: which pixels a prediction rests on, through captum, for every backbone.

:func:`attribute` computes one map with one method; :func:`attribution_grid` draws
methods x backbones on the same photograph, in the shared display of
:mod:`minibones.viz.display` (signed maps: red for the class, blue against; non-negative
maps: a sequential scale from zero).

The methods (through captum, except guided backprop, Grad-CAM in :mod:`~minibones.viz.gradcam`
and the attention maps in :mod:`~minibones.viz.attention`):

==========================  ==========================================================
``saliency``                |d score / d pixel|, max over colours (Simonyan et al. 2014)
``integrated_gradients``    path integral of gradients from the zero input (Sundararajan et al. 2017)
``smoothgrad``              saliency averaged over noisy copies (Smilkov et al. 2017), via ``NoiseTunnel``
``occlusion``               score drop when a patch is set to the mean colour (Zeiler & Fergus 2014)
``guided_backprop``         gradients with negative values stopped at each rectifier (Springenberg et al. 2015)
``deeplift``                DeepLIFT rescale rule against the zero input (Shrikumar et al. 2017)
``gradcam``                 channel-weighted activations of a stage, ReLU, upsampled (Selvaraju et al. 2017)
``guided_gradcam``          guided backprop x Grad-CAM (same paper)
``attention``               ViT only: the class token's attention to the patches in the last block
``attention_rollout``       ViT only: attention multiplied through all blocks (Abnar & Zuidema 2020)
==========================  ==========================================================

The zero input of integrated gradients and DeepLift is zero *after* normalisation: the
mean colour of the training data (a brownish grey for the torchvision ImageNet models,
mid-grey for EfficientNet-Lite, whose inputs are scaled to [-1, 1]), not a black image.

Where a method does not mean what it claims on a model, the toolkit *says so* (the
result has ``map=None`` and a ``note``) instead of drawing a misleading picture:

* captum's ``GuidedBackprop`` only overrides ``nn.ReLU`` modules. On models with ReLU6
  (EfficientNet-Lite, MobileNet-V2), SiLU (EfficientNet), GELU (ViT, ConvNeXt) or hardswish
  (MobileNet-V3) it silently returns (partly) the plain gradient. The toolkit therefore
  applies the guided rule itself (:func:`guided_gradients`), at ``nn.ReLU`` and ``nn.ReLU6``
  (a ReLU clipped at 6: the same rule holds where it is active), and refuses guided
  backprop and guided Grad-CAM on any other activation, where no such rule exists.
* ``DeepLift`` has rules for ReLU, sigmoid, tanh, softmax and max pooling only; elsewhere it
  falls back to gradients and its attributions stop summing to ``f(x) - f(baseline)``.
  Even on ReLU-only networks it can be far off (measured with random weights: up to ~100% on
  GoogLeNet, Inception-v3 and Xception, depending on the weights and the image; for the first
  two, its max-pool rule is the cause). The convergence delta is always reported; the map is refused
  when the delta exceeds 10% of the output difference.
* Grad-CAM weights the channels of a (N, C, H, W) map. ViT's tokens are (N, 1 + HW, D): the
  patch tokens are laid on their grid (class token dropped) before weighting, and the last
  block is avoided (its patch tokens never reach the class token, so their gradient is zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minibones.viz.attention import attention_maps, attention_rollout, is_vit, patch_map
from minibones.viz.display import (
    add_colorbar, as_input, as_model_dict, model_label, new_figure, show_image, show_note, show_overlay,
)
from minibones.viz.gradcam import grad_cam, gradcam_layer, token_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METHODS = (
    "saliency", "integrated_gradients", "smoothgrad", "occlusion", "guided_backprop", "deeplift",
    "gradcam", "guided_gradcam", "attention", "attention_rollout",
)
DEFAULT_METHODS = (
    "saliency", "integrated_gradients", "smoothgrad", "occlusion", "guided_backprop", "gradcam", "guided_gradcam",
)

# The modules captum's DeepLift has a rule for (captum.attr._core.deep_lift.SUPPORTED_NON_LINEAR, 0.9.0).
DEEPLIFT_RULES = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softmax, nn.MaxPool2d)
DEEPLIFT_MAX_DELTA = 0.10
# The activations guided backprop has a rule for: rectifiers, whose gradient is 1 where they are active, else 0.
RECTIFIERS = (nn.ReLU, nn.ReLU6)
# Methods whose maps have a sign (evidence for and against the class); the others are magnitudes (>= 0).
SIGNED_METHODS = ("integrated_gradients", "occlusion", "guided_backprop", "deeplift", "guided_gradcam")
# Methods with one independent value per pixel: drawn blurred by DISPLAY_SMOOTHING pixels (see show_overlay).
PIXEL_METHODS = ("saliency", "smoothgrad", "integrated_gradients", "guided_backprop", "deeplift", "guided_gradcam")
DISPLAY_SMOOTHING = 1.5


@dataclass
class Attribution:
    """One method's map for one model and one class.

    ``map`` is (H, W) at the input's resolution, signed where the method is (positive:
    evidence for ``target``), or ``None`` when the method does not apply to this model;
    ``note`` then says why (and otherwise carries a caveat, such as DeepLift's delta).
    ``delta`` is the relative convergence delta of Integrated Gradients or DeepLift:
    ``|sum of attributions - (f(x) - f(baseline))| / |f(x) - f(baseline)|``.
    """

    method: str
    model: str
    target: int
    map: Tensor | None
    note: str | None = None
    delta: float | None = None
    layer: str | None = None

    @property
    def ok(self) -> bool:
        return self.map is not None

    @property
    def signed(self) -> bool:
        """Whether the map has a sign (drawn with a diverging colour map centred at zero)."""
        return self.method in SIGNED_METHODS

    def show(self, ax, image, title: str | None = None) -> None:
        """Draw the map over ``image`` the way its method calls for (see :func:`show_map`), or say
        why there is none."""
        if self.ok:
            show_map(ax, image, self.map, self.method, self.title() if title is None else title)
        else:
            show_note(ax, image, self.note or "not available", self.title() if title is None else title)

    def title(self) -> str:
        title = self.method.replace("_", " ")
        if self.layer:
            title += f" ({self.layer})"
        if self.delta is not None:
            title += f"\ndelta {self.delta:.1%}"
        if self.ok and self.note:
            title += " *"  # drawn, with a caveat in ``note``
        return title


def show_map(ax, image, values: Tensor, method: str, title: str = "") -> None:
    """A method's map over ``image``: diverging colours for signed methods, sequential for the
    others; per-pixel methods blurred by :data:`DISPLAY_SMOOTHING` pixels for display."""
    smooth = DISPLAY_SMOOTHING if method in PIXEL_METHODS else 0.0
    show_overlay(ax, image, values, title, signed=method in SIGNED_METHODS, smooth=smooth)


def non_relu_activations(model: nn.Module) -> list[str]:
    """Names of the activation types other than ``nn.ReLU`` (what GuidedBackprop cannot override)."""
    names = {
        type(m).__name__ for m in model.modules()
        if type(m).__module__ == "torch.nn.modules.activation"
        and not isinstance(m, (nn.ReLU, nn.Softmax, nn.MultiheadAttention))
    }
    return sorted(names)


def unguided_activations(model: nn.Module) -> list[str]:
    """Names of the activation types guided backprop has no rule for (anything but ReLU and ReLU6)."""
    return [name for name in non_relu_activations(model) if name != "ReLU6"]


def predicted_class(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        return int(model(x).argmax(1)[0])


def top_classes(model: nn.Module, x: Tensor, k: int = 5) -> list:
    """The ``k`` most probable classes of the one image ``x`` exactly as given (already
    normalised, any size: unlike :func:`minibones.predict`, nothing is resized or cropped), as
    :class:`minibones.pretrained.Prediction` (index, name, probability). Names come from the
    model's pretrained weights (ImageNet), or are the class indices as text."""
    from minibones.pretrained import top_predictions

    model.eval()
    with torch.no_grad():
        probabilities = model(x).float().softmax(1)[0]
    weights = getattr(model, "pretrained_weights", None)
    categories = weights.categories if weights is not None else [str(i) for i in range(len(probabilities))]
    return top_predictions(probabilities, categories, k)


# methods that read how the score changes with the input pixels: an all-zero map means it does not
INPUT_GRADIENT_METHODS = ("saliency", "integrated_gradients", "smoothgrad", "occlusion", "guided_backprop", "deeplift")


def attribute(
    model: nn.Module,
    x: Tensor,
    method: str,
    target: int | None = None,
    layer: str | int | None = None,
    steps: int = 32,
    internal_batch_size: int = 8,
    samples: int = 8,
    noise: float = 0.15,
    window: int | None = None,
) -> Attribution:
    """The map of ``method`` (one of :data:`METHODS`) for class ``target`` (default: the
    predicted class) on one normalised image ``x`` of shape (1, 3, H, W).

    ``layer`` is the stage Grad-CAM reads: a stage name, a module path, or a stage index
    (``-2``: the second-to-last stage of any backbone); default: the last stage (for ViT, the
    input of the last block). ``steps`` and ``internal_batch_size`` go to Integrated
    Gradients (the batch size bounds its memory: all steps at once would not fit for large
    models and images); ``samples`` and ``noise`` (a fraction of the input's range) to
    SmoothGrad; ``window`` is the occlusion patch (default: an eighth of the image side).
    The model is switched to eval mode (dropout off, batch-norm statistics frozen).

        >>> import minibones
        >>> from minibones.data.photos import load_photo
        >>> model = minibones.create_model("resnet18")
        >>> result = attribute(model, load_photo("cat").tensor, "gradcam", layer="conv4_x")
        >>> result.map.shape
        torch.Size([224, 224])
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"attribute explains one image: expected (1, 3, H, W), got {tuple(x.shape)}")
    model.eval()
    x = x.detach().clone().requires_grad_(True)  # captum would set it anyway, with a warning
    target = predicted_class(model, x) if target is None else int(target)
    name = model_label(model)
    result = Attribution(method, name, target, None)
    compute = globals()[f"_{method}"]
    result = compute(model, x, target, result, layer=layer, steps=steps, internal_batch_size=internal_batch_size,
                     samples=samples, noise=noise, window=window)
    if result.ok and method in INPUT_GRADIENT_METHODS and not result.map.any():
        # an empty panel would read as "no pixel matters" when the truth is "the score is constant";
        # (Grad-CAM, by contrast, is legitimately zero when a stage holds only evidence against the class)
        result.map = None
        result.note = (f"the map is exactly zero: the score of class {target} does not depend on the input "
                       "(an untrained classifier initialised to zero, as ViT's is, does that)")
    return result


# --- the methods --------------------------------------------------------------------------


def _saliency(model, x, target, result, **_):
    from captum.attr import Saliency

    grads = Saliency(model).attribute(x, target=target, abs=True)
    result.map = grads[0].amax(0).detach()  # Simonyan et al.: the largest |gradient| over colours
    return result


def _integrated_gradients(model, x, target, result, steps, internal_batch_size, **_):
    from captum.attr import IntegratedGradients

    baseline = torch.zeros_like(x)  # the dataset mean: a black-ish image after normalisation
    attributions, delta = IntegratedGradients(model).attribute(
        x, baselines=baseline, target=target, n_steps=steps, internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    result.map = attributions[0].sum(0).detach()
    result.delta = _relative_delta(model, x, baseline, target, delta)
    return result


def _smoothgrad(model, x, target, result, samples, noise, **_):
    from captum.attr import NoiseTunnel, Saliency

    stdev = noise * float(x.detach().max() - x.detach().min())
    grads = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=min(samples, 8), stdevs=stdev,
        target=target, abs=True,
    )
    result.map = grads[0].amax(0).detach()
    return result


def _occlusion(model, x, target, result, window, **_):
    from captum.attr import Occlusion

    side = min(x.shape[-2:])
    window = window or max(2, side // 8)
    stride = window  # non-overlapping patches: 64 forward passes at the default window
    attributions = Occlusion(model).attribute(
        x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=0.0,
        target=target, perturbations_per_eval=16,
    )
    result.map = attributions[0].mean(0).detach()  # the same score drop in every colour
    return result


def guided_gradients(model: nn.Module, x: Tensor, target: int) -> Tensor:
    """Guided backprop (Springenberg et al. 2015, "Striving for Simplicity"): the gradient of the
    score, but at every rectifier only the *positive* part of the gradient flows back, and only
    where the unit was active. A rectifier's own backward already keeps the gradient where it was active
    (0 < input, and input < 6 for ReLU6); a backward hook then drops the negative values:

        R_in = ReLU(R_out * 1[unit active])

    The same rule as captum's ``GuidedBackprop``, which applies it to ``nn.ReLU`` only (on a
    ReLU6 network it returns the plain gradient); here ``nn.ReLU6`` is guided too.
    Returns (1, 3, H, W). Every module must be used once, not in place (the library's are).
    """

    def guide(module, grad_input, grad_output):
        return (F.relu(grad_input[0]),)

    handles = [m.register_full_backward_hook(guide) for m in model.modules() if isinstance(m, RECTIFIERS)]
    try:
        x = x.detach().clone().requires_grad_(True)
        score = model(x)[0, target]
        (gradient,) = torch.autograd.grad(score, x)
    finally:
        for handle in handles:
            handle.remove()
    return gradient


def _guided_backprop(model, x, target, result, **_):
    if note := _guided_note(model):
        result.note = note
        return result
    result.map = guided_gradients(model, x, target)[0].sum(0).detach()
    return result


def _deeplift(model, x, target, result, **_):
    from captum.attr import DeepLift

    baseline = torch.zeros_like(x)
    attributions, delta = _quietly(
        DeepLift(model).attribute, x, baselines=baseline, target=target, return_convergence_delta=True
    )
    result.delta = _relative_delta(model, x, baseline, target, delta)
    reasons = []
    missing = sorted({type(m).__name__ for m in model.modules()
                      if type(m).__module__ == "torch.nn.modules.activation" and not isinstance(m, DEEPLIFT_RULES)})
    if missing:
        reasons.append(f"captum's DeepLift has no rule for {', '.join(missing)} and uses plain gradients there")
    if result.delta <= DEEPLIFT_MAX_DELTA:
        result.map = attributions[0].sum(0).detach()
        if reasons:
            result.note = f"{reasons[0]}; the attributions miss f(x) - f(baseline) by {result.delta:.1%}."
        return result
    if not missing:
        # measured on ReLU-only networks with random weights: GoogLeNet and Inception-v3 are ~100% off
        # and become exact once their max pools are average pools; Xception is ~100% off for another reason
        reasons.append("captum's DeepLift rules do not add up on this architecture (max pooling is a known "
                       "culprit: with average pools instead, GoogLeNet and Inception-v3 become exact)")
    result.note = (f"{'; '.join(reasons)}. Not drawn: the attributions miss "
                   f"f(x) - f(baseline) by {result.delta:.0%} (more than {DEEPLIFT_MAX_DELTA:.0%}), so the map "
                   "does not explain the score.")
    return result


def _gradcam(model, x, target, result, layer, **_):
    path, layer_note = gradcam_layer(model, layer)
    result.layer = _stage_name(model, path)
    cam, _ = grad_cam(model, model.get_submodule(path), x, target, token_grid(model, x))
    result.map = cam[0].detach()
    result.note = layer_note
    return result


def _guided_gradcam(model, x, target, result, layer, **_):
    """Selvaraju et al. 2017, section 3.1: guided backprop times the Grad-CAM map upsampled to the
    input (captum's ``GuidedGradCam`` does the same, with captum's guided backprop)."""
    if note := _guided_note(model):
        result.note = note
        return result
    cam = _gradcam(model, x, target, Attribution("gradcam", result.model, target, None), layer)
    result.layer = cam.layer
    result.map = (guided_gradients(model, x, target)[0] * cam.map).sum(0).detach()
    return result


def _attention(model, x, target, result, **_):
    return _class_token_map(model, x, result, rollout=False)


def _attention_rollout(model, x, target, result, **_):
    return _class_token_map(model, x, result, rollout=True)


def _class_token_map(model, x, result, rollout: bool):
    """Where the class token looks: in the last block, averaged over heads, or through every
    block (attention rollout). Neither map is about the class asked for."""
    if not is_vit(model):
        what = "attention rollout exists" if rollout else "attention maps exist"
        result.note = f"{result.model} has no attention layers: {what} only for ViT."
        return result
    _, attentions = attention_maps(model, x)
    weights = attention_rollout(attentions)[0] if rollout else attentions[-1][0].mean(0)  # (1 + N, 1 + N)
    result.map = patch_map(model, x, weights[0])
    result.note = ("not class-specific: attention rollout (Abnar & Zuidema 2020) from the class token" if rollout
                   else "not class-specific: where the class token looks in the last block, averaged over heads")
    return result


# --- the grid: methods x backbones ----------------------------------------------------------


def attribution_grid(
    models,
    photo="cat",
    methods: Sequence[str] = DEFAULT_METHODS,
    target: int | None = None,
    size: int | None = None,
    **options,
) -> "Figure":
    """One row per method, one column per backbone, every map over the same photograph.

    ``models``: names, models or a ``{label: model}`` dict. Each model explains its own
    predicted class unless ``target`` is given. A method that does not apply to a model
    gets a panel that says why. ``options`` go to :func:`attribute` (``steps=8`` ...).

        >>> fig = attribution_grid(["resnet18", "efficientnet_b0", "vit_b_16"], "cat", steps=16)  # doctest: +SKIP
    """
    models = as_model_dict(models)
    fig, axes = new_figure(len(methods) + 1, len(models), cell=2.2)
    for col, (label, model) in enumerate(models.items()):
        x, image = as_input(model, photo, size)
        cls = predicted_class(model, x) if target is None else target
        show_image(axes[0, col], image, f"{label}\nclass {cls}")
        for row, method in enumerate(methods, start=1):
            attribute(model, x, method, target=cls, **options).show(axes[row, col], image)
    add_colorbars(fig, axes[1:], methods)
    fig.suptitle("* drawn with a caveat: see attribute(...).note", fontsize=9, y=0.0, va="bottom")
    return fig


def add_colorbars(fig: "Figure", axes, methods: Sequence[str]) -> None:
    """The colour bars of a grid with one method per row: one for the signed rows, one for the others."""
    signed = [row for row, method in zip(axes, methods) if method in SIGNED_METHODS]
    magnitude = [row for row, method in zip(axes, methods) if method not in SIGNED_METHODS]
    for rows, is_signed in ((signed, True), (magnitude, False)):
        if rows:
            add_colorbar(fig, [ax for row in rows for ax in np.atleast_1d(row)], signed=is_signed)


# --- helpers ---------------------------------------------------------------------------------


def _guided_note(model: nn.Module) -> str | None:
    others = unguided_activations(model)
    if others:
        return (f"not drawn: guided backprop has a rule for ReLU and ReLU6 only, and {model_label(model)} uses "
                f"{', '.join(others)}; through them the result would be (partly) the plain gradient, "
                "which captum's GuidedBackprop returns without saying so.")
    return None


def region_mask(shape: tuple[int, int], rows: tuple[float, float] = (0.0, 1.0),
                cols: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """A boolean (H, W) mask of the box whose ``rows`` and ``cols`` are given as fractions of
    the image's height and width: ``region_mask((224, 448), cols=(0, 0.5))`` is the left half."""
    height, width = shape
    if not (0 <= rows[0] < rows[1] <= 1 and 0 <= cols[0] < cols[1] <= 1):
        raise ValueError(f"rows and cols are (start, end) fractions with 0 <= start < end <= 1, got {rows}, {cols}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[round(rows[0] * height) : round(rows[1] * height), round(cols[0] * width) : round(cols[1] * width)] = True
    return mask


def mass_inside(values: Tensor, region: Tensor) -> float:
    """The share of a map's positive mass that falls inside ``region`` (a boolean (H, W) mask):
    ``sum of max(map, 0) over the region / sum over the whole image``. Evidence *for* a class
    is what a class-specific map should move to the object of that class."""
    if region.shape != values.shape or region.dtype != torch.bool:
        raise ValueError(f"region must be a boolean mask shaped like the map {tuple(values.shape)}, "
                         f"got {region.dtype} {tuple(region.shape)}")
    positive = values.clamp(min=0)
    total = float(positive.sum())
    return float(positive[region].sum()) / total if total > 0 else float("nan")


def _stage_name(model: nn.Module, path: str) -> str:
    for info in getattr(model, "feature_info", []):
        if info.module == path:
            return info.name
    return path


def _relative_delta(model: nn.Module, x: Tensor, baseline: Tensor, target: int, delta: Tensor) -> float:
    with torch.no_grad():
        difference = float(model(x)[0, target] - model(baseline)[0, target])
    return float(delta.detach().abs().max()) / max(abs(difference), 1e-12)


def _quietly(function, *args, **kwargs):
    """captum warns on every call that it sets hooks on the activations; that is expected here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks and attributes on non-linear")
        return function(*args, **kwargs)
