"""load_reference_weights: every name and shape checked, all or nothing."""

import argparse

import pytest
import torch
import torchvision

import minibones
from minibones import WeightLoadError, load_reference_weights
from minibones.porting import convert_state_dict, diff_state_dicts


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_loads_from_a_module_a_state_dict_and_a_checkpoint_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    for source in (reference, reference.state_dict(), path, str(path)):
        model = load_reference_weights(minibones.create_model("resnet18"), source)
        assert torch.equal(model.stem.conv.weight, reference.conv1.weight)
        assert torch.equal(model.head.fc.bias, reference.fc.bias)


def test_a_training_checkpoint_with_nested_weights_loads(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": reference.state_dict(), "epoch": 3}, path)
    model = load_reference_weights(minibones.create_model("resnet18"), path)
    assert torch.equal(model.stages.conv5_x[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_missing_and_unexpected_tensors_are_listed_and_nothing_is_loaded():
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    model = minibones.create_model("resnet18")
    before = snapshot(model)
    with pytest.raises(WeightLoadError) as error:
        load_reference_weights(model, state)
    message = str(error.value)
    assert "nothing was loaded" in message
    assert "1 missing:\n  stages.conv2_x.0.conv1.weight" in message
    assert "1 unexpected:\n  extra.weight" in message
    assert unchanged(model, before)


def test_a_mis_shaped_tensor_is_reported_with_both_shapes():
    reference = torchvision.models.resnet18(weights=None, num_classes=10)
    model = minibones.create_model("resnet18")
    before = snapshot(model)
    with pytest.raises(WeightLoadError, match=r"head.fc.weight: reference \(10, 512\) vs model \(1000, 512\)"):
        load_reference_weights(model, reference)
    assert unchanged(model, before)


def test_the_wrong_architecture_is_refused_and_the_file_is_named(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    model = minibones.create_model("resnet18")
    before = snapshot(model)
    with pytest.raises(WeightLoadError, match="resnet50.pth"):
        load_reference_weights(model, path)
    assert unchanged(model, before)


def test_a_file_that_is_not_a_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(WeightLoadError, match="could not read .*notes.pth as a weights-only checkpoint"):
        load_reference_weights(minibones.create_model("resnet18"), path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_reference_weights(minibones.create_model("resnet18"), tmp_path / "missing.pth")


def test_checkpoints_are_read_weights_only(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"conv1.weight": argparse.Namespace(payload="arbitrary objects are never unpickled")}, path)
    with pytest.raises(WeightLoadError, match="weights-only"):
        load_reference_weights(minibones.create_model("resnet18"), path)


def test_diff_state_dicts_names_what_is_missing_unexpected_and_mis_shaped():
    expected = {"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(4), "c.bias": torch.zeros(1)}
    actual = {"a.weight": torch.zeros(3, 2), "b.weight": torch.zeros(4), "d.bias": torch.zeros(1)}
    diff = diff_state_dicts(actual, expected)
    assert diff.missing == ["c.bias"] and diff.unexpected == ["d.bias"]
    assert diff.mis_shaped == [("a.weight", (3, 2), (2, 3))]
    other_values = {name: torch.ones_like(tensor) for name, tensor in expected.items()}
    assert diff and not diff_state_dicts(other_values, expected)  # names and shapes count, values do not
    # a model and its reference, converted through the name map, agree in every name and shape
    model = minibones.create_model("resnet18")
    converted = convert_state_dict(model, torchvision.models.resnet18(weights=None).state_dict())
    assert not diff_state_dicts(converted, model.state_dict())
