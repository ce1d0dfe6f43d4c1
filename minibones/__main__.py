"""The command line: ``python -m minibones {train,bench,data}`` (also installed as ``minibones``).

    python -m minibones train --model resnet18 --data cifar10 --epochs 30 --out runs/r18
    torchrun --nproc_per_node=4 -m minibones train --model resnet50 --data imagenette --out runs/r50
    python -m minibones bench --models 'resnet*' --batch-size 8
    python -m minibones data

Every option is documented in ``--help``; the options of ``train`` are the fields
of :class:`minibones.train.TrainConfig`, with the same defaults. Each sub-command is an
``add_*_command`` (its options) and a ``run_*`` (what it does); :func:`train` is what
``train`` runs in each process, and can be called from Python too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import fields
from pathlib import Path

TRAIN_EXAMPLES = """examples:
  python -m minibones train --model resnet20 --data digits --epochs 5
  python -m minibones train --model resnet18 --data cifar10 --epochs 30 --out runs/r18
  python -m minibones train --model mymodels:tiny_net --data path/to/folder    (your own builder)
  torchrun --nproc_per_node=2 -m minibones train --model resnet18 --data cifar10 --out runs/r18

Stopped runs (Ctrl-C, a crash) continue from OUT/last.pt when the same command is run again."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minibones", description="Train, benchmark and fetch data for minibones.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,bench,data}")
    add_train_command(commands)
    add_bench_command(commands)
    add_data_command(commands)
    return parser


def add_train_command(commands) -> None:
    """``train``: its options are the fields of :class:`~minibones.train.TrainConfig`, with
    its defaults, and what to train on what."""
    from minibones.data import DATA_ENV, DATASETS
    from minibones.train import TrainConfig

    defaults = TrainConfig()
    t = commands.add_parser(
        "train", help="train a model on a dataset (also under torchrun)", epilog=TRAIN_EXAMPLES,
        description="Train a model and keep a checkpoint (OUT/last.pt) and OUT/history.json after every epoch.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = t.add_argument_group("what to train")
    what.add_argument("--model", required=True,
                      help="a registered model name (see minibones.list_models()), or module:function for your own "
                           "builder, called with num_classes=")
    what.add_argument("--data", default="digits",
                      help=f"{', '.join(DATASETS)}, or the path of an ImageFolder tree with train/ and val/ "
                           "(default: %(default)s, the embedded dataset)")
    what.add_argument("--data-root", default=None,
                      help=f"where datasets live (default: ${DATA_ENV}, else data/ in the repository)")
    what.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                      help="download a missing dataset (default: %(default)s)")
    what.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=True,
                      help="use the embedded digits, with a printed notice, when the dataset cannot be had "
                           "(default: %(default)s)")
    what.add_argument("--image-size", type=int, default=None,
                      help="side of the training images (default: the dataset's own: 32 for CIFAR and digits, "
                           "128 for Imagenette, 224 for folders)")
    what.add_argument("--train-size", type=int, default=None,
                      help="use only the first N training images, for a quick run (default: all)")
    what.add_argument("--test-size", type=int, default=None,
                      help="use only the first N test images (default: all)")
    _add_how_to_train(t.add_argument_group("how to train"), defaults)
    _add_where_and_how_fast(t.add_argument_group("where and how fast"), defaults)
    t.set_defaults(run=run_train)


def _add_how_to_train(how, defaults) -> None:
    how.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs (default: %(default)s)")
    how.add_argument("--batch-size", type=int, default=defaults.batch_size,
                     help="global batch size, split across processes under torchrun (default: %(default)s)")
    how.add_argument("--optimizer", choices=["sgd", "adamw"], default=defaults.optimizer,
                     help="SGD with Nesterov momentum, or AdamW (default: %(default)s)")
    how.add_argument("--lr", type=float, default=None,
                     help="peak learning rate (default: 0.1 for sgd, 1e-3 for adamw)")
    how.add_argument("--momentum", type=float, default=defaults.momentum,
                     help="SGD momentum (default: %(default)s)")
    how.add_argument("--weight-decay", type=float, default=None,
                     help="weight decay, never applied to norms and biases (default: 5e-4 for sgd, 0.05 for adamw)")
    how.add_argument("--schedule", choices=["onecycle", "cosine", "constant"], default=defaults.schedule,
                     help="learning-rate schedule after the warm-up (constant: none), stepped every batch "
                          "(default: %(default)s)")
    how.add_argument("--warmup", type=float, default=defaults.warmup,
                     help="fraction of the run spent warming up the learning rate (default: %(default)s)")
    how.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing,
                     help="label smoothing of the cross-entropy (default: %(default)s)")
    how.add_argument("--seed", type=int, default=defaults.seed,
                     help="seed of the initial weights, the shuffling and the augmentation (default: %(default)s)")


def _add_where_and_how_fast(where, defaults) -> None:
    where.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    where.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                       help="bf16 autocast (default: on with CUDA, off on the CPU)")
    where.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels_last memory format (default: on with CUDA, off on the CPU)")
    where.add_argument("--compile", action=argparse.BooleanOptionalAction, default=defaults.compile,
                       help="torch.compile the model (default: %(default)s)")
    where.add_argument("--workers", type=int, default=None,
                       help="DataLoader workers for image folders (default: up to 8, one per CPU core)")
    where.add_argument("--out", default=None,
                       help="folder for last.pt and history.json (default: none, nothing is saved)")
    where.add_argument("--resume", action=argparse.BooleanOptionalAction, default=defaults.resume,
                       help="continue from OUT/last.pt if it exists; --no-resume starts over (default: %(default)s)")
    where.add_argument("--log-every", type=int, default=defaults.log_every,
                       help="steps between updates of the progress bar, NaN checks and Ctrl-C checks "
                            "(default: %(default)s)")
    where.add_argument("--progress", action=argparse.BooleanOptionalAction, default=defaults.progress,
                       help="show progress bars (default: %(default)s)")


def add_bench_command(commands) -> None:
    b = commands.add_parser(
        "bench", help="time minibones models against their references",
        description="Forward (infer) and forward+backward (train) time of each minibones model and its reference, "
                    "interleaved in one process, with the same weights and inputs.",
    )
    b.add_argument("--models", nargs="+", default=["*"],
                   help="shell-style patterns of model names, e.g. 'resnet*' vgg16 (default: every model)")
    b.add_argument("--batch-size", type=int, default=4, help="images per step (default: %(default)s)")
    b.add_argument("--image-size", type=int, default=None,
                   help="side of the input images (default: the model's own, at most 224)")
    b.add_argument("--rounds", type=int, default=5,
                   help="timed steps per model, after one warm-up (default: %(default)s)")
    b.add_argument("--device", default="cpu", help="device to time on (default: %(default)s)")
    b.add_argument("--amp", action="store_true", help="bf16 autocast")
    b.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    b.add_argument("--compile", action="store_true", help="torch.compile both models first")
    b.add_argument("--steps", nargs="+", choices=["infer", "train"], default=["infer", "train"],
                   help="which steps to time (default: both)")
    b.add_argument("--out", default=None, help="also write the Markdown table to this file")
    b.set_defaults(run=run_bench)


def add_data_command(commands) -> None:
    from minibones.data import DATA_ENV, DATASETS

    d = commands.add_parser(
        "data", help="show where datasets are looked for, and fetch them",
        description="For each dataset: where it is looked for, and whether it is there.",
    )
    d.add_argument("names", nargs="*", default=list(DATASETS), help="datasets (default: all)")
    d.add_argument("--root", default=None,
                   help=f"where datasets live (default: ${DATA_ENV}, else data/ in the repository)")
    d.add_argument("--download", action="store_true", help="download and unpack the missing ones")
    d.set_defaults(run=run_data)


def run_train(args) -> int:
    from minibones.checkpoint import CHECKPOINT
    from minibones.train import TrainConfig

    # the options of train are named as the fields of TrainConfig (verbose aside: the command line prints)
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "verbose"})
    try:
        _, history = train(args.model, args.data, config, root=args.data_root, download=args.download,
                           fallback=args.fallback, image_size=args.image_size, train_size=args.train_size,
                           test_size=args.test_size)
    except KeyboardInterrupt:
        return 130  # the checkpoint is saved and the message printed by fit
    if history.rows and os.environ.get("RANK", "0") == "0":  # under torchrun, only rank 0 speaks
        print(f"done: test accuracy {history.last['test_acc']:.1%}" + (f"; checkpoint {Path(args.out) / CHECKPOINT}"
                                                                          if args.out else ""))
    return 0


def train(model: str, data: str = "digits", config=None, *, root: str | Path | None = None, download: bool = True,
          fallback: bool = True, image_size: int | None = None, train_size: int | None = None,
          test_size: int | None = None):
    """Build ``model`` for ``data`` and :func:`~minibones.train.fit` it: what ``python -m minibones
    train`` runs, in one process or in each of the processes ``torchrun`` starts. Returns the
    model and its :class:`~minibones.train.History`."""
    import torch.distributed as dist

    from minibones.checkpoint import seed_everything
    from minibones.data import load_data
    from minibones.distributed import barrier, init_distributed, rank_and_world_size
    from minibones.train import TrainConfig, fit

    config = config or TrainConfig()
    created_group = init_distributed()
    try:
        rank, _ = rank_and_world_size()
        if rank != 0:  # rank 0 downloads first; the others then read its copy
            barrier()
        dataset = load_data(data, root, download=download and rank == 0, fallback=fallback, image_size=image_size,
                            verbose=rank == 0)
        if rank == 0:
            barrier()
        dataset = dataset.subset(train_size, test_size)
        seed_everything(config.seed)  # the same initial weights in every process (DDP also broadcasts them)
        net = build_model(model, dataset.num_classes)
        return net, fit(net, dataset, config)
    finally:
        if created_group:
            dist.destroy_process_group()


def build_model(spec: str, num_classes: int):
    """A registered name (``resnet18``) or your own builder as ``module:function``
    (``mymodels:tiny_net``), called with ``num_classes``."""
    if ":" in spec:
        module, _, function = spec.partition(":")
        try:
            builder = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"cannot import {spec!r} ({error}); is the module's folder on PYTHONPATH?") from error
        return builder(num_classes=num_classes)
    from minibones import create_model

    return create_model(spec, num_classes=num_classes)


def run_bench(args) -> int:
    import minibones
    from minibones.bench import compare_with_reference, format_table
    from minibones.reference import has_reference

    names = sorted({name for pattern in args.models for name in minibones.list_models(pattern)})
    if not names:
        print(f"no model matches {' '.join(args.models)}; minibones.list_models() lists them", file=sys.stderr)
        return 2
    timings = []
    for name in names:
        if not has_reference(minibones.create_model(name)):
            print(f"{name}: no reference implementation to compare with, skipped")
            continue
        timings += compare_with_reference(
            name, batch_size=args.batch_size, image_size=args.image_size, rounds=args.rounds, device=args.device,
            amp=args.amp, channels_last=args.channels_last, compile=args.compile, steps=tuple(args.steps),
        )
    table = format_table(timings)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


def run_data(args) -> int:
    from minibones import data as datasets

    root = Path(args.root) if args.root else datasets.data_root()
    archives = {"cifar10": datasets.CIFAR10_ARCHIVE, "cifar100": datasets.CIFAR100_ARCHIVE,
                "imagenette": datasets.IMAGENETTE_ARCHIVE}
    print(f"datasets live in {root}  (set ${datasets.DATA_ENV} to change)")
    failed = False
    for name in args.names:
        if name == "digits":
            print("digits      embedded (scikit-learn), always available")
            continue
        if name not in archives:
            print(f"{name}: unknown; choose from {', '.join(datasets.DATASETS)}", file=sys.stderr)
            failed = True
            continue
        archive = archives[name]
        if (root / archive.folder).is_dir():
            status = f"ready in {root / archive.folder}"
        elif (root / archive.filename).is_file():
            status = f"archive {archive.filename} present, unpacked on first use"
        else:
            status = f"missing: download {archive.url} into {root}/"
        if args.download and not (root / archive.folder).is_dir():
            try:
                datasets.fetch(archive, root, download=True)
                status = f"ready in {root / archive.folder}"
            except datasets.DatasetNotFound as error:
                status, failed = f"failed: {error}", True
        print(f"{name:<11} {status}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from minibones.data import DatasetNotFound
    from minibones.train import NonFiniteLossError

    try:
        return args.run(args)
    except (DatasetNotFound, NonFiniteLossError, ValueError) as error:
        print(f"minibones {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
