"""Where the datasets live, and fetching a publisher's archive: download, md5 check, atomic unpacking.

Nothing half-done is ever left under a final name (:func:`minibones.files.atomic_path`): the
download is renamed into place only once its md5 matches, and the archive is unpacked beside
its final folder and renamed into place whole. An interrupted download or extraction is
simply redone next time. When a dataset can be neither found nor downloaded, the error says
which file to fetch, where to put it, and how to choose another place.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from minibones import files
from minibones.files import atomic_path, file_digest

DATA_ENV = "MINIBONES_DATA"


class DatasetNotFound(FileNotFoundError):
    """A dataset is neither on disk nor downloadable; the message says what to fetch and where to put it."""


def data_root() -> Path:
    """``$MINIBONES_DATA`` if set, else ``data/`` in the repository checkout (else ``~/.cache/minibones/data``)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    checkout = Path(__file__).resolve().parents[2]
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


def fetch(archive: Archive, root: Path, download: bool = True) -> Path:
    """The extracted folder ``root/archive.folder``, fetching and unpacking the archive if needed.

    An archive already in ``root`` (put there by hand, or by an earlier run that stopped
    before unpacking) is md5-checked first; a new download is checked before it lands.
    """
    root = Path(root)
    target = root / archive.folder
    if target.is_dir():
        return target
    path = root / archive.filename
    if path.is_file():
        _check_md5(path, archive, f"{path} is corrupt or incomplete", f"Delete it and download it again from {archive.url}")
    elif download:
        _download(archive, path)
    else:
        raise DatasetNotFound(_not_found(archive, root, "downloading is switched off"))
    _extract(path, root, archive.folder)
    return target


def _download(archive: Archive, path: Path) -> None:
    print(f"downloading {archive.url} to {path}")
    with atomic_path(path) as part:
        try:
            files.download(archive.url, part)
        except OSError as error:  # URLError, timeouts and refused connections are all OSErrors
            raise DatasetNotFound(_not_found(archive, path.parent, f"the download failed: {error}")) from error
        _check_md5(part, archive, f"the download of {archive.url} is corrupt", "Try again.")


def _check_md5(path: Path, archive: Archive, what: str, advice: str) -> None:
    actual = file_digest(path, "md5")
    if actual != archive.md5:
        raise DatasetNotFound(f"{what} (md5 {actual}, expected {archive.md5}). {advice}")


def _extract(path: Path, root: Path, folder: str) -> None:
    """Unpack the archive's top-level ``folder`` into ``root``: everything is extracted into a
    scratch folder beside it, and ``folder`` alone is renamed into place."""
    with (
        atomic_path(root / folder) as target,
        tempfile.TemporaryDirectory(prefix=f".{folder}-", dir=root) as scratch,
    ):
        with tarfile.open(path) as tar:
            tar.extractall(scratch, filter="data")  # "data": no absolute paths, links out, or devices
        if not (Path(scratch) / folder).is_dir():
            raise DatasetNotFound(f"{path} does not contain the folder {folder}/; is it the right archive?")
        os.replace(Path(scratch) / folder, target)


def _not_found(archive: Archive, root: Path, why: str) -> str:
    return (
        f"{archive.folder} is not in {root} and {why}. Download {archive.url} (md5 {archive.md5}) and put the "
        f"archive in {root}/ (it is checked and unpacked on first use), or unpack it there yourself so that "
        f"{root / archive.folder}/ exists; set {DATA_ENV}=/some/folder to use another place."
    )
