"""The trainer learns, loses nothing, and resumes a stopped run exactly (on the CPU)."""

import json
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import minibones
from minibones.checkpoint import load_checkpoint, save_checkpoint
from minibones.data import digits
from minibones.optim import make_optimizer, make_scheduler, parameter_groups
from minibones.train import NonFiniteLossError, TrainConfig, fit, train_briefly


class TinyNet(nn.Module):
    """Conv, batch norm and dropout: enough state (running statistics, a random
    generator) for an inexact resume to show."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


@pytest.fixture(scope="module")
def tiny_data():
    return digits(image_size=8).subset(train=96, test=48)  # 6 batches of 16 per epoch


def tiny_config(tmp_path, **overrides):
    options = dict(epochs=2, batch_size=16, out=tmp_path and str(tmp_path), log_every=4, progress=False, verbose=False)
    return TrainConfig(**(options | overrides))


def new_model():
    torch.manual_seed(0)
    return TinyNet()


def run(data, config, callbacks=()):
    model = new_model()
    history = fit(model, data, config, callbacks=callbacks)
    return model, history


def numbers(history):
    """Every column that does not depend on how fast the machine was."""
    return [{k: v for k, v in row.items() if k not in ("images_per_s", "seconds")} for row in history.rows]


def assert_same_run(a, b):
    (model_a, history_a), (model_b, history_b) = a, b
    assert numbers(history_a) == numbers(history_b)
    for (name, x), y in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    return run(tiny_data, tiny_config(tmp_path_factory.mktemp("uninterrupted")))


def stop_at(epoch, batch, error=KeyboardInterrupt):
    def callback(info):
        if (info.epoch, info.batch) == (epoch, batch):
            raise error()

    return callback


# --- nothing lost --------------------------------------------------------------------------------


def test_a_checkpoint_is_written_every_epoch_and_loads_weights_only(tmp_path, tiny_data):
    run(tiny_data, tiny_config(tmp_path, epochs=1))
    saved = torch.load(tmp_path / "last.pt", weights_only=True)  # no pickled objects in it
    assert set(saved) >= {"model", "optimizer", "scheduler", "rng", "position", "history", "config"}
    assert saved["position"] == {"epoch": 1, "batch": 0, "step": 6}
    assert json.loads((tmp_path / "history.json").read_text())["history"][0]["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_resuming_after_a_crash_equals_the_uninterrupted_run(uninterrupted, tiny_data, tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(RuntimeError):
        run(tiny_data, config, callbacks=[stop_at(1, 2, RuntimeError)])  # a crash in epoch 2: last.pt is epoch 1's
    assert load_checkpoint(tmp_path / "last.pt")["position"]["epoch"] == 1
    assert_same_run(run(tiny_data, config), uninterrupted)


def press_ctrl_c_at(epoch, batch):
    def callback(info):
        if (info.epoch, info.batch) == (epoch, batch):
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal or Jupyter's interrupt button sends

    return callback


@pytest.mark.parametrize("how", ["signal", "exception"])
def test_ctrl_c_saves_a_checkpoint_and_the_resumed_run_is_identical(how, uninterrupted, tiny_data, tmp_path, capsys):
    config = tiny_config(tmp_path)
    interrupt = press_ctrl_c_at(0, 3) if how == "signal" else stop_at(0, 3)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_data, config, callbacks=[interrupt])  # mid-epoch, between two syncs
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["reason"] == "interrupted" and saved["position"] == {"epoch": 0, "batch": 3, "step": 3}
    assert "saved" in capsys.readouterr().out
    assert_same_run(run(tiny_data, config), uninterrupted)


def test_an_interrupt_inside_a_step_leaves_the_last_checkpoint_as_it_was(uninterrupted, tiny_data, tmp_path, capsys):
    """A second Ctrl-C lands anywhere, for example between the optimizer's update and the
    position's: saving then would make the resumed run train that batch twice."""
    config, model = tiny_config(tmp_path), new_model()
    calls = []

    def interrupt_in_epoch_2(module, inputs, output):
        calls.append(module.training)
        if sum(calls) == 6 + 3:  # training forward passes: the whole first epoch, then three batches
            raise KeyboardInterrupt

    model.fc.register_forward_hook(interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(model, tiny_data, config)
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["reason"] == "epoch" and saved["position"] == {"epoch": 1, "batch": 0, "step": 6}
    assert "left as it was" in capsys.readouterr().out
    assert_same_run(run(tiny_data, config), uninterrupted)


def test_resume_is_exact_with_a_plain_shuffling_dataloader(tiny_data, tmp_path):
    """A DataLoader draws its order from the global generator when an epoch starts:
    the resumed run must replay that draw."""
    dataset = torch.utils.data.TensorDataset(
        (tiny_data.train.images.float() / 255 - 0.3) / 0.3, tiny_data.train.labels)
    test = torch.utils.data.TensorDataset((tiny_data.test.images.float() / 255 - 0.3) / 0.3, tiny_data.test.labels)

    def loaders():
        return (torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True),
                torch.utils.data.DataLoader(test, batch_size=16))

    reference = run(loaders(), tiny_config(tmp_path / "a"))
    with pytest.raises(KeyboardInterrupt):
        run(loaders(), tiny_config(tmp_path / "b"), callbacks=[stop_at(1, 4)])
    assert_same_run(run(loaders(), tiny_config(tmp_path / "b")), reference)


def test_a_finished_run_is_not_trained_again(tiny_data, tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    _, first = run(tiny_data, config)
    calls = []
    _, again = run(tiny_data, config, callbacks=[calls.append])
    assert calls == [] and numbers(again) == numbers(first)


def test_resume_refuses_a_checkpoint_of_other_settings(tiny_data, tmp_path):
    run(tiny_data, tiny_config(tmp_path, epochs=1))
    with pytest.raises(ValueError, match="lr: 0.1 -> 0.05"):
        run(tiny_data, tiny_config(tmp_path, epochs=1, lr=0.05))
    run(tiny_data, tiny_config(tmp_path, epochs=1, lr=0.05, resume=False))  # starting over is allowed


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    def poison(info):
        if (info.epoch, info.batch) == (1, 1):
            info.model.fc.weight.data.fill_(math.nan)

    with pytest.raises(NonFiniteLossError) as error:
        run(tiny_data, tiny_config(tmp_path), callbacks=[poison])
    message = str(error.value)
    assert "the training loss became nan in epoch 2" in message
    assert "lower learning rate" in message and "last good checkpoint" in message
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["position"]["epoch"] == 1 and saved["reason"] == "epoch"
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())


def test_checkpoints_are_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": torch.tensor(1)}, {"epoch": 1})

    def crash(obj, f):
        with open(f, "wb") as file:
            file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, {"epoch": torch.tensor(2)}, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert json.loads((tmp_path / "history.json").read_text()) == {"epoch": 1}  # not written either
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "last.pt"]


# --- the optimizer and the schedule ------------------------------------------------------------------


def test_no_weight_decay_on_norms_and_biases():
    model = minibones.create_model("resnet20")
    decay, no_decay = parameter_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    assert all(p.ndim == 4 for p in decay["params"][:-1]) and decay["params"][-1] is model.head.fc.weight
    exempt = {id(p) for p in no_decay["params"]}
    assert id(model.head.fc.bias) in exempt and id(model.stem.bn.weight) in exempt
    assert len(exempt) + len(decay["params"]) == len(list(model.parameters()))


def test_no_weight_decay_on_vits_class_token_and_position_embeddings():
    model = minibones.create_model("vit_tiny_cifar")
    decay, no_decay = parameter_groups(model, 0.05)
    exempt = {id(p) for p in no_decay["params"]}
    assert id(model.cls_token) in exempt and id(model.pos_embed) in exempt
    assert id(model.patch_embed.proj.weight) not in exempt


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_the_learning_rate_warms_up_then_anneals(schedule):
    config = TrainConfig(schedule=schedule, warmup=0.2).resolved(torch.device("cpu"))
    optimizer = make_optimizer(nn.Linear(2, 2), config)
    scheduler = make_scheduler(optimizer, config, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = max(range(100), key=lrs.__getitem__)
    assert 18 <= peak <= 20 and math.isclose(lrs[peak], 0.1, rel_tol=1e-3)
    assert lrs[0] < 0.01 and lrs[-1] < 0.001
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1 : peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :]))
    assert optimizer.param_groups[0]["nesterov"]


def test_amp_and_channels_last_reach_the_model_in_training_and_evaluation(tiny_data):
    data = tiny_data.subset(32, 16)
    model, seen = new_model(), []
    first = model.features[0]
    first.register_forward_hook(lambda module, inputs, output: seen.append(
        (module.training, output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last))))
    history = fit(model, data, tiny_config(None, epochs=1, amp=True, channels_last=True, schedule="constant"))
    assert {training for training, _, _ in seen} == {True, False}  # two training batches, one test batch
    assert all(dtype == torch.bfloat16 and channels_last for _, dtype, channels_last in seen)
    assert first.weight.is_contiguous(memory_format=torch.channels_last) and first.weight.dtype == torch.float32
    _, plain = run(data, tiny_config(None, epochs=1, schedule="constant"))
    assert history.last["train_loss"] != plain.last["train_loss"]  # bf16 rounding: autocast did something


def test_compile_compiles_the_training_and_the_evaluation_model(tiny_data, monkeypatch):
    compile_, compiled = torch.compile, []

    def compile_eagerly(module):
        compiled.append(module)
        return compile_(module, backend="eager")  # dynamo's graph capture, without inductor's minutes of codegen

    data = tiny_data.subset(32, 16)
    monkeypatch.setattr(torch, "compile", compile_eagerly)
    model, history = run(data, tiny_config(None, epochs=1, compile=True, schedule="constant"))
    monkeypatch.undo()
    assert compiled == [model, model]  # one process: no DDP wrapper between them
    assert_same_run((model, history), run(data, tiny_config(None, epochs=1, schedule="constant")))


def test_history_plots_loss_and_accuracy(uninterrupted):
    import matplotlib

    matplotlib.use("Agg")
    _, history = uninterrupted
    fig = history.plot(title="a run")
    loss, accuracy = fig.axes
    assert loss.get_ylabel() == "cross-entropy, nats/image (log)" and loss.get_yscale() == "log"
    assert accuracy.get_ylabel() == "accuracy (%)" and accuracy.get_ylim() == (0, 100)
    assert set(history["epoch"]) <= set(loss.get_xticks()) and all(t == int(t) for t in loss.get_xticks())  # whole epochs
    fig.canvas.draw()
    labels = [tick.get_text() for tick in loss.get_yticklabels() if tick.get_visible() and tick.get_text()]
    assert labels and all(float(text) > 0 for text in labels)  # plain numbers (0.5, 1, 2), not powers of ten only
    assert fig._suptitle.get_text() == "a run"
    assert [100 * a for a in history["test_acc"]] == list(accuracy.lines[1].get_ydata())
    assert len(history["test_acc"]) == 2 and "History(2 epochs" in repr(history)


# --- it learns ---------------------------------------------------------------------------------------


def test_resnet20_learns_the_embedded_digits_well_above_chance():
    """The CPU-quick regime's promise: a small ResNet learns the embedded default well
    above chance (10%) in seconds. (The full split at 32x32 is in the issue note;
    here 640 training images at 16x16, 3 epochs: 90-94% over seeds 0-3, 5 CPU-seconds.)"""
    torch.manual_seed(0)
    data = digits(image_size=16).subset(train=640)
    model = minibones.create_model("resnet20", num_classes=10)
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, progress=False, verbose=False)
    history = fit(model, data, config)
    assert history.last["test_acc"] > 0.7


def test_the_short_loop_reports_each_term_and_stops_on_a_non_finite_loss():
    torch.manual_seed(0)
    model, inputs, targets = nn.Linear(2, 3), torch.randn(8, 2), torch.arange(8) % 3

    def loss(model, x, y):
        value = F.cross_entropy(model(x), y)
        return value, {"ce": value, "twice": 2 * value}

    history = train_briefly(model, lambda: [(inputs[:4], targets[:4]), (inputs[4:], targets[4:])], loss, epochs=2,
                            steps_per_epoch=2, lr=0.1, weight_decay=0.0, device="cpu",
                            test_metrics=lambda: {"test": 1.0}, evaluate_every=2)
    assert [sorted(row) for row in history] == [["ce", "epoch", "twice"], ["ce", "epoch", "test", "twice"]]
    assert history[1]["twice"] == pytest.approx(2 * history[1]["ce"])
    inputs[5, 1] = math.nan
    with pytest.raises(FloatingPointError, match="the loss was not finite in epoch 1 of 1: lower the learning rate"):
        train_briefly(model, lambda: [(inputs[4:], targets[4:])], loss, epochs=1, steps_per_epoch=4, lr=0.1,
                      weight_decay=0.0, device="cpu")
