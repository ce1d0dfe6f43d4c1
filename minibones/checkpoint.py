"""Checkpoints: what a training run needs to continue exactly where it stopped.

A checkpoint written by :func:`minibones.train.fit` holds the model, the optimizer, the
schedule, every random generator (one set per process), where the run is (epoch, batch,
optimizer step), the partial sums of an interrupted epoch and the history so far. A run
resumed from it is identical to one that never stopped (exactly, on the CPU), which takes
two things besides the weights:

* the random state, saved as tensors and numbers only, so that a checkpoint loads with
  ``torch.load(weights_only=True)`` (which refuses arbitrary pickled objects);
* the order of the interrupted epoch's batches: a loader draws it when the epoch starts, so
  the random state of that moment is saved too, and :func:`resume_batches` replays the draw.

Both files, the checkpoint (``last.pt``) and its readable summary (``history.json``: the
configuration and the history so far), are written atomically (:func:`minibones.files.atomic_path`):
a crash mid-write leaves the previous checkpoint, never a truncated one.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from minibones.files import atomic_path

CHECKPOINT = "last.pt"
HISTORY = "history.json"

# Fields of a TrainConfig that do not change the numbers a run produces: a run may resume with other values.
RESUMABLE_CHANGES = {"out", "resume", "log_every", "progress", "verbose", "device", "compile", "workers"}


# --- the random state ----------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every generator's state, as tensors and numbers only (see the module's docstring)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss"]))


def resume_batches(loader, skip: int, epoch_rng: dict | None):
    """An iterator over ``loader``, past the first ``skip`` batches.

    Resuming mid-epoch must see the same batches in the same order as the interrupted
    run: the loader's order was drawn when the epoch started, so the random state of that
    moment is put back while the iterator is made and the done batches are replayed (read,
    not trained on), then the current state returns.
    """
    if skip == 0:
        return iter(loader)
    now = rng_state()
    set_rng_state(epoch_rng)
    batches = iter(loader)
    for _ in range(skip):
        next(batches)
    set_rng_state(now)
    return batches


# --- where a run is ------------------------------------------------------------------------


@dataclass
class Position:
    """Where the run is: ``batch`` batches of ``epoch`` done, ``step`` optimizer steps in all."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


# --- reading and writing -------------------------------------------------------------------


def save_checkpoint(path: Path, checkpoint: dict, summary: dict) -> None:
    """Write ``checkpoint`` to ``path`` (``last.pt``) and ``summary`` (the config, what was
    trained and the history, readable without torch) to ``history.json`` beside it."""
    with atomic_path(path) as partial:
        torch.save(checkpoint, partial)
    with atomic_path(path.with_name(HISTORY)) as partial:
        partial.write_text(json.dumps(summary, indent=1))


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by :func:`minibones.train.fit`, loaded safely (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def check_compatible(saved: dict, config, identity: dict, path: Path) -> None:
    """A checkpoint continues only the run that wrote it: the same model and data
    (``identity``), and the same settings of ``config`` but for :data:`RESUMABLE_CHANGES`."""
    if saved.get("identity") != identity:
        raise ValueError(f"{path} was written training {saved.get('identity')}, not {identity}; "
                         "choose another out folder, or resume=False to start over there")
    before = saved["config"]
    now = asdict(config)
    changed = [f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in now
               if k not in RESUMABLE_CHANGES and before.get(k) != now[k]]
    if changed:
        raise ValueError(f"{path} belongs to a run with other settings ({'; '.join(changed)}), which would not "
                         "continue it exactly (the schedule depends on the epochs). Use another out folder, or "
                         "resume=False (--no-resume) to start over in this one.")


__all__ = [
    "CHECKPOINT", "HISTORY", "Position", "check_compatible", "load_checkpoint", "resume_batches",
    "rng_state", "save_checkpoint", "seed_everything", "set_rng_state",
]
