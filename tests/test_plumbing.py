"""The plumbing every part of the library shares: files written atomically, downloaded and hashed, modes given back."""

import hashlib

import pytest
from minibones.files import atomic_path, download, file_digest

def test_a_finished_write_lands_under_the_final_name(tmp_path):
    target = tmp_path / "sub" / "weights.pth"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".partial")
        tmp.write_bytes(b"abc")
        assert not target.exists()
    assert target.read_bytes() == b"abc" and list(target.parent.iterdir()) == [target]

def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]

def test_a_folder_is_renamed_whole_or_not_at_all(tmp_path):
    with atomic_path(tmp_path / "cifar") as tmp:
        (tmp / "inner").mkdir(parents=True)
        (tmp / "inner" / "x").write_text("1")
    assert (tmp_path / "cifar" / "inner" / "x").read_text() == "1"
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "other") as tmp:
            tmp.mkdir()
            raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar"]


def test_one_downloader_streams_a_url_and_lets_network_errors_through(tmp_path):
    source = tmp_path / "published.bin"
    source.write_bytes(bytes(range(256)) * 5000)  # more than one chunk
    with atomic_path(tmp_path / "copy.bin") as tmp:
        download(source.as_uri(), tmp, progress=False)
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    assert file_digest(source, "md5") == hashlib.md5(source.read_bytes()).hexdigest()
    assert file_digest(source, "sha256") == hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(OSError):  # the caller turns it into advice (what to fetch by hand, and where)
        download((tmp_path / "nowhere.bin").as_uri(), tmp_path / "never.bin", progress=False)
    assert not (tmp_path / "never.bin").exists()


def test_mode_gives_the_model_back_its_mode_even_after_an_error():
    import torch
    from minibones.backbone import mode

    model = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.BatchNorm1d(3)).train()
    with mode(model, training=False):
        assert not model.training and not model[1].training
    assert model.training and model[1].training
    with pytest.raises(ZeroDivisionError), mode(model.eval(), training=True):
        assert model.training
        1 / 0
    assert not model.training and not model[0].training


def test_a_stage_is_found_by_name_or_the_error_lists_the_stages():
    import torch
    import minibones

    with torch.device("meta"):
        model = minibones.create_model("resnet18")
    assert [model.stage_index(name) for name in model.stage_names()] == list(range(len(model.feature_info)))
    with pytest.raises(ValueError, match=r"resnet18 has no stage 'layer4'; its stages are \['conv1', 'conv2_x', "):
        model.stage_index("layer4")


def test_batch_norm_statistics_are_measured_and_the_mode_given_back():
    import torch
    from minibones.backbone import measure_batch_norm_

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.9)).train()
    inputs = torch.randn(8, 3, 6, 6) * 3 + 1
    measure_batch_norm_(model, inputs, batch_size=4)  # two batches: a cumulative average of the two
    features = model[0](inputs)
    torch.testing.assert_close(model[1].running_mean, features.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert model.training and model[1].momentum == 0.1
