"""``python -m minibones``: train, bench and data, every option documented."""

import argparse
import json
import subprocess
import sys

import pytest

from minibones.__main__ import build_parser, main

TINY_MODEL = '''
from torch import nn

def tiny_net(num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", ["train", "bench", "data"])
def test_help_documents_every_option(command, capsys):
    parser = subcommands()[command]
    for action in parser._actions:
        assert action.help and len(action.help) > 10, action.option_strings or action.dest
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert all(option in text for action in parser._actions for option in action.option_strings)


def test_train_options_have_the_defaults_of_TrainConfig():
    from minibones.train import TrainConfig

    args = build_parser().parse_args(["train", "--model", "resnet20"])
    for name, value in vars(TrainConfig()).items():
        if name != "verbose":  # the command line always prints one line per epoch
            assert getattr(args, name) == value, name


def test_it_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "minibones", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "{train,bench,data}" in result.stdout


@pytest.fixture
def tiny_module(tmp_path, monkeypatch):
    (tmp_path / "tinymodels.py").write_text(TINY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tinymodels:tiny_net"


def test_train_writes_a_checkpoint_and_the_history(tmp_path, tiny_module, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", tiny_module, "--data", "digits", "--image-size", "8", "--train-size", "64",
            "--test-size", "32", "--epochs", "2", "--batch-size", "16", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "epoch   2/2" in printed and "done: test accuracy" in printed
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history["history"]] == [1, 2]
    assert history["config"]["batch_size"] == 16 and history["identity"]["data"] == "digits"
    assert (out / "last.pt").is_file()
    assert main(argv) == 0  # run again: resumes, finds nothing left to do
    assert "resuming from" in capsys.readouterr().out


def test_train_reports_a_wrong_model_name_clearly(capsys):
    assert main(["train", "--model", "resnet_18", "--epochs", "1"]) == 1
    assert "unknown model 'resnet_18'. Did you mean 'resnet18'" in capsys.readouterr().err


def test_bench_times_a_model_against_its_reference(capsys, tmp_path):
    table = tmp_path / "bench.md"
    argv = ["bench", "--models", "resnet18", "--batch-size", "1", "--image-size", "32", "--rounds", "1",
            "--steps", "infer", "--out", str(table)]
    assert main(argv) == 0
    assert "| resnet18 | 1 x 32 |" in capsys.readouterr().out
    assert table.read_text().startswith("| model |")


def test_bench_skips_models_without_a_reference(capsys):
    assert main(["bench", "--models", "resnet20", "--steps", "infer"]) == 0
    assert "resnet20: no reference implementation" in capsys.readouterr().out


def test_data_says_where_each_dataset_is_looked_for(tmp_path, capsys):
    assert main(["data", "--root", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"datasets live in {tmp_path}" in text
    assert "cifar10     missing: download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in text
    assert "digits      embedded" in text
