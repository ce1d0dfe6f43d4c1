"""Does the data loader keep up with the model? CIFAR-10, ResNet-18, images per second.

A ResNet-18 training step on 32x32 images takes a few milliseconds on a GPU; a
CPU DataLoader decoding, cropping and flipping images one by one in Python can
not keep up, and the GPU waits. minibones keeps small datasets on the device and
augments a whole batch with one gather (``minibones.data.DeviceTensorLoader``).
This script measures, in one process and on one device:

  loader only            batches out of the device-resident loader (index, crop, flip, normalise)
  torchvision DataLoader the usual pipeline (RandomCrop(32, 4), flip, ToTensor, Normalize in CPU workers)
  model only             training steps on one fixed batch already on the device
  loader + model         training steps fed by the device-resident loader
  torchvision + model    training steps fed by the torchvision DataLoader

The last three are timed step by step, interleaved (``minibones.bench.time_steps``,
medians), and the loader's cost is 1 - (loader + model) / (model only) (target:
under 10%). Last, the model's achieved FLOP/s against a measured matmul peak.

    python benchmarks/bench_loader.py                     # CPU, quick (seconds)
    python benchmarks/bench_loader.py --device cuda --batch-size 512 --steps 200 --amp --channels-last --compile

CIFAR-10 is read from the data folder (see data/README.md); without it the
embedded digits (32x32 too) stand in, and the table says so. The numbers are the
same kind either way: the loader does not look at the pixels.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import minibones
from minibones.bench import synchronize, time_steps
from minibones.data import load_data


def images_per_second(run_step, steps: int, batch: int, device: torch.device, warmup: int = 2) -> float:
    for _ in range(warmup):
        run_step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        run_step()
    synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def forever(loader):
    """Batches from ``loader``, epoch after epoch."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


class TorchvisionCIFAR(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10(transform=...)`` does per image, over the same
    in-memory pixels: a PIL image, RandomCrop(32, padding=4), a flip, ToTensor, Normalize."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std):
        from torchvision import transforms as T

        self.images = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C), as CIFAR10.data
        self.labels = labels.tolist()
        size = images.shape[-1]
        self.transform = T.Compose([T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(mean, std)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def measured_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matmul: what this device can do at best."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return images_per_second(lambda: a @ b, steps=10 if device.type == "cuda" else 3, batch=1, device=device) * 2 * n**3


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="model name (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 on a GPU, 32 on a CPU")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps of each kind, interleaved (default: 100 on a GPU, 5 on a CPU)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="workers of the torchvision DataLoader (default: %(default)s)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--no-torchvision", action="store_true", help="skip the torchvision DataLoader rows")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch_size or (512 if gpu else 32)
    steps = args.steps or (100 if gpu else 5)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    data = load_data("cifar10", download=False)
    train_loader, _ = data.loaders(batch, device, channels_last=args.channels_last)

    model = minibones.create_model(args.model, num_classes=data.num_classes).to(device, memory_format=memory_format)
    net = torch.compile(model) if args.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.amp else nullcontext()

    def train_step(images, labels):
        with autocast:
            loss = F.cross_entropy(net(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    fixed_images, fixed_labels = next(iter(train_loader))
    with FlopCounterMode(display=False) as counter:  # forward and backward, on the eager model
        with autocast:
            loss = F.cross_entropy(model(fixed_images).float(), fixed_labels)
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    step_flops = counter.get_total_flops()

    # the loaders alone, as fast as they go
    rows = {}
    batches = forever(train_loader)
    rows["loader only"] = images_per_second(lambda: next(batches), steps * 4, batch, device)
    if not args.no_torchvision:
        dataset = TorchvisionCIFAR(data.train.images, data.train.labels, data.mean, data.std)
        loader = torch.utils.data.DataLoader(dataset, batch, shuffle=True, drop_last=True, num_workers=args.workers,
                                             pin_memory=gpu, persistent_workers=args.workers > 0)

        def torchvision_batches():
            for images, labels in forever(loader):
                images = images.to(device, non_blocking=True, memory_format=memory_format)
                yield images, labels.to(device, non_blocking=True)

        tv = torchvision_batches()
        rows["torchvision DataLoader"] = images_per_second(lambda: next(tv), steps, batch, device)

    # training steps, interleaved round by round so that a change of machine load hits all alike
    trainers = {"model only": lambda: train_step(fixed_images, fixed_labels),
                "loader + model": lambda: train_step(*next(batches))}
    if not args.no_torchvision:
        trainers["torchvision + model"] = lambda: train_step(*next(tv))
    for name, seconds in time_steps(trainers, steps, device).items():  # medians
        rows[name] = batch / seconds

    peak = measured_peak_flops(device, torch.bfloat16 if args.amp else torch.float32)
    achieved = rows["model only"] / batch * step_flops
    lines = [
        f"{args.model}, {data.name} ({len(data.train)} training images, {data.image_size}x{data.image_size}), "
        f"batch {batch}, {steps} timed steps, amp={args.amp}, channels_last={args.channels_last}, "
        f"compile={args.compile}",
        f"machine: {machine(device)}",
        "",
        "| pipeline | images/s |",
        "|---|---|",
        *(f"| {name} | {value:,.0f} |" for name, value in rows.items()),
        "",
        f"loader cost: {1 - rows['loader + model'] / rows['model only']:.1%} of the model-only throughput "
        "(target: under 10%)",
    ]
    if "torchvision + model" in rows:
        lines.append(f"torchvision DataLoader cost: {1 - rows['torchvision + model'] / rows['model only']:.1%}")
    lines.append(f"model: {step_flops / batch / 1e9:.2f} GFLOP per image per training step, {achieved / 1e12:.3f} "
                 f"TFLOP/s achieved, {achieved / peak:.1%} of a measured matmul peak of {peak / 1e12:.2f} TFLOP/s")
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
