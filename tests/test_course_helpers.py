"""The regime switch and the exercise checkers the notebooks rely on."""

import re

import pytest
import torch

from minibones.course.exercises import check_parameter_count, check_receptive_field, check_stage_shape
from minibones.course.regime import choose_regime


def test_regime_defaults_to_quick_without_cuda_and_can_be_overridden(monkeypatch, capsys):
    monkeypatch.delenv("MINIBONES_REGIME", raising=False)
    regime = choose_regime(quick={"epochs": 2}, full={"epochs": 30})
    expected = "full" if torch.cuda.is_available() else "quick"
    assert regime.name == expected and regime.epochs == (30 if expected == "full" else 2)
    assert f"regime: {expected}" in capsys.readouterr().out
    monkeypatch.setenv("MINIBONES_REGIME", "full")
    assert choose_regime(quick={"epochs": 2}, full={"epochs": 30}, verbose=False).epochs == 30


def test_a_bad_regime_name_is_refused(monkeypatch):
    monkeypatch.setenv("MINIBONES_REGIME", "fast")
    with pytest.raises(ValueError, match="must be 'quick' or 'full'"):
        choose_regime()


def test_a_missing_setting_names_the_ones_there_are(monkeypatch):
    monkeypatch.setenv("MINIBONES_REGIME", "quick")
    with pytest.raises(AttributeError, match=r"no setting 'epochs'; it has \['data'\]"):
        choose_regime(quick={"data": "embedded"}, verbose=False).epochs


def test_checkers_accept_the_right_answer_and_hint_at_the_wrong_one(capsys):
    check_stage_shape((1024, 20, 30), "resnet50", "conv4_x", (320, 480))
    check_parameter_count(513_000, "resnet18", "head")
    check_receptive_field(27, [(7, 2), (3, 2), (3, 1), (3, 1)])
    assert capsys.readouterr().out.splitlines() == ["correct"] * 3
    check_stage_shape((1024, 21, 30), "resnet50", "conv4_x", (320, 480))
    check_stage_shape((512, 20, 30), "resnet50", "conv4_x", (320, 480))
    check_receptive_field(19, [(7, 2), (3, 2), (3, 1), (3, 1)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("not yet: conv4_x sits at stride 16")
    assert lines[1] == "not yet: look at the channels in model.feature_info"
    assert lines[2].startswith("not yet:")
    with pytest.raises(ValueError, match="no stage 'conv6_x'"):
        check_stage_shape((1, 1, 1), "resnet50", "conv6_x", (64, 64))


def test_receptive_field_function_checker_accepts_the_recurrence_and_refuses_a_sum_of_kernels(capsys):
    from minibones.course.exercises import check_receptive_field_function

    def recurrence(layers):
        size, jump = 1, 1
        for kernel, stride in layers:
            size, jump = size + (kernel - 1) * jump, jump * stride
        return size

    check_receptive_field_function(recurrence)
    check_receptive_field_function(lambda layers: 1 + sum(kernel - 1 for kernel, _ in layers))  # forgets the jump
    check_receptive_field_function(lambda layers: 19)  # one memorised answer
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "correct"
    assert lines[1].startswith("not yet:") and "jump" in lines[1]
    assert lines[2].startswith("not yet: a stack with no layers sees 1 pixel")


def test_measured_strides_checker_hides_feature_info(capsys):
    import torch

    from minibones.course.exercises import check_measured_strides

    def measured(model, size):
        with torch.no_grad():
            maps = model.forward_stages(torch.zeros(1, 3, size, size))
        return [size // m.shape[-2] for m in maps]

    check_measured_strides(measured, models=("resnet18", "efficientnet_lite0", "vit_b_16"))
    check_measured_strides(lambda model, size: [2, 4, 8, 16, 32], models=("vit_b_16",))  # ViT's stages share one stride
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "correct"
    assert lines[1].startswith("not yet:")


def test_measured_strides_checker_refuses_reading_feature_info():
    import pytest

    from minibones.course.exercises import check_measured_strides

    with pytest.raises(ValueError, match="feature_info is hidden"):
        check_measured_strides(lambda model, size: [info.stride for info in model.feature_info], models=("resnet18",))


def test_answers_are_read_as_what_the_question_asks_for():
    from minibones.course.exercises.answers import as_number, as_whole_number, as_whole_numbers, number_returned

    assert as_whole_number(27.0, "the field") == 27 and type(as_whole_number(27.0, "the field")) is int
    assert as_number(3, "the ratio") == 3.0 and as_whole_numbers([2, 4.0], "the strides") == (2, 4)
    for wrong in (27.5, True, "27", None, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=f"give the field as a whole number, got {re.escape(repr(wrong))}"):
            as_whole_number(wrong, "the field")
    for wrong in ("0.5", False, (0.5,)):
        with pytest.raises(ValueError, match="give the ratio as a number"):
            as_number(wrong, "the ratio")
    for wrong in ((1, 2), (1, 2, 3.5), "1, 2, 3", 3):
        with pytest.raises(ValueError, match=r"give \(C, H, W\) as a tuple of 3 whole numbers"):
            as_whole_numbers(wrong, "(C, H, W)", count=3)
    # what a learner's function returns: a one-element tensor is a number, anything else is None
    assert number_returned(torch.tensor(0.25)) == 0.25 and number_returned(torch.tensor([[5]]), whole=True) == 5
    assert [number_returned(v) for v in (torch.ones(2), "1", True, None)] == [None] * 4
    assert number_returned(5.0, whole=True) is None and number_returned(torch.tensor(5.0), whole=True) is None


def test_the_rank_correlation_checker_says_when_a_map_comes_back_instead_of_a_number():
    from minibones.course.grading import A5
    from minibones.course.same_computation import Mismatch

    with pytest.raises(Mismatch, match=r"returned a tensor of shape \(12, 10\), expected one number, 1.000000"):
        A5.check_rank_correlation(lambda a, b: a - b)  # a whole map: float() would raise a bare ValueError
