"""Speed of every minibones model against its reference, interleaved in one process.

    python benchmarks/bench_models.py                       # every model with a reference, CPU
    python benchmarks/bench_models.py --models 'resnet*' --batch-size 8
    python benchmarks/bench_models.py --device cuda --amp --channels-last --compile

Writes a Markdown table (with the machine it ran on) to ``--out``. A ratio is
minibones time / reference time for the same step on the same inputs and
weights: 1.00 is as fast, below 1 is faster.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

import minibones
from minibones.bench import compare_with_reference, format_table
from minibones.reference import has_reference


def describe_machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"CPU: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"]
    if device.startswith("cuda"):
        parts.append(f"GPU: {torch.cuda.get_device_name(device)}")
    parts.append(f"torch {torch.__version__}, Python {platform.python_version()}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="*", help="shell-style pattern of model names (default: all)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=None, help="default: the model's size, at most 224")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per model and step (the fastest counts)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file for the table")
    args = parser.parse_args(argv)

    names = [n for n in minibones.list_models(args.models) if has_reference(minibones.create_model(n))]
    if not names:
        parser.error(f"no model with a reference matches {args.models!r}")
    timings = []
    for name in names:
        start = time.perf_counter()
        rows = compare_with_reference(
            name, batch_size=args.batch_size, image_size=args.image_size, rounds=args.rounds, device=args.device,
            amp=args.amp, channels_last=args.channels_last, compile=args.compile,
        )
        timings += rows
        ratios = ", ".join(f"{t.step} {t.ratio:.3f}" for t in rows)
        print(f"{name}: {ratios} ({time.perf_counter() - start:.0f} s)", flush=True)

    options = [f"batch {args.batch_size}", f"{args.rounds} rounds, fastest"]
    options += [flag for flag, on in (("AMP bf16", args.amp), ("channels_last", args.channels_last),
                                       ("torch.compile", args.compile)) if on]
    report = "\n".join([
        f"# minibones vs reference on {args.device}",
        "",
        describe_machine(args.device),
        "",
        f"Settings: {', '.join(options)}. Ratio = minibones / reference time (lower is faster).",
        f"Command: `python benchmarks/bench_models.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        format_table(timings),
        "",
    ])
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.out.with_suffix(".tmp")
        temporary.write_text(report)
        temporary.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
