"""One process, or several under ``torchrun``, and stopping them all together on Ctrl-C.

``torchrun --nproc_per_node=N`` starts N copies of the same program with ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK`` and a rendezvous address in their environment. Each joins the
process group (:func:`init_distributed`), trains on its slice of every batch, and sums its
metrics with the others' (:func:`sum_across_processes`). With one process every helper
here does nothing, so the training loop reads the same either way.

Ctrl-C must not lose work: :class:`GracefulInterrupt` turns the first one into a request,
which the loop honours after the current step, once every process has agreed
(:class:`StopRequested`), so that they all save the same step.
"""

from __future__ import annotations

import os
import signal
import threading

import torch
import torch.distributed as dist


def init_distributed() -> bool:
    """Join the process group when launched by ``torchrun``. NCCL on GPUs, gloo on CPUs.
    Returns True if this call created the group (the caller then destroys it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_device() -> torch.device:
    """This process's GPU if there is one (``LOCAL_RANK`` under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def sum_across_processes(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over every process, in place (with one process: as it is)."""
    if rank_and_world_size()[1] > 1:
        dist.all_reduce(tensor)
    return tensor


def gather_from_processes(obj) -> list:
    """Every process's ``obj``, in rank order (with one process: ``[obj]``)."""
    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return [obj]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for every process (with one process: return at once)."""
    if rank_and_world_size()[1] > 1:
        dist.barrier()


# --- Ctrl-C --------------------------------------------------------------------------------


class StopRequested(KeyboardInterrupt):
    """Raised by every process at the same step once one of them got Ctrl-C."""


class GracefulInterrupt:
    """While active, the first Ctrl-C (or SIGTERM) only *asks* the loop to stop: it
    finishes the step, saves a checkpoint and raises KeyboardInterrupt. A second
    Ctrl-C stops at once. (Signal handlers can only be set from the main thread;
    elsewhere Ctrl-C arrives as a KeyboardInterrupt, which is also caught.)"""

    def __init__(self):
        self.requested = False
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step to save a checkpoint (Ctrl-C again to stop at once)", flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


__all__ = [
    "GracefulInterrupt", "StopRequested", "barrier", "default_device", "gather_from_processes", "init_distributed",
    "rank_and_world_size", "sum_across_processes",
]
