"""The cost checker of notebook 06 (ViT) accepts a right cost function, written here from the
paper's equations, and refuses the usual wrong ones with a message that says what is wrong."""

import pytest

from minibones.course.exercises.vit import COST_CASES, check_vit_cost, measured_encoder_cost


def said(capsys) -> str:
    return capsys.readouterr().out.strip()


def vit_cost(image_size, patch_size, dim, depth, heads, mlp_dim):
    """Equations 2, 3 and 5 to 8, per token and block: qkv 3 D^2, proj D^2, MLP 2 D M; q k^T and A v T D each."""
    tokens = (image_size // patch_size) ** 2 + 1
    linear = depth * tokens * (4 * dim * dim + 2 * dim * mlp_dim)
    attention = depth * 2 * tokens * tokens * dim
    return tokens, linear, attention


def test_measured_cost_of_vit_b_16_is_torchvisions_17_6_gmacs_minus_embedding_and_head():
    tokens, linear, attention = measured_encoder_cost(224, 16, 768, 12, 12, 3072)
    assert tokens == 197
    assert attention == 12 * 2 * 197**2 * 768
    patch_embed, head = 196 * 768 * 768, 768 * 1000
    assert abs((linear + attention + patch_embed + head) / 1e9 - 17.56) < 0.01  # torchvision's published GFLOPS


def test_cost_checker_accepts_the_equations(capsys):
    check_vit_cost(vit_cost)
    assert said(capsys) == "correct"


def test_cost_checker_accepts_a_list_and_floats(capsys):
    check_vit_cost(lambda *case: [float(n) for n in vit_cost(*case)])
    assert said(capsys) == "correct"


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, p, d, L, h, m: ((s // p) ** 2, *vit_cost(s, p, d, L, h, m)[1:]), "class token is missing"),
    (lambda s, p, d, L, h, m: (vit_cost(s, p, d, L, h, m)[0], 2 * vit_cost(s, p, d, L, h, m)[1],
                               vit_cost(s, p, d, L, h, m)[2]), "not FLOPs"),
    (lambda s, p, d, L, h, m: (vit_cost(s, p, d, L, h, m)[0], L * ((s // p) ** 2 + 1) * 4 * d * d,
                               vit_cost(s, p, d, L, h, m)[2]), "MLP's fc1 and fc2"),
    (lambda s, p, d, L, h, m: (*vit_cost(s, p, d, L, h, m)[:2], vit_cost(s, p, d, L, h, m)[2] // h), "one head"),
    (lambda s, p, d, L, h, m: (*vit_cost(s, p, d, L, h, m)[:2], vit_cost(s, p, d, L, h, m)[2] // 2),
     "A v costs as much again"),
    (lambda s, p, d, L, h, m: (*vit_cost(s, p, d, L, h, m)[:2], vit_cost(s, p, d, L, h, m)[2] // L),
     "one block's"),
    (lambda s, p, d, L, h, m: vit_cost(s, p, d, L, h, m)[0], "three numbers"),
    (lambda s, p, d, L, h, m: 1 / 0, "ZeroDivisionError"),
])
def test_cost_checker_names_the_mistake(capsys, wrong, hint):
    check_vit_cost(wrong)
    out = said(capsys)
    assert out.startswith("not yet:") and hint in out, out


def test_cost_checker_names_the_configuration_it_failed_on(capsys):
    check_vit_cost(lambda s, p, d, L, h, m: vit_cost(s, p, d, L, h, m) if s != 384 else (0, 0, 0))
    assert "image_size=384" in said(capsys)


def test_cost_checker_tries_several_sizes_and_depths():
    assert len({case[0] for case in COST_CASES}) >= 3 and len({case[3] for case in COST_CASES}) >= 3


def test_cost_checker_wants_the_function_itself():
    with pytest.raises(ValueError, match="pass your function itself"):
        check_vit_cost(vit_cost(224, 16, 768, 12, 12, 3072))
