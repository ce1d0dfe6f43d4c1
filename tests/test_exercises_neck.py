"""The code exercise of notebook 10: mean IoU written by the learner, checked against the library."""

import torch

from minibones.course.exercises.neck import check_mean_iou_function


def mean_iou_by_hand(predicted, truth, num_classes):
    ious = []
    for c in range(num_classes):
        union = ((predicted == c) | (truth == c)).sum()
        if union:
            ious.append(float(((predicted == c) & (truth == c)).sum()) / float(union))
    return sum(ious) / len(ious)


def test_a_correct_mean_iou_passes(capsys):
    check_mean_iou_function(mean_iou_by_hand)
    assert capsys.readouterr().out.strip() == "correct"


def test_averaging_over_absent_classes_is_caught(capsys):
    def over_every_class(predicted, truth, num_classes):
        return sum(float(((predicted == c) & (truth == c)).sum()) / max(1, float(((predicted == c) | (truth == c)).sum()))
                   for c in range(num_classes)) / num_classes

    check_mean_iou_function(over_every_class)
    assert "appear in the prediction or the truth" in capsys.readouterr().out


def test_a_percentage_or_a_placeholder_is_refused_with_a_reason(capsys):
    check_mean_iou_function(lambda p, t, n: 100 * mean_iou_by_hand(p, t, n))
    check_mean_iou_function(lambda p, t, n: 0.0)
    check_mean_iou_function(lambda p, t, n: torch.tensor([0.5, 0.5]))
    lines = capsys.readouterr().out.splitlines()
    assert "not a percentage" in lines[0]
    assert lines[1].startswith("not yet: on a")
    assert "return one number" in lines[2]
