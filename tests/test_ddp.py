"""The training entry point under ``torchrun --nproc_per_node=2`` (gloo, CPU) matches one process.

Two processes each train on their half of every global batch and DDP averages
their gradients, which is the gradient of the whole batch: so the run must match
the single-process run up to float rounding. Stated tolerance: every history
number within 1e-5 (relative) and every final weight within 1e-5 (relative to its
tensor's largest value); measured: 0 for the training metrics, at most 4e-7 elsewhere. The model here (a small MLP) has no batch norm: torch synchronises
batch statistics across processes only on GPUs (SyncBatchNorm, which the trainer
switches on there), so on the CPU a BN model sees per-process statistics and
would match only loosely.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minibones.__main__ import train
from minibones.checkpoint import load_checkpoint
from minibones.train import TrainConfig

MODEL = '''
from torch import nn

def build(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, num_classes))
'''
OPTIONS = dict(data="digits", image_size=8, train_size=256, test_size=100)
CONFIG = dict(epochs=2, batch_size=32, lr=0.2, log_every=3, progress=False)


@pytest.fixture
def model_module(tmp_path, monkeypatch):
    (tmp_path / "ddpnet.py").write_text(MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "ddpnet:build"


def test_two_processes_under_torchrun_match_one_process(tmp_path, model_module):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "minibones", "train", "--model", model_module, "--data", OPTIONS["data"],
        "--image-size", str(OPTIONS["image_size"]), "--train-size", str(OPTIONS["train_size"]),
        "--test-size", str(OPTIONS["test_size"]), "--epochs", str(CONFIG["epochs"]),
        "--batch-size", str(CONFIG["batch_size"]), "--lr", str(CONFIG["lr"]), "--log-every", str(CONFIG["log_every"]),
        "--no-progress", "--out", str(out),
    ]
    repo = Path(__file__).resolve().parents[1]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(repo)]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("epoch   2/2") == 1  # only rank 0 prints
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "last.pt"]  # only rank 0 writes

    _, history = train(model_module, config=TrainConfig(out=str(tmp_path / "single"), verbose=False, **CONFIG),
                       **OPTIONS)
    ddp = load_checkpoint(out / "last.pt")
    for row, expected in zip(ddp["history"], history.rows):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            assert row[key] == pytest.approx(expected[key], rel=1e-5), key
    single = load_checkpoint(tmp_path / "single" / "last.pt")
    for name, weight in single["model"].items():
        assert (ddp["model"][name] - weight).abs().max() <= 1e-5 * weight.abs().max(), name
    assert history.last["test_acc"] > 0.4  # and it learns (chance: 10%; 65% measured)
    assert len(torch.load(out / "last.pt", weights_only=True)["rng"]) == 2  # each process's generators
