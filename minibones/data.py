"""The course's data: real datasets when you have them, an embedded default when you don't.

    >>> data = load_data("cifar10")          # local copy, else download, else the digits (said out loud)
    >>> train_loader, test_loader = data.loaders(batch_size=128, device="cuda")

Where the files live (see ``data/README.md``): the folder named by the environment
variable ``MINIBONES_DATA``, else ``data/`` at the top of the repository. Every
dataset is read from its *standard* layout there (the one its publisher ships),
so a copy made by hand, by torchvision or by another course works as it is.

Read top to bottom:
  * where data lives, and fetching an archive (download, md5 check, atomic extract);
  * the embedded default: scikit-learn's handwritten digits (:func:`digits`);
  * CIFAR-10/100 from the official pickle batches (:func:`cifar`);
  * Imagenette and any ImageFolder tree (:func:`imagenette`, :func:`image_folder`);
  * :func:`load_data`, the one entry point, with the fallback;
  * the loaders: :class:`DeviceTensorLoader` keeps a small dataset on the GPU and
    augments it there; :class:`DeviceLoader` wraps a DataLoader for image folders.

The sample photographs for looking inside networks are in :mod:`minibones.photos`
(re-exported here as :func:`load_photo`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from minibones.backbone import CIFAR_MEAN, CIFAR_STD
from minibones.photos import PHOTOS, load_photo  # noqa: F401  (re-exported: all the course's data in one place)

DATA_ENV = "MINIBONES_DATA"


class DatasetNotFound(FileNotFoundError):
    """A dataset is neither on disk nor downloadable; the message says what to fetch and where to put it."""


# --- where data lives, and fetching an archive --------------------------------------


def data_root() -> Path:
    """``$MINIBONES_DATA`` if set, else ``data/`` in the repository checkout (else ``~/.cache/minibones/data``)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "data"
    return Path.home() / ".cache" / "minibones" / "data"


@dataclass(frozen=True)
class Archive:
    """A published archive: where to get it, its md5, and the folder it unpacks to."""

    url: str
    md5: str
    folder: str  # top-level folder inside the archive

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# The publishers' archives (the same URLs and checksums as torchvision's datasets).
CIFAR10_ARCHIVE = Archive(
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"
)
CIFAR100_ARCHIVE = Archive(
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"
)
IMAGENETTE_ARCHIVE = Archive(  # the official 160px version (short side 160 px, 94 MB)
    "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412",
    "imagenette2-160",
)


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(archive: Archive, root: Path, download: bool = True) -> Path:
    """The extracted folder ``root/archive.folder``, fetching and unpacking the archive if needed.

    Nothing half-done is ever left under a final name: the download goes to
    ``<name>.part`` and is renamed only once its md5 matches, and the archive is
    extracted into a temporary folder that is renamed into place at the end. An
    interrupted download or extraction is simply redone next time.
    """
    root = Path(root)
    target = root / archive.folder
    if target.is_dir():
        return target
    path = root / archive.filename
    if not path.is_file():
        if not download:
            raise DatasetNotFound(_not_found(archive, root, "downloading is switched off"))
        _download(archive, path)
    actual = md5sum(path)
    if actual != archive.md5:
        raise DatasetNotFound(
            f"{path} is corrupt or incomplete (md5 {actual}, expected {archive.md5}). "
            f"Delete it and download it again from {archive.url}"
        )
    _extract_atomically(path, root, archive.folder)
    return target


def _download(archive: Archive, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    print(f"downloading {archive.url} to {path}")
    try:
        with urllib.request.urlopen(archive.url, timeout=30) as response, open(part, "wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)
    except OSError as error:  # URLError, timeouts and refused connections are all OSErrors
        part.unlink(missing_ok=True)
        raise DatasetNotFound(_not_found(archive, path.parent, f"the download failed: {error}")) from error
    actual = md5sum(part)
    if actual != archive.md5:
        part.unlink()
        raise DatasetNotFound(
            f"the download of {archive.url} is corrupt (md5 {actual}, expected {archive.md5}); try again"
        )
    os.replace(part, path)


def _extract_atomically(path: Path, root: Path, folder: str) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=root))
    try:
        with tarfile.open(path) as tar:
            tar.extractall(scratch, filter="data")  # "data": no absolute paths, links out, or devices
        if not (scratch / folder).is_dir():
            raise DatasetNotFound(f"{path} does not contain the folder {folder}/; is it the right archive?")
        os.replace(scratch / folder, root / folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _not_found(archive: Archive, root: Path, why: str) -> str:
    return (
        f"{archive.folder} is not in {root} and {why}. Download {archive.url} (md5 {archive.md5}) and put the "
        f"archive in {root}/ (it is checked and unpacked on first use), or unpack it there yourself so that "
        f"{root / archive.folder}/ exists; set {DATA_ENV}=/some/folder to use another place."
    )


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
        rank, world_size = _rank_and_world_size(rank, world_size)
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


def _rank_and_world_size(rank: int | None, world_size: int | None) -> tuple[int, int]:
    dist = torch.distributed
    running = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if running else 0
    if world_size is None:
        world_size = dist.get_world_size() if running else 1
    return rank, world_size


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


# --- the loaders -----------------------------------------------------------------------


def normalize(images: Tensor, mean: Tensor, std: Tensor, memory_format=torch.contiguous_format) -> Tensor:
    """uint8 (B, 3, H, W) on the device -> float, (x/255 - mean) / std, in the requested memory format."""
    x = (images.float() / 255 - mean) / std
    return x.contiguous(memory_format=memory_format)


def random_crop_flip(images: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, padding: int) -> Tensor:
    """Per image: pad by ``padding`` with zeros, cut an H x W window at offset (dy, dx),
    and mirror it where ``flip`` is true; one gather for the whole batch, on the device.

    The usual CIFAR augmentation (RandomCrop(32, padding=4) and a horizontal flip),
    vectorised: instead of cropping images one by one on the CPU, build the row and
    column each output pixel reads from (a flip reads the columns backwards).
    """
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = dy[:, None] + torch.arange(height, device=images.device)  # (B, H)
    cols = dx[:, None] + torch.arange(width, device=images.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    index = torch.arange(batch, device=images.device)[:, None, None]
    out = padded[index, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced indices come first
    return out.permute(0, 3, 1, 2)  # (B, C, H, W), laid out channels-last in memory


class DeviceTensorLoader:
    """Batches of an in-memory dataset, stored, shuffled and augmented on the device.

    A CPU DataLoader decoding and cropping 32x32 images one at a time cannot keep a
    GPU busy on CIFAR (a ResNet-18 step on a modern GPU takes a few milliseconds).
    Here the whole split sits on the GPU as uint8, and each batch is an index, one
    gather (crop and flip) and one normalisation, all on the device.

    Training: each epoch draws one permutation and one crop offset and flip per
    image from a generator seeded by ``(seed, epoch)``, so the batches of epoch ``e``
    are the same whatever happened before (resuming needs nothing else), and every
    process of a distributed run draws the same global batch and takes its own
    slice of it. The last incomplete batch is dropped (a batch of one breaks batch
    norm). Test: in order, no augmentation, each process reads its own shard.
    """

    def __init__(self, data: ImageTensors, batch_size: int, *, mean, std, device, train: bool, seed: int = 0,
                 flip: bool = True, crop_padding: int = 4, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False):
        self.device = torch.device(device)
        self.train = train
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.local_batch = batch_size // world_size
        self.seed, self.epoch = seed, 0
        self.flip, self.crop_padding = flip, crop_padding
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if train:
            self.images, self.labels = data.images.to(self.device), data.labels.to(self.device)
            if len(self) == 0:
                raise ValueError(f"{len(data)} training images make no complete batch of {batch_size}")
        else:  # a contiguous shard per process; the metrics are summed across processes
            shard = torch.arange(len(data)).tensor_split(world_size)[rank]
            self.images, self.labels = data.images[shard].to(self.device), data.labels[shard].to(self.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.train else -(-n // self.local_batch)

    def __iter__(self):
        n = self.images.shape[0]
        if not self.train:
            for start in range(0, n, self.local_batch):
                end = start + self.local_batch
                yield normalize(self.images[start:end], self.mean, self.std, self.memory_format), self.labels[start:end]
            return
        generator = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, device=self.device, generator=generator)
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (2, n), device=self.device, generator=generator)
        flips = torch.rand(n, device=self.device, generator=generator) < 0.5
        flips &= self.flip
        for i in range(len(self)):
            start = i * self.batch_size + self.rank * self.local_batch  # this process's slice of global batch i
            index = order[start : start + self.local_batch]
            images = random_crop_flip(self.images[index], offsets[0, index], offsets[1, index], flips[index],
                                      self.crop_padding)
            yield normalize(images, self.mean, self.std, self.memory_format), self.labels[index]


class DeviceLoader:
    """A DataLoader for image folders: workers decode and augment on the CPU and
    return uint8 batches, which are sent to the device (pinned, asynchronously) and
    normalised there. Training samples are drawn by a DistributedSampler seeded by
    ``(seed, epoch)`` (also in a single process, so that order never depends on
    what ran before); test images are read in order, a contiguous shard per process."""

    def __init__(self, dataset, batch_size: int, *, mean, std, device, train: bool, seed: int = 0, workers: int = 4,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False):
        from torch.utils.data import DataLoader, DistributedSampler, Subset

        self.device = torch.device(device)
        self.sampler = None
        if train:
            self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, seed=seed, drop_last=True)
        else:
            dataset = Subset(dataset, torch.arange(len(dataset)).tensor_split(world_size)[rank].tolist())
        self.loader = DataLoader(dataset, batch_size // world_size, sampler=self.sampler, num_workers=workers,
                                 pin_memory=self.device.type == "cuda", drop_last=train,
                                 persistent_workers=workers > 0)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            images = images.as_subclass(Tensor).to(self.device, non_blocking=True)
            yield normalize(images, self.mean, self.std, self.memory_format), labels.to(self.device, non_blocking=True)
