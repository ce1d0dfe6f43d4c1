"""Proof that a minibones model is the network it names: the same outputs as its reference.

Two questions, two tools:

* :func:`side_by_side` - *is it really the same network?* Port a randomly initialised
  reference into the minibones model and compare logits, every stage's feature map and a
  Grad-CAM; :func:`plot_side_by_side` shows them with their differences.
* :func:`compare_predictions` - *and with real weights?* The same photographs through
  minibones and its reference loaded with the same trained checkpoint (for EfficientNet-Lite,
  whose weights come with the course: :func:`packaged_reference`), top-5 and the largest
  difference of probability.

The reference itself is built by :mod:`minibones.reference`; what each backbone costs is
:mod:`minibones.compare`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

import minibones
from minibones.backbone import Backbone
from minibones.pretrained import categories_for, predict, preprocess_for, top_predictions, weights_for
from minibones.reference import build_reference, has_reference, randomize_, relative_error
from minibones.viz.gradcam import grad_cam, token_grid

# --- which reference module computes each stage ----------------------------------------


def _as_grid(output, like: Tensor, to_grid) -> Tensor | None:
    """``output`` as a (B, C, h, w) map shaped like ``like``, or None.

    CNN stages already are maps. A transformer block outputs tokens (B, 1 + N, D), class
    token first; ``to_grid`` (the ViT's own ``tokens_to_grid``, see
    :func:`minibones.viz.gradcam.token_grid`) lays its patch tokens on their grid, as the
    ViT's ``forward_stages`` does."""
    if not isinstance(output, Tensor):
        return None
    if output.shape == like.shape:
        return output
    batch, channels, height, width = like.shape
    if (to_grid is not None and output.ndim == 3 and output.shape[0] == batch and output.shape[2] == channels
            and output.shape[1] == 1 + height * width):
        return to_grid(output)
    return None


@torch.no_grad()
def match_reference_modules(
    model: Backbone, reference: nn.Module, x: Tensor, tolerance: float = 1e-4
) -> list[tuple[str, Tensor] | tuple[None, None]]:
    """For each stage of ``model`` on ``x``, the reference module computing the same map, and its map.

    Found by running the reference once with a hook on every module and looking for an
    output equal to ours (the outermost module wins: ``layer4`` rather than its last ReLU).
    The reference's modules may be reused and in place (torchvision's ResNet): the match is
    then only as good as the hook outputs, so check the reported names.
    """
    stages = model.forward_stages(x)
    to_grid = token_grid(model, x)
    outputs: list[tuple[str, Tensor]] = []
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: outputs.append((name, o)))
             for name, module in reference.named_modules() if name]
    try:
        reference(x)
    finally:
        for hook in hooks:
            hook.remove()
    matches = []
    for stage in stages:
        found = []
        for name, output in outputs:
            grid = _as_grid(output, stage, to_grid)
            if grid is not None and relative_error(grid, stage) < tolerance:
                found.append((name, grid))
        # the outermost module, and among those the last to run (an in-place ReLU rewrites the
        # output of the batch norm before it, which then looks like a match too)
        outermost = min((name.count(".") for name, _ in found), default=None)
        found = [f for f in found if f[0].count(".") == outermost]
        matches.append(found[-1] if found else (None, None))
    return matches


# --- side by side with the reference, random weights ------------------------------------


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


def _random_pair(model: str | Backbone, x: Tensor | None, reference: nn.Module | None, seed: int):
    """The model (built for ``x``'s size when named: torchvision's ViT asserts its size) and its
    reference, randomly initialised and ported into the model unless a reference is given."""
    if isinstance(model, str):
        torch.manual_seed(seed)
        model = minibones.create_model(model)
        fixed_size = model.config.reference_kwargs.get("image_size")
        if x is not None and fixed_size is not None and x.shape[-1] != fixed_size:
            torch.manual_seed(seed)
            model = minibones.create_model(model.config.name, image_size=x.shape[-1])
    if reference is None:
        if not has_reference(model):
            raise ValueError(f"{model.config.name} has no reference implementation to compare with")
        reference = randomize_(build_reference(model), seed)
        minibones.load_reference_weights(model, reference)
    return model.eval(), reference.eval()


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
    model, reference = _random_pair(model, x, reference, seed)
    if x is None:
        from minibones.data.photos import load_photo

        size = image_size or model.config.input_size[1]
        x = load_photo("cat", size=size, mean=model.config.mean, std=model.config.std).tensor
    with torch.no_grad():
        ours_logits, reference_logits = model(x), reference(x)
        stages = model.forward_stages(x)
    matches = match_reference_modules(model, reference, x)
    modules = [name for name, _ in matches]
    errors = [None if theirs is None else relative_error(ours, theirs) for ours, (_, theirs) in zip(stages, matches)]

    target = int(ours_logits[0].argmax())
    to_grid = token_grid(model, x)
    cam_ours = cam_reference = None
    for index in reversed(range(len(stages))):
        if modules[index] is None:
            continue
        layer = model.get_submodule(model.feature_info[index].module)
        cam_ours, depends = grad_cam(model, layer, x, target, to_grid)
        if depends:
            cam_reference, _ = grad_cam(reference, reference.get_submodule(modules[index]), x, target, to_grid)
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
    preprocess, categories = preprocess_for(model), categories_for(model)
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
    preprocess, categories = preprocess_for(model), categories_for(model)
    matches = []
    for name, image in images.items():
        x = preprocess(image).unsqueeze(0)
        ours, theirs = model.eval()(x)[0], reference.eval()(x)[0]
        p, q = ours.softmax(-1), theirs.softmax(-1)
        matches.append(PredictionMatch(name, top_predictions(p, categories), top_predictions(q, categories),
                                       float((p - q).abs().max()), float((ours - theirs).abs().max())))
    return matches
