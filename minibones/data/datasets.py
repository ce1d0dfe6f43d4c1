"""The course's datasets, read from their publishers' formats into one shape, :class:`Data`.

Read top to bottom:
  * :class:`ImageTensors` and :class:`Data`: a split in memory, and a dataset ready for training;
  * the embedded default: scikit-learn's handwritten digits (:func:`digits`);
  * CIFAR-10/100 from the official pickle batches (:func:`cifar`);
  * Imagenette and any ImageFolder tree (:func:`imagenette`, :func:`image_folder`);
  * :func:`load_data`, the one entry point, with the fallback.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from minibones.backbone import CIFAR_MEAN, CIFAR_STD
from minibones.data.archives import (
    CIFAR10_ARCHIVE,
    CIFAR100_ARCHIVE,
    IMAGENETTE_ARCHIVE,
    DatasetNotFound,
    data_root,
    fetch,
)
from minibones.data.loaders import DeviceLoader, DeviceTensorLoader
from minibones.distributed import rank_and_world_size


# --- a dataset in memory -------------------------------------------------------------


@dataclass
class ImageTensors:
    """A whole split in memory: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,).

    uint8 keeps it small (CIFAR-10's 60,000 images are 184 MB) and is what goes to
    the GPU; conversion to float and normalisation happen there, per batch.
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"expected {self.images.shape[0]} labels, got shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])


@dataclass
class Data:
    """A dataset ready for training: two splits, the class names, and how to feed them.

    ``train`` and ``test`` are :class:`ImageTensors` (small datasets, kept in memory,
    and on the GPU when there is one) or torch ``Dataset`` objects yielding
    ``(uint8 image tensor, label)`` (image folders, read by DataLoader workers).
    ``flip`` says whether a mirrored image keeps its label (a photo of a dog: yes;
    a handwritten 2: no), ``crop_padding`` how far the random crop may shift.
    """

    name: str
    train: ImageTensors | torch.utils.data.Dataset
    test: ImageTensors | torch.utils.data.Dataset
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    source: str
    flip: bool = True
    crop_padding: int = 4

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train, ImageTensors)

    def __repr__(self) -> str:
        return (
            f"Data({self.name!r}: {len(self.train)} train / {len(self.test)} test images, {self.num_classes} classes, "
            f"{self.image_size}x{self.image_size}, from {self.source})"
        )

    def subset(self, train: int | None = None, test: int | None = None) -> Data:
        """The first ``train`` and ``test`` images of each split, for quick runs.

        The splits are stored in a shuffled order, so a prefix is a fair sample.
        """

        def head(split, n):
            if n is None or n >= len(split):
                return split
            if isinstance(split, ImageTensors):
                return ImageTensors(split.images[:n], split.labels[:n])
            return torch.utils.data.Subset(split, range(n))

        return replace(self, train=head(self.train, train), test=head(self.test, test))

    def loaders(
        self,
        batch_size: int,
        device: str | torch.device = "cpu",
        *,
        seed: int = 0,
        workers: int | None = None,
        channels_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        """A training and a test loader yielding normalised float batches on ``device``.

        ``batch_size`` is the *global* batch: under ``torchrun`` each of the
        ``world_size`` processes gets its own ``batch_size // world_size`` slice of
        every batch (rank and world size are read from torch.distributed when it
        is initialised). Training batches are reshuffled and re-augmented each epoch
        from ``seed`` and the epoch number alone (call ``set_epoch``), which is what
        makes a resumed run identical to an uninterrupted one.
        """
        running_rank, running_world_size = rank_and_world_size()  # (0, 1) outside torchrun
        rank = running_rank if rank is None else rank
        world_size = running_world_size if world_size is None else world_size
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes ({world_size})")
        device = torch.device(device)
        common = dict(mean=self.mean, std=self.std, device=device, rank=rank, world_size=world_size,
                      channels_last=channels_last)
        if self.in_memory:
            train = DeviceTensorLoader(self.train, batch_size, train=True, seed=seed, flip=self.flip,
                                       crop_padding=self.crop_padding, **common)
            test = DeviceTensorLoader(self.test, batch_size, train=False, **common)
            return train, test
        workers = min(8, os.cpu_count() or 1) if workers is None else workers
        return (
            DeviceLoader(self.train, batch_size, train=True, seed=seed, workers=workers, **common),
            DeviceLoader(self.test, batch_size, train=False, seed=seed, workers=workers, **common),
        )


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pixels = images.float().div_(255).transpose(0, 1).reshape(3, -1)
    return tuple(round(v, 4) for v in pixels.mean(1).tolist()), tuple(round(v, 4) for v in pixels.std(1).tolist())


# --- the embedded default: scikit-learn's handwritten digits -------------------------

DIGITS_TEST_FRACTION = 0.2


def digits(image_size: int = 32) -> Data:
    """Handwritten digits scanned at UCI (scikit-learn's ``load_digits``), as 32x32 RGB images.

    Why these: they are real scans (1,797 of them, from 43 writers, 10 balanced
    classes), every installation of the course has them (scikit-learn ships the
    file), and they are small enough that a ResNet-20 learns them well above
    chance in well under a minute on 2 CPU cores, which is what the CPU-quick
    notebooks need. Crops of the sample photographs were the alternative, but
    classes made of regions of five pictures teach texture matching, not
    recognition.

    How: each 8x8 scan (17 grey levels) is upsampled bilinearly to
    ``image_size`` and copied to three channels. The ink stays bright on a black
    page, so the zeros that the random crop pads with look like paper.

    The split cannot leak: identical scans are removed *before* splitting (the
    current file has none, the check stays), then 20% of each class goes to the
    test set by a fixed permutation. The same test images come out on every
    machine, and no test image appears in the training set. (The writers are not
    recorded, so the same hand can appear on both sides, as in the original
    UCI split.) Horizontal flips are off: a mirrored 2 is not a 2.
    """
    from sklearn.datasets import load_digits

    scans = load_digits()
    pixels = scans.images.astype(np.uint8).reshape(len(scans.images), -1)  # (1797, 64), values 0..16
    _, first = np.unique(pixels, axis=0, return_index=True)
    keep = np.sort(first)  # drop exact duplicates, keep the file's order
    labels = scans.target[keep]

    rng = np.random.default_rng(0)
    test_index, train_index = [], []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(DIGITS_TEST_FRACTION * len(members))
        test_index.append(members[:n_test])
        train_index.append(members[n_test:])
    # shuffle within each split so that a prefix (Data.subset) has every class
    train_index, test_index = rng.permutation(np.concatenate(train_index)), rng.permutation(np.concatenate(test_index))

    grey = torch.from_numpy(pixels[keep].reshape(-1, 1, 8, 8)).float() / 16
    grey = F.interpolate(grey, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (grey.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(labels).long()
    train = ImageTensors(images[train_index], labels[train_index])
    test = ImageTensors(images[test_index], labels[test_index])
    mean, std = _channel_stats(train.images)
    return Data(
        "digits", train, test, classes=[str(c) for c in range(10)], mean=mean, std=std, image_size=image_size,
        source="scikit-learn's load_digits (UCI handwritten digits, embedded)", flip=False,
        crop_padding=image_size // 8,
    )


# --- CIFAR-10 and CIFAR-100: the official python pickle batches -----------------------

# folder layout of the official archives: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
# and cifar-100-python/{train, test, meta}; each batch is a pickled dict with "data": (N, 3072) uint8
# (R, G, B planes of 32x32) and the labels.
CIFAR = {
    "cifar10": dict(archive=CIFAR10_ARCHIVE, train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    meta="batches.meta", labels="labels", names="label_names"),
    "cifar100": dict(archive=CIFAR100_ARCHIVE, train=["train"], test=["test"],
                     meta="meta", labels="fine_labels", names="fine_label_names"),
}


def cifar(name: str = "cifar10", root: str | Path | None = None, download: bool = True) -> Data:
    """CIFAR-10 or CIFAR-100 (Krizhevsky 2009) read into memory from the official batches."""
    if name not in CIFAR:
        raise ValueError(f"unknown CIFAR {name!r}; choose 'cifar10' or 'cifar100'")
    spec = CIFAR[name]
    folder = fetch(spec["archive"], Path(root or data_root()), download)
    train, test = (_read_cifar_batches(folder, spec[split], spec["labels"]) for split in ("train", "test"))
    classes = _unpickle(folder / spec["meta"])[spec["names"]]
    mean, std = (CIFAR_MEAN, CIFAR_STD) if name == "cifar10" else _channel_stats(train.images)
    return Data(name, train, test, classes=list(classes), mean=mean, std=std, image_size=32, source=str(folder))


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DatasetNotFound(f"{path} is missing: {path.parent} is not a complete copy of the dataset; delete it "
                              "and unpack the archive again")
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")  # the batches were pickled by Python 2


def _read_cifar_batches(folder: Path, files: list[str], label_key: str) -> ImageTensors:
    batches = [_unpickle(folder / name) for name in files]
    data = np.concatenate([np.asarray(batch["data"], dtype=np.uint8) for batch in batches])
    labels = np.concatenate([np.asarray(batch[label_key], dtype=np.int64) for batch in batches])
    return ImageTensors(torch.from_numpy(data).reshape(-1, 3, 32, 32), torch.from_numpy(labels))


# --- Imagenette and any ImageFolder tree ---------------------------------------------

IMAGENETTE_CLASSES = {  # WordNet ids (the folder names) and what they are
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
}


def image_folder(
    path: str | Path,
    image_size: int = 224,
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    name: str | None = None,
) -> Data:
    """Any dataset laid out as ``path/train/<class>/*.jpg`` and ``path/val/<class>/*.jpg`` (or ``test/``).

    Training images get a random resized crop and a flip; test images are resized
    to ``image_size / 0.875`` and centre-cropped, the usual ImageNet evaluation.
    Images are decoded by DataLoader workers and sent to the device as uint8.
    """
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    path = Path(path)
    test_dir = next((path / d for d in ("val", "test") if (path / d).is_dir()), None)
    if not (path / "train").is_dir() or test_dir is None:
        found = ", ".join(sorted(p.name for p in path.iterdir())) if path.is_dir() else "nothing"
        raise DatasetNotFound(
            f"{path} should hold train/ and val/ (or test/), each with one folder of images per class, "
            f"e.g. train/cat/001.jpg; found: {found}"
        )
    train_tf = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()])
    test_tf = v2.Compose([v2.ToImage(), v2.Resize(round(image_size / 0.875), antialias=True),
                          v2.CenterCrop(image_size)])
    train, test = ImageFolder(path / "train", train_tf), ImageFolder(test_dir, test_tf)
    if train.classes != test.classes:
        raise ValueError(f"{path}: train/ and {test_dir.name}/ have different class folders")
    return Data(name or path.name, train, test, classes=train.classes, mean=mean, std=std,
                image_size=image_size, source=str(path))


def imagenette(root: str | Path | None = None, download: bool = True, image_size: int = 128) -> Data:
    """Imagenette (fast.ai): 10 easy ImageNet classes, 9,469 train / 3,925 val images, 160px version."""
    folder = fetch(IMAGENETTE_ARCHIVE, Path(root or data_root()), download)
    data = image_folder(folder, image_size=image_size, name="imagenette")
    data.classes = [IMAGENETTE_CLASSES.get(wnid, wnid) for wnid in data.classes]
    return data


# --- the one entry point ---------------------------------------------------------------

DATASETS = ("digits", "cifar10", "cifar100", "imagenette")


def load_data(
    name: str = "digits",
    root: str | Path | None = None,
    *,
    download: bool = True,
    fallback: bool = True,
    image_size: int | None = None,
    verbose: bool = True,
) -> Data:
    """The dataset called ``name``: one of ``DATASETS``, or the path of an ImageFolder tree.

    A real dataset is read from ``root`` (default :func:`data_root`), downloaded if
    it is not there and ``download`` is on. If that fails and ``fallback`` is on,
    the embedded digits are used instead, and a line says so: nothing is silent.
    """
    size = {} if image_size is None else {"image_size": image_size}
    if name == "digits":
        return digits(**size)
    try:
        if name in CIFAR:
            if image_size not in (None, 32):
                raise ValueError(f"{name} images are 32x32; image_size={image_size} is not supported")
            return cifar(name, root, download)
        if name == "imagenette":
            return imagenette(root, download, **size)
        if Path(name).is_dir() or os.sep in name or name.startswith("."):
            return image_folder(name, **size)
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)} or give the path of an "
                         "ImageFolder tree (train/<class>/*.jpg and val/<class>/*.jpg)")
    except DatasetNotFound as error:
        if not fallback:
            raise
        if verbose:
            print(f"{name} is not available, so the embedded digits dataset is used instead. ({error})")
        return digits(**size)


