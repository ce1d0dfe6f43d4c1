"""The checkers of notebook 11 accept the right answer, reject wrong ones with a useful hint, and refuse malformed input."""

import pytest
import torch

from minibones.course.exercises.detection import check_centerness_function, check_iou, check_level_function, check_num_locations


def said(capsys) -> str:
    return capsys.readouterr().out.strip()


def test_centerness_function(capsys):
    def centerness(l, t, r, b):
        return torch.sqrt(torch.minimum(l, r) / torch.maximum(l, r) * torch.minimum(t, b) / torch.maximum(t, b))

    check_centerness_function(centerness)
    assert said(capsys) == "correct"
    check_centerness_function(lambda l, t, r, b: centerness(l, t, r, b) ** 2)
    assert "square root" in said(capsys)
    check_centerness_function(lambda l, t, r, b: torch.ones_like(l))
    assert said(capsys).startswith("not yet:")
    check_centerness_function(lambda l, t, r, b: 1.0)
    assert "shape" in said(capsys)
    check_centerness_function(lambda ltrb: ltrb)
    assert "raised TypeError" in said(capsys)
    with pytest.raises(ValueError, match="function itself"):
        check_centerness_function(0.5)


def test_level_function(capsys):
    def level_for(reach, strides):
        for level, stride in enumerate(strides[:-1]):
            if reach < 8 * stride:
                return level
        return len(strides) - 1

    check_level_function(level_for)
    assert said(capsys) == "correct"
    check_level_function(lambda reach, strides: 0)
    assert "goes to level" in said(capsys)
    check_level_function(lambda reach, strides: min(int(reach // 64), len(strides) - 1))  # the paper's table, for P3 only
    assert said(capsys).startswith("not yet:")
    with pytest.raises(ValueError):
        check_level_function("level")


def test_num_locations(capsys):
    # efficientnet_lite0 at 64 px: levels at strides 4, 8, 16, 32 -> 16^2 + 8^2 + 4^2 + 2^2
    check_num_locations(256 + 64 + 16 + 4, backbone="efficientnet_lite0", image_size=64)
    assert said(capsys) == "correct"
    check_num_locations(256, backbone="efficientnet_lite0", image_size=64)
    assert "finest level" in said(capsys)
    check_num_locations(100, backbone="efficientnet_lite0", image_size=64)
    assert said(capsys).startswith("not yet:")
    with pytest.raises(ValueError):
        check_num_locations("340")


def test_iou(capsys):
    # overlap 10 x 20 = 200; areas 400 and 400 -> 200 / 600
    check_iou(1 / 3, (0, 0, 20, 20), (10, 0, 30, 20))
    assert said(capsys) == "correct"
    check_iou(100 / 3, (0, 0, 20, 20), (10, 0, 30, 20))
    assert "fraction" in said(capsys)
    check_iou(0.5, (0, 0, 20, 20), (10, 0, 30, 20))  # intersection over one area, not the union
    assert said(capsys).startswith("not yet:")
    with pytest.raises(ValueError, match="x0 < x1"):
        check_iou(0.2, (20, 0, 0, 20), (10, 0, 30, 20))
