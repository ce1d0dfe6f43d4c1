"""Files that are never half-written: one way to write a file atomically, used by every
download, checkpoint and dataset extraction in the library.

Why: a crash, a full disk or Ctrl-C in the middle of a write must leave either the previous
file or no file under the final name, never a truncated one that a later run trusts. The
recipe is the POSIX one: write to a temporary name in the *same folder* (so the rename cannot
cross file systems), flush it to disk, then ``os.replace`` it onto the final name, which is
atomic. Whatever happens, the temporary name is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
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


__all__ = ["atomic_path"]
