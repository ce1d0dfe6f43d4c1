"""The round_filters checker of notebook 05 accepts the release's rounding rule, written here
from the EfficientNet reference code's description, and names the rule a wrong answer breaks."""

import math

from minibones.course.exercises.efficientnet import check_round_filters


def said(capsys) -> str:
    return capsys.readouterr().out.strip()


def reference_round_filters(channels: int, width: float) -> int:
    """Nearest multiple of 8, at least 8, and never more than 10% below channels x width."""
    value = channels * width
    rounded = max(8, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


def test_round_filters_accepts_the_release_rule(capsys):
    check_round_filters(reference_round_filters)
    assert said(capsys) == "correct"


def test_round_filters_refuses_a_count_that_is_not_a_multiple_of_8(capsys):
    check_round_filters(lambda channels, width: round(channels * width))
    answer = said(capsys)
    assert answer.startswith("not yet:") and "multiple of 8" in answer


def test_round_filters_refuses_rounding_up(capsys):
    check_round_filters(lambda channels, width: math.ceil(channels * width / 8) * 8)
    answer = said(capsys)
    assert answer.startswith("not yet:") and "rounds up" in answer


def test_round_filters_refuses_rounding_down(capsys):
    check_round_filters(lambda channels, width: max(8, int(channels * width) // 8 * 8))
    answer = said(capsys)
    assert answer.startswith("not yet:") and ("rounds down" in answer or "10%" in answer)


def test_round_filters_refuses_the_nearest_multiple_without_the_10_percent_guard(capsys):
    check_round_filters(lambda channels, width: max(8, int(channels * width + 4) // 8 * 8))
    answer = said(capsys)
    assert answer.startswith("not yet:") and "10%" in answer


def test_round_filters_refuses_fewer_than_8_channels(capsys):
    check_round_filters(lambda channels, width: int(channels * width + 4) // 8 * 8 if channels * width > 6 else 0)
    answer = said(capsys)
    assert answer.startswith("not yet:") and "fewer than 8" in answer


def test_round_filters_refuses_a_fractional_count(capsys):
    check_round_filters(lambda channels, width: float(reference_round_filters(channels, width)))
    answer = said(capsys)
    assert answer.startswith("not yet:") and "int" in answer


def test_round_filters_refuses_what_is_not_a_function():
    import pytest

    with pytest.raises(ValueError, match="round_filters"):
        check_round_filters(32)
