"""The exercise checkers of notebooks 07 (hierarchical features) and 08 (attributions): right
answers are accepted, wrong ones get a hint (never the answer), malformed input is refused.

The right answers are worked out here independently of the checkers: receptive fields by
walking the layers with the recurrence of Araujo et al. (2019), occlusion by counting window
positions, Grad-CAM grids by dividing by the stride, Integrated Gradients by captum itself."""

import math

import pytest
import torch

import minibones
from minibones.course.exercises.attributions import (
    check_gradcam_grid, check_integrated_gradients_total, check_occlusion_evaluations, check_refused_methods,
)
from minibones.course.exercises.features import (
    check_dilated_receptive_field, check_erf_extent, check_receptive_patch, check_stage_receptive_field,
    check_unit_region,
)


def verdicts(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def walk(layers):
    """Receptive field, jump and effective padding of (kernel, stride, padding, dilation) layers, by hand."""
    size, jump, padding = 1, 1, 0
    for kernel, stride, pad, dilation in layers:
        size += dilation * (kernel - 1) * jump
        padding += pad * jump
        jump *= stride
    return size, jump, padding


# resnet18 up to the end of conv3_x: stem 7x7/2, max pool 3x3/2, conv2_x 4 convs, conv3_x 4 convs (stride on the first)
RESNET18_CONV3 = [(7, 2, 3, 1), (3, 2, 1, 1)] + [(3, 1, 1, 1)] * 4 + [(3, 2, 1, 1)] + [(3, 1, 1, 1)] * 3
# resnet34 up to the end of conv3_x: conv2_x has 3 blocks (6 convs), conv3_x 4 blocks (8 convs)
RESNET34_CONV3 = [(7, 2, 3, 1), (3, 2, 1, 1)] + [(3, 1, 1, 1)] * 6 + [(3, 2, 1, 1)] + [(3, 1, 1, 1)] * 7


# --- notebook 07 ------------------------------------------------------------------------


def test_unit_region_is_i_times_stride_minus_padding_plus_the_size(capsys):
    size, stride, padding = walk(RESNET18_CONV3)
    assert (size, stride) == (99, 8)
    top, left = 2 * stride - padding, 3 * stride - padding
    right_answer = (top, left, top + size - 1, left + size - 1)
    check_unit_region(right_answer, model="resnet18", stage="conv3_x", unit=(2, 3))
    check_unit_region((0, 0, 0, 0), model="resnet18", stage="conv3_x", unit=(2, 3))
    wrong_place = (0, 0, size - 1, size - 1)  # the right size
    check_unit_region(wrong_place, model="resnet18", stage="conv3_x", unit=(2, 3))
    lines = verdicts(capsys)
    assert lines[0] == "correct"
    assert lines[1].startswith("not yet: the box must be") and "99" not in lines[1]
    assert lines[2].startswith("not yet: the size is right") and str(top) not in lines[2]


def test_unit_region_refuses_malformed_answers_and_unknown_stages():
    with pytest.raises(ValueError, match="tuple of 4 whole numbers"):
        check_unit_region((1, 2, 3))
    with pytest.raises(ValueError, match=r"whole numbers, got \(1.5"):
        check_unit_region((1.5, 2, 3, 4))
    with pytest.raises(ValueError, match="no stage 'conv9_x'"):
        check_unit_region((0, 0, 0, 0), model="resnet18", stage="conv9_x")


def test_dilated_convolutions_span_d_times_k_minus_1_plus_1(capsys):
    layers = [(3, 1, 1), (3, 1, 2), (3, 1, 4)]
    size, _, _ = walk([(k, s, 0, d) for k, s, d in layers])
    assert size == 15
    check_dilated_receptive_field(size, layers=layers)
    check_dilated_receptive_field(7, layers=layers)  # dilation ignored
    check_dilated_receptive_field(walk([(5, 2, 0, 2), (3, 1, 0, 3)])[0], layers=[(5, 2, 2), (3, 1, 3)])
    lines = verdicts(capsys)
    assert lines[0] == "correct" and lines[2] == "correct"
    assert lines[1].startswith("not yet: a kernel of size k with dilation d") and "15" not in lines[1]


def test_dilated_field_refuses_malformed_layers():
    with pytest.raises(ValueError, match="kernel, stride, dilation"):
        check_dilated_receptive_field(3, layers=[(3, 1)])
    with pytest.raises(ValueError, match="positive"):
        check_dilated_receptive_field(3, layers=[(3, 0, 1)])
    with pytest.raises(ValueError, match="as a whole number"):
        check_dilated_receptive_field("15", layers=[(3, 1, 1)])


def test_stage_receptive_field_of_resnet34_conv3_x_is_179(capsys):
    size, _, _ = walk(RESNET34_CONV3)
    assert size == 179
    check_stage_receptive_field(size, model="resnet34", stage="conv3_x")
    check_stage_receptive_field(walk(RESNET18_CONV3)[0], model="resnet18", stage="conv3_x")
    check_stage_receptive_field(size - 8, model="resnet34", stage="conv3_x")
    check_stage_receptive_field(size + 16, model="resnet34", stage="conv3_x")
    lines = verdicts(capsys)
    assert lines[:2] == ["correct", "correct"]
    assert lines[2].startswith("not yet: too small") and "179" not in lines[2]
    assert lines[3].startswith("not yet: too large")
    with pytest.raises(ValueError, match="its stages are"):
        check_stage_receptive_field(1, model="resnet34", stage="layer3")


def patch_by_hand(picture, field, i, j):
    """The solution of notebook 07's exercise 1, written from size, stride and padding alone."""
    (size_h, size_w), (stride_h, stride_w), (pad_h, pad_w) = field.size, field.stride, field.padding
    top, left = i * stride_h - pad_h, j * stride_w - pad_w
    height, width = picture.shape[-2:]
    return picture[:, max(top, 0) : min(top + size_h, height), max(left, 0) : min(left + size_w, width)]


def test_receptive_patch_checker_accepts_a_crop_written_by_hand(capsys):
    check_receptive_patch(patch_by_hand)
    assert verdicts(capsys) == ["correct"]


def test_receptive_patch_checker_names_the_mistake(capsys):
    def unclipped(picture, field, i, j):  # pads instead of clipping: the full field at the border
        pad = max(field.size)
        padded = torch.nn.functional.pad(picture, (pad, pad, pad, pad))
        top, left = i * field.stride[0] - field.padding[0] + pad, j * field.stride[1] - field.padding[1] + pad
        return padded[:, top : top + field.size[0], left : left + field.size[1]]

    def one_short(picture, field, i, j):  # treats the bottom row as exclusive
        return patch_by_hand(picture, field, i, j)[:, :-1, :-1]

    check_receptive_patch(lambda picture, field, i, j: picture)
    check_receptive_patch(unclipped)
    check_receptive_patch(one_short)
    check_receptive_patch(lambda picture, field, i, j: [])
    check_receptive_patch(lambda picture, field, i, j: patch_by_hand(picture.roll(1, dims=1), field, i, j))  # a row off
    lines = verdicts(capsys)
    assert lines[0].startswith("not yet: for unit") and "i x stride - padding" in lines[0]
    assert "reaches past the border" in lines[1]
    assert "one pixel off" in lines[2]
    assert "return a tensor" in lines[3]
    assert "the size is right but the pixels come from the wrong place" in lines[4]
    with pytest.raises(ValueError, match="pass your function itself"):
        check_receptive_patch((0, 0, 0, 0))


def erf_square_by_hand(erf, mass, centre):
    """The solution of notebook 07's exercise 2: grow the square one pixel on each side at a time."""
    row, col = centre
    half = 0
    while erf[max(row - half, 0) : row + half + 1, max(col - half, 0) : col + half + 1].sum() < mass - 1e-9:
        half += 1
    return 2 * half + 1


def test_erf_square_checker_accepts_a_square_grown_by_hand(capsys):
    check_erf_extent(erf_square_by_hand)
    assert verdicts(capsys) == ["correct"]


def test_erf_square_checker_names_the_mistake(capsys):
    check_erf_extent(lambda erf, mass, centre: erf_square_by_hand(erf, mass, centre) + 1)  # even sides
    check_erf_extent(lambda erf, mass, centre: erf_square_by_hand(erf, mass, centre) + 2)
    check_erf_extent(lambda erf, mass, centre: max(1, erf_square_by_hand(erf, mass, centre) - 2))
    check_erf_extent(lambda erf, mass, centre: 3.0)
    lines = verdicts(capsys)
    assert "even side" in lines[0]
    assert "too large" in lines[1]
    assert "too small" in lines[2]
    assert "whole number" in lines[3]
    with pytest.raises(ValueError, match="pass your function itself"):
        check_erf_extent(5)


# --- notebook 08 ------------------------------------------------------------------------


def test_guided_methods_are_refused_on_mobilenet_v3_and_nothing_on_resnet(capsys):
    guided = {"guided_backprop", "guided_gradcam"}
    check_refused_methods(guided, model="mobilenet_v3_small")
    check_refused_methods([], model="resnet18")
    check_refused_methods(set(), model="mobilenet_v3_small")
    check_refused_methods(guided | {"saliency"}, model="mobilenet_v3_small")
    lines = verdicts(capsys)
    assert lines[:2] == ["correct", "correct"]
    assert lines[2].startswith("not yet: some are missing") and "guided" not in lines[2]
    assert lines[3].startswith("not yet: too many")


def test_refused_methods_wants_known_method_names():
    with pytest.raises(ValueError, match="unknown method"):
        check_refused_methods({"gradients"})
    with pytest.raises(ValueError, match="set of method names"):
        check_refused_methods("guided_backprop")


def test_occlusion_evaluates_one_image_per_window_position(capsys):
    for size, window in [(32, 4), (32, 8), (30, 4)]:
        positions = math.ceil((size - window) / window) + 1  # captum moves the last window back inside
        check_occlusion_evaluations(positions**2, image_size=size, window=window)
    check_occlusion_evaluations(64 + 1, image_size=32, window=4)  # the unoccluded image counted
    lines = verdicts(capsys)
    assert lines[:3] == ["correct"] * 3
    assert lines[3].startswith("not yet: count the window positions") and "64" not in lines[3]
    with pytest.raises(ValueError, match="window"):
        check_occlusion_evaluations(1, image_size=8, window=16)


def test_gradcam_grid_is_the_image_divided_by_the_stride(capsys):
    stride = {info.name: info.stride for info in minibones.create_model("resnet50").feature_info}["conv4_x"]
    check_gradcam_grid((224 // stride, 224 // stride), model="resnet50", stage="conv4_x", image_size=224)
    check_gradcam_grid((7, 7), model="resnet50", stage="conv4_x", image_size=224)
    lines = verdicts(capsys)
    assert lines[0] == "correct"
    assert lines[1].startswith("not yet: Grad-CAM weighs the channels") and "14" not in lines[1]
    with pytest.raises(ValueError, match="its stages are"):
        check_gradcam_grid((14, 14), model="resnet50", stage="layer3")
    with pytest.raises(ValueError, match="tuple of 2 whole numbers"):
        check_gradcam_grid(14)


def test_integrated_gradients_add_up_to_the_score_difference(capsys):
    from captum.attr import IntegratedGradients

    torch.manual_seed(0)
    model = minibones.create_model("resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    attributions = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=3, n_steps=200)
    total = float(attributions.sum())
    check_integrated_gradients_total(total, model, x, target=3)
    check_integrated_gradients_total(0.0, model, x, target=3)
    lines = verdicts(capsys)
    assert lines[0] == "correct"
    assert lines[1].startswith("not yet: Integrated Gradients are complete")
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        check_integrated_gradients_total(0.0, model, x[0], target=3)
    with pytest.raises(ValueError, match="as a number"):
        check_integrated_gradients_total("1.0", model, x, target=3)

