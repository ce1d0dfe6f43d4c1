"""The code exercises of notebook 08: the learner's saliency map and deletion score are run and
compared with the library's; right code is accepted, and the usual mistakes are named (never
with the answer), unfinished code gets a hint instead of an error."""

import numpy as np
import pytest
import torch

import minibones
from minibones.course.exercises.attributions import check_deletion_auc, check_saliency


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return minibones.create_model("resnet20").eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def verdicts(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def gradient(model, x, target, of_probability=False):
    x = x.detach().clone().requires_grad_(True)
    output = model(x)
    score = output.softmax(1)[0, target] if of_probability else output[0, target]
    return torch.autograd.grad(score, x)[0][0]  # (3, H, W)


def saliency(model, x, target):
    return gradient(model, x, target).abs().amax(0)


def test_a_right_saliency_map_is_accepted(model, x, capsys):
    check_saliency(saliency, model, x, 3)
    assert verdicts(capsys) == ["correct"]


@pytest.mark.parametrize("wrong, hint", [
    (lambda m, x, t: gradient(m, x, t).amax(0), "absolute value"),
    (lambda m, x, t: gradient(m, x, t).abs().sum(0), "you added the three colours"),
    (lambda m, x, t: gradient(m, x, t).abs().mean(0), "you averaged the three colours"),
    (lambda m, x, t: gradient(m, x, t, of_probability=True).abs().amax(0), "softmax probability"),
    (lambda m, x, t: gradient(m, x, t).abs(), "shaped (3, 32, 32)"),
    (lambda m, x, t: torch.rand(32, 32), "the values differ"),
    (lambda m, x, t: 1.0, "return a tensor"),
])
def test_saliency_mistakes_are_named(model, x, capsys, wrong, hint):
    check_saliency(wrong, model, x, 3)
    (line,) = verdicts(capsys)
    assert line.startswith("not yet:") and hint in line


def test_saliency_that_leaves_gradients_in_the_model_is_not_accepted(model, x, capsys):
    def with_backward(model, x, target):
        x = x.clone().requires_grad_(True)
        model(x)[0, target].backward()
        return x.grad[0].abs().amax(0)

    check_saliency(with_backward, model, x, 3)
    (line,) = verdicts(capsys)
    assert line.startswith("not yet: the map is right") and "torch.autograd.grad" in line
    assert all(p.grad is None for p in model.parameters())  # the checker cleans up after it


def test_unfinished_or_crashing_code_gets_a_hint_not_an_error(model, x, capsys):
    def unfinished(model, x, target):
        raise NotImplementedError("your code here")

    def crashing(model, x, target):
        return model(x)[0, target].nonexistent

    check_saliency(unfinished, model, x, 3)
    check_saliency(crashing, model, x, 3)
    check_deletion_auc(lambda *args: (_ for _ in ()).throw(NotImplementedError()), model, x, 3)
    lines = verdicts(capsys)
    assert "not written yet" in lines[0] and "AttributeError" in lines[1] and "not written yet" in lines[2]
    with pytest.raises(ValueError, match="without brackets"):
        check_saliency(saliency(model, x, 3), model, x, 3)
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        check_deletion_auc(lambda *a: 0.0, model, x[0], 3)


def deletion_curve(model, x, ranking, target, steps, order="descending", fill=0.0):
    """Petsiuk et al.'s deletion curve, written independently of the library: the probabilities and fractions."""
    height, width = x.shape[-2:]
    flat = ranking.flatten()
    ranked = torch.argsort(flat, descending=(order == "descending"))
    fractions, probabilities = [], []
    for k in range(steps + 1):
        count = round(k * height * width / steps)
        keep = torch.ones(height * width)
        keep[ranked[:count]] = 0
        keep = keep.view(1, 1, height, width)
        image = x * keep + fill * (1 - keep)
        with torch.no_grad():
            probabilities.append(float(model(image).softmax(1)[0, target]))
        fractions.append(count / (height * width))
    return np.array(fractions), np.array(probabilities)


def deletion_auc(model, x, ranking, target, steps):
    fractions, probabilities = deletion_curve(model, x, ranking, target, steps)
    return np.trapezoid(probabilities, fractions)


def test_a_right_deletion_score_is_accepted(model, x, capsys):
    check_deletion_auc(deletion_auc, model, x, 3)
    check_deletion_auc(lambda *args: torch.tensor(deletion_auc(*args)), model, x, 3, steps=6)  # a 0-d tensor is fine
    assert verdicts(capsys) == ["correct", "correct"]


@pytest.mark.parametrize("wrong, hint", [
    (lambda m, x, r, t, s: np.trapezoid(*deletion_curve(m, x, r, t, s, order="ascending")[::-1]),
     "least important pixels first"),
    (lambda m, x, r, t, s: deletion_curve(m, x, r, t, s)[1].mean(), "you averaged the points"),
    (lambda m, x, r, t, s: np.trapezoid(deletion_curve(m, x, r, t, s)[1]), "not the step number"),
    (lambda m, x, r, t, s: np.trapezoid(*deletion_curve(m, x, r, t, s, fill=-3.0)[::-1]), "the area differs"),
    (lambda m, x, r, t, s: "0.5", "return one number"),
])
def test_deletion_mistakes_are_named(model, x, capsys, wrong, hint):
    check_deletion_auc(wrong, model, x, 3)
    (line,) = verdicts(capsys)
    assert line.startswith("not yet:") and hint in line
