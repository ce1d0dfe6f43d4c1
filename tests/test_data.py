"""Datasets are read from their publishers' on-disk formats, fetched safely, and fed on the device.

Every test builds tiny files in the real formats (CIFAR's pickled batches, the
Imagenette archive and folder tree) and reads them offline.
"""

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from minibones import data as D
from minibones.data import (
    Archive,
    DatasetNotFound,
    DeviceTensorLoader,
    ImageTensors,
    cifar,
    digits,
    image_folder,
    imagenette,
    load_data,
    random_crop_flip,
)


@pytest.fixture(scope="module")
def digits32():
    return digits()


# --- the embedded default ----------------------------------------------------------------


def test_digits_are_1797_real_scans_as_32x32_rgb_in_ten_balanced_classes(digits32):
    data = digits32
    assert len(data.train) + len(data.test) == 1797
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 32, 32)
    assert data.classes == [str(c) for c in range(10)]
    per_class = torch.bincount(data.test.labels, minlength=10)
    assert per_class.min() >= 34 and per_class.max() <= 37  # 20% of each class
    assert not data.flip  # a mirrored 2 is not a 2


def test_digits_split_is_the_same_every_time(digits32):
    again = digits()
    assert torch.equal(again.train.images, digits32.train.images)
    assert torch.equal(again.test.labels, digits32.test.labels)


def test_no_digit_scan_is_on_both_sides_of_the_split(digits32):
    def fingerprints(split):
        return {hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in split.images}

    train, test = fingerprints(digits32.train), fingerprints(digits32.test)
    assert len(train) == len(digits32.train) and len(test) == len(digits32.test)  # no duplicates within either
    assert not train & test


def test_subset_takes_a_prefix_with_every_class(digits32):
    small = digits32.subset(train=100, test=50)
    assert (len(small.train), len(small.test)) == (100, 50)
    assert len(torch.unique(small.train.labels)) == 10


# --- where data lives, and what happens when it is not there ---------------------------


def test_data_root_is_MINIBONES_DATA_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIBONES_DATA", str(tmp_path))
    assert D.data_root() == tmp_path
    monkeypatch.delenv("MINIBONES_DATA")
    assert D.data_root() == Path(__file__).resolve().parents[1] / "data"  # data/ at the top of the checkout


def test_a_missing_dataset_says_what_to_download_and_where(tmp_path):
    with pytest.raises(DatasetNotFound) as error:
        cifar("cifar10", root=tmp_path, download=False)
    message = str(error.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert str(tmp_path) in message and "MINIBONES_DATA" in message


def test_a_missing_dataset_falls_back_to_the_digits_and_says_so(tmp_path, capsys):
    data = load_data("cifar10", root=tmp_path, download=False)
    assert data.name == "digits"
    assert "cifar10 is not available, so the embedded digits dataset is used instead" in capsys.readouterr().out


def test_no_fallback_means_an_error(tmp_path):
    with pytest.raises(DatasetNotFound):
        load_data("imagenette", root=tmp_path, download=False, fallback=False)


def test_archive_constants_match_torchvision():
    assert (D.CIFAR10_ARCHIVE.url, D.CIFAR10_ARCHIVE.md5) == (torchvision.datasets.CIFAR10.url,
                                                              torchvision.datasets.CIFAR10.tgz_md5)
    assert (D.CIFAR100_ARCHIVE.url, D.CIFAR100_ARCHIVE.md5) == (torchvision.datasets.CIFAR100.url,
                                                                torchvision.datasets.CIFAR100.tgz_md5)
    assert (D.IMAGENETTE_ARCHIVE.url, D.IMAGENETTE_ARCHIVE.md5) == torchvision.datasets.Imagenette._ARCHIVES["160px"]


# --- CIFAR: the pickled batches ------------------------------------------------------------


def write_cifar(folder: Path, name: str, rng: np.random.Generator) -> dict:
    """Tiny CIFAR files in the official layout: a pickled dict per batch, "data" (N, 3072)
    uint8 holding the R, G and B planes of each 32x32 image, and its labels."""
    folder.mkdir(parents=True)
    if name == "cifar10":
        files = {f"data_batch_{i}": 3 for i in range(1, 6)} | {"test_batch": 4}
        label_key, meta = "labels", ("batches.meta", {"label_names": [f"class{i}" for i in range(10)],
                                                      "num_cases_per_batch": 3, "num_vis": 3072})
    else:
        files = {"train": 6, "test": 4}
        label_key, meta = "fine_labels", ("meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                                   "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    written = {}
    for file, n in files.items():
        batch = {"batch_label": file, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, 10, n).tolist(), "filenames": [f"img{i}.png" for i in range(n)]}
        if name == "cifar100":
            batch["coarse_labels"] = rng.integers(0, 20, n).tolist()
        (folder / file).write_bytes(pickle.dumps(batch, protocol=2))
        written[file] = batch
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1], protocol=2))
    return written


def test_cifar10_is_read_from_the_official_pickle_batches(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", "cifar10", np.random.default_rng(0))
    data = cifar("cifar10", root=tmp_path, download=False)
    assert (len(data.train), len(data.test)) == (15, 4)
    assert data.classes == [f"class{i}" for i in range(10)]
    first = batches["data_batch_1"]["data"][0]
    assert torch.equal(data.train.images[0, 0], torch.from_numpy(first[:1024].reshape(32, 32)))  # the red plane
    assert torch.equal(data.train.images[0, 2], torch.from_numpy(first[2048:].reshape(32, 32)))  # the blue plane
    assert data.train.labels.tolist()[:3] == batches["data_batch_1"]["labels"]
    assert data.test.labels.tolist() == batches["test_batch"]["labels"]
    assert data.mean == (0.4914, 0.4822, 0.4465)


def test_cifar100_uses_the_fine_labels(tmp_path):
    batches = write_cifar(tmp_path / "cifar-100-python", "cifar100", np.random.default_rng(1))
    data = cifar("cifar100", root=tmp_path, download=False)
    assert data.num_classes == 100
    assert data.train.labels.tolist() == batches["train"]["fine_labels"]


def test_an_incomplete_cifar_folder_says_so(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py", "cifar10", np.random.default_rng(0))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFound, match="data_batch_3 is missing"):
        cifar("cifar10", root=tmp_path, download=False)


def make_archive(source: Path, folder: str, path: Path) -> Archive:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source / folder, arcname=folder)
    return Archive(path.as_uri(), hashlib.md5(path.read_bytes()).hexdigest(), folder)


@pytest.fixture
def cifar_archive(tmp_path, monkeypatch):
    """A tiny cifar-10-python.tar.gz served from a file:// URL, in place of the real one."""
    write_cifar(tmp_path / "src" / "cifar-10-batches-py", "cifar10", np.random.default_rng(0))
    (tmp_path / "server").mkdir()
    archive = make_archive(tmp_path / "src", "cifar-10-batches-py", tmp_path / "server" / "cifar-10-python.tar.gz")
    monkeypatch.setitem(D.CIFAR, "cifar10", D.CIFAR["cifar10"] | {"archive": archive})
    return archive


def test_cifar_is_downloaded_md5_checked_and_unpacked_when_missing(tmp_path, cifar_archive, capsys):
    root = tmp_path / "root"
    data = cifar("cifar10", root=root, download=True)
    assert len(data.train) == 15
    assert "downloading" in capsys.readouterr().out
    # the archive is kept, the folder is in place, nothing temporary is left behind
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_an_archive_put_there_by_hand_is_checked_and_unpacked(tmp_path, cifar_archive):
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes((tmp_path / "server" / "cifar-10-python.tar.gz").read_bytes())
    assert len(cifar("cifar10", root=root, download=False).test) == 4


def test_a_corrupt_archive_is_refused_with_what_to_do(tmp_path, cifar_archive):
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(b"half a download")
    actual = hashlib.md5(b"half a download").hexdigest()
    with pytest.raises(DatasetNotFound) as error:
        cifar("cifar10", root=root, download=False)
    assert str(error.value) == (f"{root / 'cifar-10-python.tar.gz'} is corrupt or incomplete (md5 {actual}, expected "
                                f"{cifar_archive.md5}). Delete it and download it again from {cifar_archive.url}")
    assert not (root / "cifar-10-batches-py").exists()


def test_a_corrupt_download_is_refused_and_removed(tmp_path, cifar_archive, monkeypatch):
    wrong = Archive(cifar_archive.url, "0" * 32, cifar_archive.folder)
    monkeypatch.setitem(D.CIFAR, "cifar10", D.CIFAR["cifar10"] | {"archive": wrong})
    with pytest.raises(DatasetNotFound, match=rf"the download of {cifar_archive.url} is corrupt .*expected 0{{32}}"):
        cifar("cifar10", root=tmp_path / "root", download=True)
    assert list((tmp_path / "root").iterdir()) == []


def test_a_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    gone = Archive((tmp_path / "nowhere.tar.gz").as_uri(), "0" * 32, "cifar-10-batches-py")
    monkeypatch.setitem(D.CIFAR, "cifar10", D.CIFAR["cifar10"] | {"archive": gone})
    with pytest.raises(DatasetNotFound, match="the download failed"):
        cifar("cifar10", root=tmp_path / "root", download=True)
    assert list((tmp_path / "root").iterdir()) == []


def test_an_interrupted_extraction_leaves_no_half_folder(tmp_path, cifar_archive, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes((tmp_path / "server" / "cifar-10-python.tar.gz").read_bytes())

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "extractall", crash)
    with pytest.raises(KeyboardInterrupt):
        cifar("cifar10", root=root, download=False)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]


# --- Imagenette and image folders --------------------------------------------------------------


def write_jpeg(path: Path, color, size=(40, 30)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")


@pytest.fixture
def imagenette_archive(tmp_path, monkeypatch):
    """An imagenette2-160.tgz with the official tree: imagenette2-160/{train,val}/<wordnet id>/*.JPEG."""
    tree = tmp_path / "src" / "imagenette2-160"
    for split, n in (("train", 3), ("val", 2)):
        for wnid, color in (("n01440764", (200, 30, 30)), ("n02102040", (30, 30, 200))):
            for i in range(n):
                write_jpeg(tree / split / wnid / f"{wnid}_{i}.JPEG", color)
    (tree / "noisy_imagenette.csv").write_text("path,noisy_labels_0\n")
    (tmp_path / "server").mkdir()
    archive = make_archive(tmp_path / "src", "imagenette2-160", tmp_path / "server" / "imagenette2-160.tgz")
    monkeypatch.setattr("minibones.data.datasets.IMAGENETTE_ARCHIVE", archive)
    return archive


def test_imagenette_archive_is_verified_unpacked_and_read_as_a_folder_tree(tmp_path, imagenette_archive):
    root = tmp_path / "root"
    data = imagenette(root=root, download=True, image_size=24)
    assert (root / "imagenette2-160" / "val" / "n02102040").is_dir()
    assert data.classes == ["tench", "English springer"]
    assert (len(data.train), len(data.test)) == (6, 4)
    train_loader, test_loader = data.loaders(batch_size=2, workers=0)
    images, labels = next(iter(test_loader))
    assert images.shape == (2, 3, 24, 24) and images.dtype == torch.float32
    red = (torch.tensor([200, 30, 30]) / 255 - torch.tensor(data.mean)) / torch.tensor(data.std)
    assert torch.allclose(images[0, :, 12, 12], red, atol=0.15)  # normalised on the way (JPEG is lossy)
    assert labels.tolist() == [0, 0]
    assert len(train_loader) == 3


def test_image_folder_needs_train_and_val(tmp_path):
    write_jpeg(tmp_path / "pets" / "train" / "cat" / "1.jpg", (0, 0, 0))
    with pytest.raises(DatasetNotFound, match="should hold train/ and val/"):
        image_folder(tmp_path / "pets")
    write_jpeg(tmp_path / "pets" / "test" / "cat" / "1.jpg", (0, 0, 0))
    assert image_folder(tmp_path / "pets", image_size=16).classes == ["cat"]


# --- the loaders -----------------------------------------------------------------------------------


def test_random_crop_flip_is_a_padded_crop_then_a_mirror():
    images = torch.randint(0, 256, (6, 3, 7, 9), dtype=torch.uint8)
    dy, dx = torch.tensor([0, 1, 2, 3, 4, 2]), torch.tensor([4, 3, 0, 2, 1, 2])
    flip = torch.tensor([True, False, True, False, True, False])
    out = random_crop_flip(images, dy, dx, flip, padding=2)
    for b in range(6):
        expected = F.pad(images[b], (2, 2, 2, 2))[:, dy[b] : dy[b] + 7, dx[b] : dx[b] + 9]
        assert torch.equal(out[b], expected.flip(2) if flip[b] else expected)


def small_split(n=40, size=8):
    generator = torch.Generator().manual_seed(0)
    return ImageTensors(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator),
                        torch.arange(n) % 10)


def make_loader(split, **kwargs):
    options = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), device="cpu", train=True, seed=3)
    return DeviceTensorLoader(split, 8, **(options | kwargs))


def test_training_batches_depend_on_the_seed_and_epoch_only():
    split = small_split()
    loader = make_loader(split)
    loader.set_epoch(2)
    first = [x for x, _ in loader]
    loader.set_epoch(0)
    list(loader)
    loader.set_epoch(2)
    assert all(torch.equal(a, b) for (a, b) in zip(first, (x for x, _ in loader)))
    loader.set_epoch(3)
    assert not torch.equal(first[0], next(iter(loader))[0])
    assert len(loader) == 5 and len(first) == 5


def test_two_processes_split_every_global_batch_between_them():
    split = small_split()
    whole = list(make_loader(split))
    halves = [list(make_loader(split, rank=r, world_size=2)) for r in (0, 1)]
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *halves):
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))


def test_test_shards_cover_every_image_exactly_once():
    split = small_split(n=43)
    labels = [y for r in range(3) for _, y in make_loader(split, train=False, rank=r, world_size=3)]
    assert torch.equal(torch.cat(labels), split.labels)


def test_loader_output_is_normalised_and_can_be_channels_last():
    split = small_split()
    x, _ = next(iter(make_loader(split, train=False, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x, (split.images[:8].float() / 255 - 0.5) / 0.25)


def test_batch_size_must_split_evenly_across_processes(digits32):
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        digits32.loaders(batch_size=9, rank=0, world_size=2)
