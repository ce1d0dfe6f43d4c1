"""Every function of minibones.viz works on one small variant of every family, ViT included.

Random weights, small inputs: these tests prove the toolkit runs and says the right
thing on each architecture, not that the pictures are meaningful (that needs trained
weights, see notebooks 07 and 08).
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import minibones  # noqa: E402
from minibones import viz  # noqa: E402

# one small variant per family, and the smallest input it accepts comfortably
FAMILIES = {
    "resnet18": 32,
    "vgg11": 32,
    "googlenet": 32,
    "inception_v3": 75,  # its stem refuses anything smaller
    "xception": 32,
    "mobilenet_v2": 32,
    "mobilenet_v3_small": 32,
    "efficientnet_b0": 32,
    "convnext_tiny": 32,
    "vit_tiny_cifar": 32,
}
FAST = dict(steps=4, internal_batch_size=4, samples=2)


def test_every_family_is_covered():
    """A new family must be added above (the files of minibones/models/ each register at least one name)."""
    import pkgutil

    import minibones.models as families
    from minibones.registry import _BUILDERS

    files = {info.name for info in pkgutil.iter_modules(families.__path__)}
    covered = {_BUILDERS[name].__module__.rsplit(".", 1)[-1] for name in FAMILIES}
    assert files <= covered, f"no small variant tested for {sorted(files - covered)}"


def quick_model(name: str) -> nn.Module:
    """The model with cheap random weights: built on the meta device (the family's own init of
    VGG's 100M-weight fc6 takes seconds), then materialised with He-uniform convs and linears
    (so the signal keeps its scale through the depth), fresh norms, and N(0, 0.02) elsewhere."""
    with torch.device("meta"):
        model = minibones.create_model(name, num_classes=10)
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif hasattr(module, "reset_parameters"):
                module.reset_parameters()  # norms (and their running statistics)
            else:
                for param in module.parameters(recurse=False):
                    param.normal_(0, 0.02)  # class token, position embeddings, layer scales...
    return model.eval()


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    name = request.param
    model = quick_model(name)
    size = FAMILIES[name]
    x, image = viz.as_input(model, "cat", size)
    return name, model, x


def test_receptive_fields_follow_the_stages(family):
    name, model, x = family
    rows = viz.receptive_fields(model, tuple(x.shape[-2:]))
    assert [r.name for r in rows] == model.stage_names()
    assert [r.stride[0] for r in rows] == [info.stride for info in model.feature_info]
    assert all(r.size is not None and r.size[0] >= r.stride[0] for r in rows)
    stats = viz.stage_statistics(model, x)
    assert [s["name"] for s in stats] == model.stage_names()


def test_every_attribution_method_gives_a_map_or_says_why(family):
    name, model, x = family
    relu_only = not viz.non_relu_activations(model)
    rectifiers_only = not viz.attribution.unguided_activations(model)  # ReLU and ReLU6: guided backprop has a rule for both
    vit = viz.attention.is_vit(model)
    for method in viz.METHODS:
        result = viz.attribute(model, x, method, target=1, **FAST)
        expected = {
            "guided_backprop": rectifiers_only,
            "guided_gradcam": rectifiers_only,
            "attention": vit,
            "attention_rollout": vit,
        }.get(method, None)
        if method == "deeplift":
            assert result.delta is not None  # always reported
            if result.ok:
                assert result.delta <= viz.attribution.DEEPLIFT_MAX_DELTA
                assert relu_only == (result.note is None), (name, result.note)
            else:  # a large delta, explained
                assert "Not drawn" in result.note and ("no rule for" in result.note or "do not add up" in result.note)
        elif expected is not None:
            assert result.ok == expected, (name, method, result.note)
        else:
            assert result.ok, (name, method, result.note)
        if result.ok:
            assert result.map.shape == x.shape[-2:] and torch.isfinite(result.map).all(), (name, method)
        else:
            assert result.note


def test_feature_visualization_effective_field_and_embedding(family):
    name, model, x = family
    last = model.stage_names()[-1]
    image, history = viz.maximize_activation(model, last, channel=0, size=x.shape[-1], steps=2)
    assert image.shape == x.shape[1:] and len(history) == 2
    erf = viz.effective_receptive_field(model, model.stage_names()[-2], inputs=torch.randn(1, *x.shape[1:]))
    assert erf.shape == x.shape[-2:] and torch.isclose(erf.sum(), torch.tensor(1.0))
    features = viz.pooled_features(model, torch.cat([x, x.flip(-1)]))
    assert features.shape == (2, model.num_features)


def test_sanity_checks(family):
    name, model, x = family
    last = model.feature_info[-1].module  # (not the head: VGG's holds 120M weights to re-draw)
    original, steps = viz.model_randomization_test(model, x, "saliency", target=1, layers=[last])
    assert original.shape == x.shape[-2:] and steps[0].layer == last
    assert steps[0].spearman_abs < 1  # new weights in the last stage: another map
    curve = viz.deletion_insertion(model, x, original, target=1, steps=4)
    with torch.no_grad():
        probability = float(model(x).softmax(1)[0, 1])
    # nothing deleted yet, and everything put back: both ends are the probability on the photograph
    assert len(curve.deletion) == 5 and curve.deletion[0] == pytest.approx(probability, rel=1e-4)
    assert curve.insertion[-1] == pytest.approx(probability, rel=1e-4)


def test_the_same_photograph_through_every_family_side_by_side():
    models = {name: quick_model(name) for name in ["resnet18", "googlenet", "efficientnet_b0", "vit_tiny_cifar"]}
    fig = viz.compare_stages(models, "cat", size=32)
    panels = len(models) + sum(len(model.feature_info) for model in models.values())  # photo + one per stage
    assert len([ax for ax in fig.axes if ax.images]) == panels
    plt.close(fig)
