"""Feeding a dataset to the device: normalised float batches, augmented where the data lives.

* :class:`DeviceTensorLoader` keeps a small in-memory dataset (CIFAR, the digits) on the
  GPU as uint8 and crops, flips and normalises each batch there;
* :class:`DeviceLoader` wraps a DataLoader for image folders: workers decode and augment
  on the CPU, the device normalises.

Both draw the training order from ``(seed, epoch)`` alone, so a resumed run sees the same
batches as one that never stopped, and both give each process of a ``torchrun`` run its own
slice of every global batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from minibones.data.datasets import ImageTensors


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
