"""Quick (CPU) or full (GPU): the one place a notebook decides how much to run.

Every notebook starts with ``regime = choose_regime(quick=..., full=...)``. With
a CUDA device the full regime is the default, otherwise the quick one; the
environment variable ``MINIBONES_REGIME=quick`` or ``=full`` overrides both.
The chosen settings are printed, so the output of every notebook says on what
data, device and schedule it ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

REGIMES = ("quick", "full")


@dataclass(frozen=True)
class Regime:
    name: str  # "quick" or "full"
    device: torch.device
    reason: str
    settings: dict = field(default_factory=dict)

    def __getattr__(self, key):  # regime.epochs reads settings["epochs"]
        settings = self.__dict__.get("settings", {})
        if key in settings:
            return settings[key]
        raise AttributeError(f"the regime has no setting {key!r}; it has {sorted(settings)}")

    @property
    def quick(self) -> bool:
        return self.name == "quick"


def choose_regime(quick: dict | None = None, full: dict | None = None, verbose: bool = True) -> Regime:
    """Pick the regime (and its settings) for this machine, and say which and why."""
    cuda = torch.cuda.is_available()
    requested = os.environ.get("MINIBONES_REGIME", "").strip().lower()
    if requested and requested not in REGIMES:
        raise ValueError(f"MINIBONES_REGIME must be 'quick' or 'full', got {requested!r}")
    if requested:
        name, reason = requested, "set by MINIBONES_REGIME"
    elif cuda:
        name, reason = "full", "a CUDA device is available"
    else:
        name, reason = "quick", "no CUDA device; MINIBONES_REGIME=full overrides"
    device = torch.device("cuda" if cuda else "cpu")
    settings = dict((quick if name == "quick" else full) or {})
    regime = Regime(name, device, reason, settings)
    if verbose:
        print(f"regime: {name} ({reason})")
        print(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if cuda else f" ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''})"))
        for key, value in settings.items():
            print(f"{key}: {value}")
    return regime
