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
    assert all(row["epochs"] == 1 for row in rows.values())
    last_lr = {recipe: history.last["lr"] for recipe, history in result.histories.items()}  # same schedule, scaled
    assert last_lr["fine_tune"] == pytest.approx(0.1 * last_lr["linear_probe"]) and last_lr["from_scratch"] == \
        pytest.approx(last_lr["linear_probe"])
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


# --- label efficiency ------------------------------------------------------------------


def test_labelled_subset_draws_k_images_of_every_class_and_depends_on_the_seed():
    from minibones.transfer import labelled_subset

    labels = torch.arange(10).repeat(20)  # 20 images of each of 10 classes
    chosen = labelled_subset(labels, 3, seed=0)
    assert torch.bincount(labels[chosen], minlength=10).tolist() == [3] * 10
    assert not torch.equal(chosen, labelled_subset(labels, 3, seed=1))
    assert torch.equal(chosen, labelled_subset(labels, 3, seed=0))
    assert sorted(labelled_subset(labels, "all", seed=0).tolist()) == list(range(200))
    with pytest.raises(ValueError, match="fewer than the 21"):
        labelled_subset(labels, 21, seed=0)
    with pytest.raises(ValueError, match="positive whole number or 'all'"):
        labelled_subset(labels, 0, seed=0)


def test_resize_inputs_normalises_and_resizes():
    from minibones.transfer import resize_inputs

    images = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    x = resize_inputs(images, 32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert x.shape == (2, 3, 32, 32) and torch.allclose(x, torch.ones_like(x))  # white is +1 in [-1, 1]


@pytest.mark.parametrize("name, stage", [("efficientnet_lite0", "conv_head"), ("efficientnet_lite0", "stem"),
                                         ("resnet18", "conv4_x")])
def test_split_at_cuts_a_network_into_a_trunk_and_a_top_that_compose_to_it(name, stage):
    from minibones.transfer import split_at

    torch.manual_seed(0)
    model = minibones.create_model(name).eval()
    trunk, top = split_at(model, stage)
    assert next(iter(top.named_children()))[0] == stage
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(top(trunk(x)), model(x))
    assert sum(p.numel() for p in trunk.parameters()) + sum(p.numel() for p in top.parameters()) == \
        minibones.count_parameters(model)


def test_split_at_refuses_what_it_cannot_cut():
    from minibones.transfer import split_at

    with pytest.raises(ValueError, match="choose one of"):
        split_at(minibones.create_model("resnet20"), "layer3")
    with pytest.raises(ValueError, match="not the chain"):  # ViT: class token and position embedding in forward
        split_at(minibones.create_model("vit_tiny_cifar"), "blocks")


def test_linear_probe_reaches_the_optimum_scikit_learn_finds():
    from sklearn.linear_model import LogisticRegression

    from minibones.transfer import accuracy, linear_probe

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 20, generator=generator) * 2
    labels = torch.arange(3).repeat(30)
    features = centres[labels] + torch.randn(90, 20, generator=generator) + 5.0  # off-centre on purpose
    probe = linear_probe(features, labels, weight_decay=1e-2)
    assert probe.gradient_norm < 1e-4
    # the same objective: mean cross-entropy + C-scaled L2 on the weights only (sklearn: C = 1 / (N * weight_decay))
    reference = LogisticRegression(C=1 / (90 * 1e-2), tol=1e-10, max_iter=10_000).fit(features.double().numpy(), labels.numpy())
    ours = probe(features).double()
    theirs = torch.from_numpy(reference.decision_function(features.double().numpy()))
    torch.testing.assert_close(ours - ours.mean(1, keepdim=True), theirs - theirs.mean(1, keepdim=True), atol=1e-2, rtol=1e-2)
    assert accuracy(probe, features, labels) == 1.0
    assert not any(p.requires_grad for p in probe.parameters())


def test_train_steps_runs_exactly_the_budget_and_reports_test_accuracy():
    from minibones.transfer import train_steps

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    inputs, labels = torch.randn(40, 3, 2, 2), torch.arange(40) % 3
    steps_taken = []
    model.register_forward_hook(lambda m, i, o: steps_taken.append(m.training) if m.training else None)
    curve = train_steps(model, inputs, labels, steps=20, batch_size=16, lr=0.1, test=(inputs, labels))
    assert len(steps_taken) == 20  # one training forward per step, evaluations in eval mode
    assert list(curve) == [15, 20] and curve[20] > 0.5  # chance: 1/3


def test_train_steps_gives_the_new_classifier_its_own_rate():
    from minibones.transfer import train_steps

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    body = model[1].weight.detach().clone()
    train_steps(model, torch.randn(32, 3, 2, 2), torch.arange(32) % 3, steps=8, lr=0.0, classifier_lr=0.1)
    assert torch.equal(model[1].weight, body)  # lr 0: the pretrained part did not move


def test_label_efficiency_tabulates_pairs_and_plots():
    from minibones.transfer import LabelEfficiency

    curve = LabelEfficiency([1, "all"], images_per_class_all=140.0)
    for k, (a, b) in {1: ((0.5, 0.6), (0.4, 0.4)), "all": ((0.9, 0.9), (0.95, 0.97))}.items():
        for seed in range(2):
            curve.add("probe", k, a[seed])
            curve.add("scratch", k, b[seed], late_gain=0.01)
    assert "| probe | 55.0 ± 7.1 (n=2) | 90.0 ± 0.0 (n=2) |" in curve.table()
    difference = curve.difference("probe", "scratch")
    assert difference[1] == pytest.approx((15.0, 7.071), abs=1e-3)  # paired: +10 and +20 points
    assert difference["all"][0] == pytest.approx(-6.0)
    assert "scratch" in curve.plateau_table() and "probe" not in curve.plateau_table()
    figure = curve.plot(chance=0.1)
    ax = figure.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "test accuracy (%)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "all\n(~140)"]


def test_recalibrate_batchnorm_measures_statistics_without_training_a_weight():
    from minibones.transfer import recalibrate_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten())
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    inputs = torch.randn(10, 3, 6, 6) * 3 + 1
    recalibrate_batchnorm(model, inputs, batch_size=5)  # two equal batches, averaged (not an exponential average)
    conv = model[0](inputs)
    torch.testing.assert_close(model[1].running_mean, conv.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert not model.training and model[1].momentum == 0.1
    with pytest.raises(ValueError, match="has no batch norm whose statistics"):
        recalibrate_batchnorm(nn.Linear(2, 2), torch.randn(3, 2))


def test_label_efficiency_plot_zooms_on_the_data_and_draws_a_chosen_subset():
    from minibones.transfer import LabelEfficiency

    curve = LabelEfficiency([1, "all"], images_per_class_all=140.0)
    for recipe, values in {"probe": (0.55, 0.95), "scratch": (0.47, 0.96), "control": (0.12, 0.40)}.items():
        for k, value in zip([1, "all"], values):
            curve.add(recipe, k, value)
    ax = curve.plot(recipes=["probe", "scratch"]).axes[0]
    low, high = ax.get_ylim()
    assert 40 <= low <= 45 and high == 100  # the data (47 to 96 %) fill the axis
    assert [line.get_label() for line in ax.get_lines()] == ["probe", "scratch"]
    ax = curve.plot(recipes=["control"], chance=0.1).axes[0]
    assert ax.get_ylim()[0] <= 10 and ax.get_lines()[0].get_color() == "C2"  # its colour in every panel
    with pytest.raises(ValueError, match="no runs of"):
        curve.plot(recipes=["fine-tune"])
