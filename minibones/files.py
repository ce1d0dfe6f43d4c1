"""Files that are never half-written, and the one way the library downloads and checks them.

:func:`atomic_path` writes a file (or a folder) atomically: every download, checkpoint and
dataset extraction in the library goes through it. :func:`download` streams a URL into such
a temporary name with a progress bar, and :func:`file_digest` hashes what arrived, so that
the caller (a dataset archive and its md5, a checkpoint and its SHA-256) checks it before the
rename publishes it.

Why atomic: a crash, a full disk or Ctrl-C in the middle of a write must leave either the
previous file or no file under the final name, never a truncated one that a later run trusts.
The recipe is the POSIX one: write to a temporary name in the *same folder* (so the rename
cannot cross file systems), flush it to disk, then ``os.replace`` it onto the final name,
which is atomic. Whatever happens, the temporary name is removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an exception it
    is renamed onto ``path`` (a file or a folder), otherwise it is removed.

    The temporary name starts with a dot and ends with ``.partial``, so it can never be taken
    for the real thing. Inside the block, verify what was written (a hash, a folder layout) and
    raise to throw it away.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    temporary = Path(temporary)
    temporary.unlink()  # the block creates a file or a folder under this name
    try:
        yield temporary
        if temporary.is_file():
            with open(temporary, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


def download(url: str, destination: str | os.PathLike, *, progress: bool = True) -> None:
    """Stream ``url`` into ``destination`` (normally the temporary name of :func:`atomic_path`),
    with a progress bar unless ``progress`` is off.

    It does not catch: when there is no network, the URL is wrong or the server stops, the
    ``OSError`` (``URLError``, a timeout, a refused connection) reaches the caller, who knows
    what to tell the reader to fetch by hand and where to put it.
    """
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "minibones"})
    with urllib.request.urlopen(request, timeout=30) as response, open(destination, "wb") as file:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                  desc=url.rsplit("/", 1)[-1]) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                file.write(chunk)
                bar.update(len(chunk))


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """The hex digest of a file's bytes (``"md5"``, ``"sha256"``), read in chunks."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, algorithm).hexdigest()


__all__ = ["atomic_path", "download", "file_digest"]
