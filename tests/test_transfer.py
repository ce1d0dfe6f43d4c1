"""Transfer learning helpers: stages from feature_info, freezing, per-stage learning rates, and the experiment."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

import minibones
from minibones.transfer import (
    FrozenBatchNorm2d,
    class_subset,
    freeze,
    freeze_up_to,
    param_groups,
    stage_groups,
    trainable_summary,
    transfer_experiment,
    unfreeze,
)


@pytest.fixture
def resnet18():
    torch.manual_seed(0)
    return minibones.create_model("resnet18", num_classes=10)


def trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_stages_split_every_parameter_once_in_forward_order(resnet18):
    groups = stage_groups(resnet18)
    assert list(groups) == ["conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "classifier"]
    names = [name for params in groups.values() for name, _ in params]
    assert names == [name for name, _ in resnet18.named_parameters()]
    assert [name for name, _ in groups["classifier"]] == ["head.fc.weight", "head.fc.bias"]


def test_parameters_outside_the_stages_join_the_next_stage_or_the_head():
    vit = minibones.create_model("vit_tiny_cifar")  # stages are blocks 1, 3, 5, 7
    groups = stage_groups(vit)
    first = [name for name, _ in groups["block1"]]
    assert first[:2] == ["cls_token", "pos_embed"] and "blocks.0.attn.qkv.weight" in first
    assert [name for name, _ in groups["head"]] == ["norm.weight", "norm.bias"]  # the final LayerNorm


def test_freeze_leaves_only_the_classifier_trainable_and_batchnorm_in_eval(resnet18):
    before = {k: v.clone() for k, v in resnet18.state_dict().items()}
    freeze(resnet18)
    assert trainable(resnet18) == {"head.fc.weight", "head.fc.bias"}
    resnet18.train()  # what a training loop does every epoch
    bns = [m for m in resnet18.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(isinstance(m, FrozenBatchNorm2d) and not m.training for m in bns)
    resnet18(torch.randn(4, 3, 32, 32))  # a training-mode forward does not move the running statistics
    after = resnet18.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unfreeze_restores_training_and_batchnorm(resnet18):
    unfreeze(freeze(resnet18))
    resnet18.train()
    assert trainable(resnet18) == {name for name, _ in resnet18.named_parameters()}
    assert all(type(m) is nn.BatchNorm2d and m.training for m in resnet18.modules() if isinstance(m, nn.BatchNorm2d))


def test_freeze_up_to_a_stage_trains_the_later_ones(resnet18):
    freeze_up_to(resnet18, "conv3_x")
    assert not resnet18.stages.conv3_x[1].conv2.weight.requires_grad
    assert resnet18.stages.conv4_x[0].conv1.weight.requires_grad and resnet18.head.fc.weight.requires_grad
    assert isinstance(resnet18.stages.conv3_x[0].bn1, FrozenBatchNorm2d)
    assert type(resnet18.stages.conv4_x[0].bn1) is nn.BatchNorm2d
    assert "conv3_x" in trainable_summary(resnet18)
    with pytest.raises(ValueError, match="no stage 'layer3'.*conv3_x"):
        freeze(resnet18, ["layer3"])


def test_discriminative_learning_rates_halve_stage_by_stage(resnet18):
    groups = param_groups(resnet18, lr=0.1, decay=0.5)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("conv1", 0.1 / 32), ("conv2_x", 0.1 / 16), ("conv3_x", 0.1 / 8), ("conv4_x", 0.1 / 4), ("conv5_x", 0.1 / 2),
        ("classifier", 0.1),
    ]
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)  # accepted as they are
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(resnet18.parameters()))


def test_param_groups_skip_frozen_stages_and_exempt_norms_from_weight_decay(resnet18):
    freeze_up_to(resnet18, "conv4_x")
    groups = param_groups(resnet18, lr=1.0, weight_decay=1e-4)
    assert [g["name"] for g in groups] == ["conv5_x", "conv5_x (no decay)", "classifier", "classifier (no decay)"]
    assert all(p.ndim <= 1 for g in groups if g["weight_decay"] == 0.0 for p in g["params"])
    freeze(resnet18)
    freeze(resnet18, ["classifier"])
    with pytest.raises(ValueError, match="every parameter is frozen"):
        param_groups(resnet18, lr=1.0)


def test_class_subset_makes_a_new_task():
    from minibones.data import load_data

    digits = load_data("digits")
    target = class_subset(digits, [5, 6, 7, 8, 9])
    assert target.classes == ["5", "6", "7", "8", "9"] and target.num_classes == 5
    assert set(target.train.labels.tolist()) == {0, 1, 2, 3, 4}
    assert len(target.train) + len(class_subset(digits, range(5)).train) == len(digits.train)


def test_a_short_transfer_run_compares_the_three_recipes():
    from minibones.data import load_data
    from minibones.train import TrainConfig

    digits = load_data("digits")
    source = class_subset(digits, range(5)).subset(train=64)
    target = class_subset(digits, range(5, 10)).subset(train=64, test=32)
    config = TrainConfig(epochs=1, batch_size=16, progress=False, verbose=False)
    result = transfer_experiment("resnet20", target, source=source, config=config)
    rows = {row["recipe"]: row for row in result.rows}
    assert list(rows) == ["linear_probe", "fine_tune", "from_scratch"]
    assert rows["linear_probe"]["trainable_params"] == 64 * 5 + 5  # the new classifier only
    assert rows["fine_tune"]["trainable_params"] == rows["from_scratch"]["trainable_params"] == result.total
    assert all(row["epochs"] == 1 and 0 <= row["final_test_acc"] <= 1 for row in rows.values())
    assert "| linear_probe | 325 of" in result.table()
    assert len(result.plot().axes[0].lines) == 3


def test_fit_trains_each_parameter_group_at_its_own_rate():
    from minibones.data import load_data
    from minibones.train import TrainConfig, fit

    data = load_data("digits", verbose=False).subset(train=64, test=16)
    torch.manual_seed(0)
    model = minibones.create_model("resnet20", num_classes=10)
    head = list(model.head.parameters())
    rest = [p for p in model.parameters() if all(p is not h for h in head)]
    groups = [{"params": head, "lr": 0.05}, {"params": rest, "lr": 0.0}]  # only the head may move
    stem_before = model.stem.conv.weight.detach().clone()
    fc_before = model.head.fc.weight.detach().clone()
    fit(model, data, TrainConfig(epochs=1, batch_size=16, progress=False, verbose=False), param_groups=groups)
    torch.testing.assert_close(model.stem.conv.weight, stem_before, rtol=0, atol=1e-9)
    assert not torch.allclose(model.head.fc.weight, fc_before)


def test_discriminative_fine_tuning_is_a_recipe_of_the_experiment():
    from minibones.data import load_data
    from minibones.train import TrainConfig

    digits = load_data("digits", verbose=False)
    target = class_subset(digits, range(5, 10)).subset(train=64, test=16)
    config = TrainConfig(epochs=1, batch_size=16, progress=False, verbose=False)
    start = minibones.create_model("resnet20", num_classes=5)
    result = transfer_experiment("resnet20", target, source=start, config=config, recipes=("discriminative",))
    (row,) = result.rows
    assert row["recipe"] == "discriminative" and row["trainable_params"] == result.total
