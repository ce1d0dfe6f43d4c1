"""GoogLeNet (Szegedy et al. 2015) and Inception-v3 (Szegedy et al. 2016) match torchvision,
with and without their auxiliary classifiers, expose their pyramids, and compile."""

import copy

import pytest
import torch

import minibones
from minibones import count_parameters, load_reference_weights
from minibones.models.inception import GoogLeNetOutputs, InceptionModule
from minibones.models.inception_v3 import InceptionOutputs
from minibones.reference import relative_error
from parity import TOLERANCE, assert_activations_used_once, ported_pair

# GoogLeNet: the default size, and an odd one where every ceil_mode pool rounds up (see below)
GOOGLENET_SIZES = [(224, 224), (97, 131)]
# Inception-v3: the default size, and an odd one (inputs below 75x75 are too small for it)
INCEPTION_V3_SIZES = [(299, 299), (155, 211)]
SIZES = {"googlenet": GOOGLENET_SIZES, "inception_v3": INCEPTION_V3_SIZES}
ODD_SIZE = {"googlenet": GOOGLENET_SIZES[1], "inception_v3": INCEPTION_V3_SIZES[1]}
# torchvision's counts: without aux heads (googlenet's published weights), and with them
PARAMETERS = {
    ("googlenet", False): 6_624_904,
    ("googlenet", True): 13_004_888,
    ("inception_v3", False): 23_834_568,
    ("inception_v3", True): 27_161_264,
}


def assert_same_logits(model, reference, sizes):
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for size in sizes:
            x = torch.randn(1, 3, *size, generator=generator)
            expected = reference(x)
            assert relative_error(model(x), expected) < TOLERANCE, size
        # the logits depend on the input: otherwise an error of 0 would prove nothing
        assert relative_error(reference(torch.randn(1, 3, *size, generator=generator)), expected) > 0.05


@pytest.fixture(scope="module", params=["googlenet", "inception_v3"])
def plain(request):
    """aux_logits=False, transform_input=False: the default, and what forward(x) -> logits needs.
    meta_init skips our init (the port overwrites it) and gives the reference PyTorch's default
    per-layer init, as random as torchvision's truncated normal one and faster."""
    return ported_pair(request.param, meta_init=True)


@pytest.fixture(scope="module", params=["googlenet", "inception_v3"])
def with_aux(request):
    """aux_logits=True and transform_input=True: how torchvision builds the pretrained models."""
    return ported_pair(request.param, meta_init=True, aux_logits=True, transform_input=True)


def test_matches_torchvision(plain):
    model, reference = plain
    assert_same_logits(model, reference, SIZES[model.config.name])


def test_has_as_many_parameters_as_torchvision(plain):
    model, reference = plain
    assert count_parameters(model) == count_parameters(reference) == PARAMETERS[model.config.name, False]


def test_with_aux_heads_and_transform_input_matches_torchvision(with_aux):
    model, reference = with_aux
    assert count_parameters(model) == count_parameters(reference) == PARAMETERS[model.config.name, True]
    assert_same_logits(model, reference, [ODD_SIZE[model.config.name]])  # in eval mode: the logits only


def test_aux_heads_match_torchvision_in_training_mode(with_aux):
    model, reference = with_aux
    # the aux head of Inception-v3 needs the 17x17 grid of a 299x299 input; batch norm needs batch > 1
    x = torch.randn(2, 3, 299, 299) if model.config.name == "inception_v3" else torch.randn(2, 3, 97, 131)
    outputs = []
    for net in (model, reference):
        net.train()
        torch.manual_seed(2)  # the same dropout masks, drawn in the same order
        with torch.no_grad():
            outputs.append(net(x))
        net.eval()
    ours, theirs = outputs
    expected_type = GoogLeNetOutputs if model.config.name == "googlenet" else InceptionOutputs
    assert type(ours) is expected_type and ours._fields == theirs._fields
    for field, mine, reference_output in zip(ours._fields, ours, theirs):
        assert relative_error(mine, reference_output) < TOLERANCE, field


def test_a_model_without_aux_heads_loads_a_reference_that_has_them(with_aux):
    # torchvision's inception_v3 checkpoint carries AuxLogits: the name map drops them
    with_heads, reference = with_aux
    name = with_heads.config.name
    model = minibones.create_model(name, transform_input=True, init_weights=False).eval()
    load_reference_weights(model, reference)
    assert_same_logits(model, reference, [ODD_SIZE[name]])


# name, channels, and the (H, W) of every stage at the default and at the odd size
STAGES = {
    "googlenet": (
        ["conv1", "conv2", "inception3b", "inception4e", "inception5b"],
        [64, 192, 480, 832, 1024],
        [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)],
        # every max pool has ceil_mode=True: floor would give (24, 32), (11, 16), (5, 7), (2, 3)
        [(49, 66), (24, 33), (12, 16), (6, 8), (3, 4)],
    ),
    "inception_v3": (
        ["conv2b", "conv4a", "mixed5d", "mixed6e", "mixed7c"],
        [64, 192, 288, 768, 2048],
        # "valid" convs and pools: 299 -> 149 -> 147 | 73 -> 71 | 35 | 17 | 8
        [(147, 147), (71, 71), (35, 35), (17, 17), (8, 8)],
        [(75, 103), (35, 49), (17, 24), (8, 11), (3, 5)],
    ),
}


def test_feature_strides_are_2_4_8_16_32(plain):
    model, _ = plain
    name = model.config.name
    names, channels, default_shapes, odd_shapes = STAGES[name]
    assert [s.name for s in model.feature_info] == names
    assert [s.stride for s in model.feature_info] == [2, 4, 8, 16, 32]
    assert [s.channels for s in model.feature_info] == channels
    with torch.no_grad():
        for size, shapes in ((model.config.input_size[1:], default_shapes), (ODD_SIZE[name], odd_shapes)):
            features = model.forward_stages(torch.randn(1, 3, *size))
            assert [tuple(f.shape[1:]) for f in features] == [(c, *hw) for c, hw in zip(channels, shapes)], size


def test_without_aux_heads_forward_returns_logits_in_training_mode_too():
    model = minibones.create_model("googlenet", num_classes=10, init_weights=False).train()
    assert model.aux1 is None and model.aux2 is None
    assert isinstance(model(torch.randn(2, 3, 64, 64)), torch.Tensor)


def test_reset_classifier_resets_the_aux_heads_too():
    model = minibones.create_model("googlenet", aux_logits=True, init_weights=False)
    model.reset_classifier(5)
    outputs = model.train()(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(2, 5)] * 3


def test_googlenet_keeps_torchvision_3x3_in_its_5x5_branch():
    # pytorch/vision#906: the released weights are 3x3, so googlenet must stay so to load them
    with torch.device("meta"):
        model = minibones.create_model("googlenet")
    assert {module.branch5x5.conv.conv.kernel_size for module in model.modules()
            if isinstance(module, InceptionModule)} == {(3, 3)}


def test_inception_module_with_the_papers_5x5_sees_a_wider_window():
    # inception (3a) of table 1; kernel_5x5=5 is figure 2(b) as drawn, for networks trained from scratch
    widths = (192, 64, 96, 128, 16, 32, 32)
    torch.manual_seed(0)
    released, paper = InceptionModule(*widths), InceptionModule(*widths, kernel_5x5=5)
    assert count_parameters(paper) - count_parameters(released) == 16 * 32 * (25 - 9)
    assert paper.branch5x5.conv.conv.kernel_size == (5, 5)
    x = torch.randn(1, 192, 11, 11, requires_grad=True)
    assert paper.eval()(x).shape == (1, 256, 11, 11)  # padding 2 keeps the grid
    # the centre output of the branch reads a 5x5 window of the module's input, not 3x3
    paper.branch5x5(x)[0, :, 5, 5].sum().backward()
    rows, cols = x.grad[0].abs().sum(0).nonzero(as_tuple=True)
    assert (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1) == (5, 5)
    with pytest.raises(ValueError, match="kernel_5x5 must be 3"):
        InceptionModule(*widths, kernel_5x5=7)


@pytest.mark.parametrize("name, smallest", [("googlenet", 15), ("inception_v3", 75)])
def test_too_small_images_are_rejected_with_a_clear_message(name, smallest):
    with torch.device("meta"):  # the check comes before any compute
        model = minibones.create_model(name)
        with pytest.raises(ValueError, match=rf"at least {smallest}x{smallest}"):
            model(torch.randn(1, 3, smallest - 1, 100))


def test_aux_heads_on_small_images(with_aux):
    # GoogLeNet's aux heads pool adaptively, any size works; Inception-v3's needs the 17x17 grid of
    # a 299x299 input and says so instead of failing deep inside a conv
    model = copy.deepcopy(with_aux[0]).train()  # a copy: training mode updates the BN statistics
    x = torch.randn(2, 3, 160, 160)
    if model.config.name == "googlenet":
        with torch.no_grad():
            assert [tuple(o.shape) for o in model(x)] == [(2, 1000)] * 3
    else:
        with pytest.raises(ValueError, match=r"17x17 .* aux_logits=False"):
            model(x)


@pytest.mark.parametrize("name, size", [("googlenet", 64), ("inception_v3", 75)])
def test_every_activation_module_is_used_once(name, size):
    model = minibones.create_model(name, num_classes=10, init_weights=False).eval()
    assert_activations_used_once(model, torch.randn(1, 3, size, size), torch.nn.ReLU)


@pytest.mark.parametrize(
    "name, options, size, train",
    [
        # training mode with the aux heads: the branchiest path through GoogLeNet
        ("googlenet", dict(aux_logits=True, dropout=0.0, dropout_aux=0.0), 64, True),
        ("inception_v3", dict(), 75, False),
    ],
)
def test_compiles_without_graph_breaks_and_gives_the_same_outputs_and_gradients(name, options, size, train):
    # fullgraph=True fails on any graph break. The "eager" backend runs the captured graph
    # as is: it proves the capture in ~4 s per model here, where aot_eager takes ~11 s and
    # inductor ~20 s more of code generation (vgg11 in test_vgg.py goes through aot_eager).
    torch.manual_seed(0)
    model = minibones.create_model(name, num_classes=10, init_weights=False, **options).train(train)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    expected = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="eager")(x)
    assert type(compiled) is type(expected)
    expected, compiled = (list(o) if isinstance(o, tuple) else [o] for o in (expected, compiled))
    (expected_grad,) = torch.autograd.grad(sum(o.sum() for o in expected), x)
    (grad,) = torch.autograd.grad(sum(o.sum() for o in compiled), x)
    for mine, reference in zip(compiled, expected):
        torch.testing.assert_close(mine, reference)
    torch.testing.assert_close(grad, expected_grad)
