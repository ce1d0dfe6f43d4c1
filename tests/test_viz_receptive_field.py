"""Analytic receptive fields, checked against the network itself and against the literature.

The independent check: on a *linearised* copy of a model (every activation and
normalisation replaced by the identity, max pools by average pools of the same
geometry, every weight positive so that no two paths can cancel), the input pixels
whose gradient for one output unit is non-zero are exactly the pixels that unit can
see. The copy also collapses every convolution to one channel (the channel mean,
then a positive kernel of the same size, stride, padding and dilation): with equal
positive weights all channels carry the same values anyway, and the check becomes
cheap enough to run at 700-900 pixels, where even the deepest fields fit inside the
image. It runs in float64: at the edge of a 1311-pixel field a gradient is a product
of ~100 factors of about 1/9, far below float32's smallest number.

Published values: Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional
Neural Networks", Distill 2019, and its library's table (google-research/receptive_field),
computed on the TF-Slim models.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import minibones  # noqa: E402
from minibones.viz import (  # noqa: E402
    ReceptiveField, effective_receptive_field, erf_extent, plot_effective_receptive_fields, plot_receptive_field,
    receptive_fields,
)


# --- the independent computation --------------------------------------------------------


class GeometryOnlyConv(nn.Module):
    """A convolution reduced to its geometry: channel mean, then a positive averaging kernel."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.padding_mode = conv.padding_mode
        kh, kw = conv.kernel_size
        self.register_buffer("weight", torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=torch.float64, device="cpu"))

    def forward(self, x):
        x = x.mean(1, keepdim=True)
        if isinstance(self.padding, str) or self.padding_mode != "zeros":
            raise NotImplementedError("only zero padding given as numbers is used by the models tested here")
        return F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation)


class ChannelMean(nn.Module):
    """A linear layer over channels (ConvNeXt's pointwise convs), reduced the same way."""

    def forward(self, x):
        return x.mean(-1, keepdim=True)


def linearised(model: nn.Module, collapse: bool = True) -> nn.Module:
    """The linearised copy (in place). ``collapse=False`` (ViT, whose reshapes into heads need the
    real widths) only moves the model to float64: every stage of a ViT is global, and seeing a
    non-zero gradient on every pixel needs no linearisation (positive weights would even saturate
    the softmax into exact zeros)."""
    if not collapse:
        return model.double().eval()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d):
                new = GeometryOnlyConv(child)
            elif isinstance(child, nn.MaxPool2d):
                assert child.dilation in (1, (1, 1))
                new = nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode)
            elif isinstance(child, nn.Linear):
                new = ChannelMean()
            elif isinstance(child, (nn.Sigmoid, nn.Hardsigmoid)):
                new = nn.Softsign()  # a gate must stay bounded (x * x * ... would overflow) and keep a non-zero slope
            elif type(child).__module__ == "torch.nn.modules.activation" or isinstance(
                child, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
            ):
                new = nn.Identity()
            else:
                continue
            setattr(module, child_name, new)
    for module in model.modules():  # what is left (layer scales): one positive number each
        for name, param in list(module._parameters.items()):
            if param is not None:
                module._parameters[name] = nn.Parameter(torch.full([1] * param.ndim, 1.1, dtype=torch.float64))
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.device.type == "meta":
                module._buffers[name] = torch.ones([1] * buffer.ndim, dtype=torch.float64)
    return model.eval()


def meta_model(name: str, **kwargs) -> nn.Module:
    """The model's structure without allocating or initialising its weights (instant, even for VGG-16)."""
    with torch.device("meta"):
        return minibones.create_model(name, **kwargs).eval()


def gradient_support(model: nn.Module, size: int, stage: int):
    """For the first and the last unit of a stage (one per sample), the (top, left, bottom, right)
    of the input pixels where its gradient is non-zero."""
    x = torch.ones(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    feature = model.forward_stages(x)[stage]
    h, w = feature.shape[-2:]
    units = [(0, 0), (h - 1, w - 1)]
    loss = sum(feature[b, :, i, j].sum() for b, (i, j) in enumerate(units))
    (grad,) = torch.autograd.grad(loss, x)
    boxes = []
    for b in range(len(units)):
        seen = grad[b].abs().sum(0) > 0
        rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
        boxes.append((rows.min().item(), cols.min().item(), rows.max().item(), cols.max().item()))
    return units, boxes


def assert_support_matches(rf: ReceptiveField, units, boxes, size: int) -> None:
    """Every edge of the analytic region that lies inside the image is exactly where the
    gradient's support ends; the support never leaves the analytic region.

    (Edges outside the image are clipped in both. Near the far border a unit's region may
    also cover padding cells, whose pixels do not reach it: only containment is checked there.)"""
    for unit, (top, left, bottom, right) in zip(units, boxes):
        a_top, a_left, a_bottom, a_right = rf.region(*unit)
        assert a_top <= top and a_left <= left and bottom <= a_bottom and right <= a_right, (rf, unit)
        for analytic, measured in [(a_top, top), (a_left, left), (a_bottom, bottom), (a_right, right)]:
            if 0 <= analytic <= size - 1:
                assert analytic == measured, (rf, unit, rf.region(*unit), (top, left, bottom, right))


def size_to_see(rf: ReceptiveField, minimum: int) -> int:
    """An input in which the first unit's far edge (r - P - 1) and the last unit's near edge
    (about the padding P) both fall inside the image, so both are measured, not clipped."""
    needed = max(rf.size[0] - rf.padding[0] + 1, rf.padding[0] + 2 * rf.stride[0], minimum) if rf.size else minimum
    return -(-needed // 32) * 32


def check_against_gradients(name: str, stages=None, model=None, minimum: int = 32) -> list[ReceptiveField]:
    """Compare every stage (or ``stages``) with the gradient's support, each at the smallest input that shows it."""
    collapse = not name.startswith("vit")
    model = model if model is not None else meta_model(name) if collapse else minibones.create_model(name)
    rows = receptive_fields(model)
    lin = linearised(model, collapse)
    for index, rf in enumerate(rows):
        if stages is not None and rf.name not in stages:
            continue
        size = size_to_see(rf, minimum)
        units, boxes = gradient_support(lin, size, index)
        if rf.global_context:  # SE gates, attention: every pixel reaches every unit
            assert all(box == (0, 0, size - 1, size - 1) for box in boxes), (name, rf)
        else:
            assert_support_matches(rf, units, boxes, size)
    return rows


# --- the tests -------------------------------------------------------------------------


def test_resnet18_fields_grow_7_43_99_211_435():
    # conv1 7x7/2; the 3x3/2 max pool adds 2*2; each 3x3 conv adds 2*stride so far:
    # conv2_x 11 + 4*2*4 = 43, conv3_x 43 + 2*4 + 3*2*8 = 99, conv4_x 211, conv5_x 435.
    rows = receptive_fields(minibones.create_model("resnet18"))
    assert [(r.name, r.size, r.stride, r.padding) for r in rows] == [
        ("conv1", (7, 7), (2, 2), (3, 3)),
        ("conv2_x", (43, 43), (4, 4), (21, 21)),
        ("conv3_x", (99, 99), (8, 8), (49, 49)),
        ("conv4_x", (211, 211), (16, 16), (105, 105)),
        ("conv5_x", (435, 435), (32, 32), (217, 217)),
    ]
    assert not any(r.global_context for r in rows)
    assert str(rows[-1]) == "conv5_x: size 435, stride 32, padding 217"


def test_receptive_fields_do_not_depend_on_the_input_size_or_touch_the_weights():
    model = minibones.create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert receptive_fields(model, 32) == receptive_fields(model, (96, 64))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",  # ResNet (ImageNet stem)
        "resnet20",  # ResNet (CIFAR stem, option-A shortcut: a strided slice and a channel pad)
        "vgg11",  # VGG
        "googlenet",  # Inception: parallel branches, ceil-mode pools
        "xception",  # depthwise separable convs, unpadded stem
        "mobilenet_v2",  # MobileNet, no squeeze-and-excite
        "efficientnet_b0",  # squeeze-and-excite: global context
        "vit_tiny_cifar",  # attention: global context
    ],
)
def test_analytic_field_is_the_support_of_the_gradient(name):
    check_against_gradients(name)


def test_convnext_fields_match_the_gradient_up_to_res4():
    # res5 (1688 pixels) would need a 900-pixel image; res2-res4 exercise every layer type
    rows = check_against_gradients("convnext_tiny", stages={"res2", "res3", "res4"})
    assert [r.size[0] for r in rows] == [76, 224, 1096, 1688]


def test_vgg16_matches_araujo_et_al():
    # Published (TF-Slim vgg_16, same padding as torchvision): pool5 212 / 32 / 90.
    rows = check_against_gradients("vgg16")
    pool5 = rows[-1]
    assert (pool5.name, pool5.size, pool5.stride, pool5.padding) == ("conv5", (212, 212), (32, 32), (90, 90))
    (conv5_3,) = receptive_fields(meta_model("vgg16"), layers=["stages.conv5.conv5_3"])
    assert (conv5_3.size, conv5_3.stride, conv5_3.padding) == ((196, 196), (16, 16), (90, 90))


def test_inception_v3_matches_araujo_et_al():
    # Published (TF-Slim inception_v3, Mixed_7c): 1311 / 32 / 618. torchvision's Inception-v3
    # pads the same way as Slim (VALID stem and reductions, centred SAME elsewhere).
    model = meta_model("inception_v3")
    rows = check_against_gradients("inception_v3", model=model, minimum=96)  # every stage, mixed7c at 704 pixels
    last = rows[-1]
    assert (last.name, last.size, last.stride, last.padding) == ("mixed7c", (1311, 1311), (32, 32), (618, 618))


def test_resnet50_is_427_in_torchvision_and_483_with_the_papers_stride_placement():
    # torchvision's ResNet-50 (v1.5) strides the 3x3 conv of a stage's first block, at the finer
    # resolution, so that conv widens the field by 2*4, 2*8, 2*16 instead of 2*8, 2*16, 2*32:
    rows = check_against_gradients("resnet50")
    assert [r.size[0] for r in rows] == [7, 35, 91, 267, 427]
    assert (rows[-1].size, rows[-1].stride, rows[-1].padding) == ((427, 427), (32, 32), (213, 213))
    # The paper (and Slim's resnet_v1_50, 483 / 32 / 239 in Araujo et al.) strides the first 1x1 conv.
    # Moving the stride there reproduces the published size; the padding is 241 here because
    # PyTorch pads symmetrically where TensorFlow's SAME padding puts the extra pixel at the end.
    model = meta_model("resnet50")
    for stage in ["conv3_x", "conv4_x", "conv5_x"]:
        block = model.get_submodule(f"stages.{stage}.0")
        block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
    rows = check_against_gradients("resnet50", stages={"conv5_x"}, model=model)
    assert (rows[-1].size, rows[-1].stride, rows[-1].padding) == ((483, 483), (32, 32), (241, 241))


def test_every_layer_can_be_listed_in_forward_order():
    rows = receptive_fields(minibones.create_model("resnet20"), 32, layers="all")
    names = [r.name for r in rows]
    assert names[:3] == ["stem.conv", "stem.bn", "stem.act"]
    assert names.index("stages.conv3_x.0.shortcut") < names.index("stages.conv3_x.0.relu2")
    shortcut = rows[names.index("stages.conv3_x.0.shortcut")]  # x[:, :, ::2, ::2]: same field, twice the stride
    assert (shortcut.size, shortcut.stride) == ((15, 15), (2, 2))
    assert "head.pool" not in names  # forward_stages stops before the head


def test_squeeze_excite_and_attention_are_reported_as_global_context():
    effnet = receptive_fields(meta_model("efficientnet_b0"), 64)
    assert all(r.global_context for r in effnet) and effnet[0].size == (7, 7)
    vit = meta_model("vit_tiny_cifar")
    (patches,) = receptive_fields(vit, layers=["patch_embed.proj"])
    assert (patches.size, patches.stride, patches.global_context) == ((4, 4), (4, 4), False)
    assert all(r.size == (4, 4) and r.global_context for r in receptive_fields(vit))
    assert "global context" in str(receptive_fields(vit)[0])


def test_unknown_layer_names_say_what_exists():
    with pytest.raises(ValueError, match=r"no stage or layer named 'conv9'.*Stages: \['conv1', 'conv2_x'"):
        receptive_fields(minibones.create_model("resnet20"), layers=["conv9"])


def test_effective_field_is_centred_and_inside_the_analytic_one():
    torch.manual_seed(0)
    model = minibones.create_model("resnet20")
    erf = effective_receptive_field(model, "conv3_x", input_size=32, samples=4)
    (rf,) = receptive_fields(model, 32, layers=["conv3_x"])
    assert erf.shape == (32, 32) and torch.isclose(erf.sum(), torch.tensor(1.0))
    top, left, bottom, right = rf.region(8, 8)  # the centre unit of the 16x16 map
    outside = erf.clone()
    outside[max(top, 0) : bottom + 1, max(left, 0) : right + 1] = 0
    assert outside.sum() == 0
    peak = divmod(int(erf.argmax()), 32)
    assert abs(peak[0] - 16.5) <= 4 and abs(peak[1] - 16.5) <= 4


def test_receptive_field_plot_has_the_box_and_the_effective_field():
    fig = plot_receptive_field(minibones.create_model("resnet20"), "cat", layer="conv3_x", samples=2)
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 1 and len(fig.axes[1].patches) == 1
    plt.close(fig)


def test_a_network_on_grey_images_can_be_traced():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, stride=2))
    assert [rf.size for rf in receptive_fields(net, 16, layers="all") if rf.name in ("0", "2")] == [(3, 3), (5, 5)]


def test_erf_extent_is_the_smallest_centred_square_holding_the_mass():
    point = torch.zeros(9, 9)
    point[4, 4] = 1.0
    assert erf_extent(point, 0.5) == erf_extent(point, 1.0) == 1
    plateau = torch.zeros(21, 21)
    plateau[5:16, 5:16] = 1.0  # 11 x 11 pixels of equal weight
    assert erf_extent(plateau, 1.0) == 11
    assert erf_extent(plateau, 0.5) == 9  # 7 x 7 = 49 of 121 pixels is too little, 9 x 9 = 81 enough
    shifted = torch.zeros(20, 20)
    shifted[2:5, 13:16] = 1.0  # a 3 x 3 field centred on (3, 14), off the middle: found by its centre of mass
    assert erf_extent(shifted, 1.0) == 3
    assert erf_extent(shifted, 1.0, centre=(10, 10)) > 3


def test_erf_extent_counts_only_the_part_inside_the_map():
    corner = torch.zeros(10, 10)
    corner[0, 0] = corner[0, 1] = corner[1, 0] = corner[1, 1] = 1.0
    assert erf_extent(corner, 1.0, centre=(0, 0)) == 3  # rows and columns -1 ... 1, clipped to 0 ... 1


def test_erf_extent_refuses_what_is_not_an_effective_field():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        erf_extent(torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="mass"):
        erf_extent(torch.ones(3, 3), 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        erf_extent(-torch.ones(3, 3))


def test_trained_and_random_effective_fields_side_by_side():
    torch.manual_seed(0)
    model = minibones.create_model("resnet20")
    inputs = torch.randn(2, 3, 32, 32)
    erfs = {label: {stage: effective_receptive_field(model, stage, inputs=inputs) for stage in ("conv2_x", "conv3_x")}
            for label in ("a", "b")}
    fig = plot_effective_receptive_fields(erfs)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4 and all(len(ax.patches) == 2 for ax in panels)  # the 50% and the 90% squares
    assert "50%" in panels[0].get_title()
    plt.close(fig)
