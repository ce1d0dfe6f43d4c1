"""Submissions that try to get points they should not, and the score each must get.

For every assignment, besides the instructor's solution and the untouched student version:

* ``copies``: every block copies the library in some way (is it, subclasses it, wraps it,
  delegates to it, calls captum or scipy), and every test cell is tagged ``skip-execution``
  (with nbgrader's defaults such a cell never runs and scores full marks). Every test must
  score zero, and say that the code is not the student's own.
* ``partial``: the first part is right but noisy (a warning, a print to stderr, logging, a
  write to file descriptor 2), one of its test cells is deleted, a later part has one
  mistake, and the notebook rebinds every checker name to a function that does nothing.
  Exactly the tests listed in ``PARTIAL_FAILS`` must fail; it is submitted a day and an hour
  late.

Each notebook is the instructor's source notebook with some cells replaced (by grade_id).
"""

from __future__ import annotations

import copy
import textwrap

from minibones.course.classroom import Submission, source_notebook

DUEDATE = "2030-01-15 17:00:00 UTC"
ON_TIME = "2030-01-15 16:59:00.000000 UTC"
LATE = "2030-01-16 18:00:00.000000 UTC"  # 25 hours late: two started days, 20% with the course's policy

# a cell that rebinds every checker a test cell calls: the test cells import them again
FAKE_CHECKERS = """
import types

class _AlwaysPasses:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None

A1 = A2 = A3 = A4 = A5 = _AlwaysPasses()
check_module = check_savings = check_attention_weights = lambda *args, **kwargs: None
"""

# what a correct block may print while it works: none of it may cost a point
NOISE = """
import logging, os, sys, warnings

def noise():
    warnings.warn("a warning from the student's code")
    print("a line on stderr", file=sys.stderr)
    logging.getLogger("student").warning("a logged warning")
    os.write(2, b"written to file descriptor 2\\n")
"""

COPIES = {
    "A1_residual_blocks": {
        "basic_block": """
            from minibones.models import resnet as library
            BasicBlock = library.BasicBlock  # is the library's class
        """,
        "bottleneck": """
            class Bottleneck(nn.Module):  # delegates to the library's functions
                expansion = 4

                def __init__(self, in_channels, channels, stride=1):
                    nn.Module.__init__(self)
                    library.Bottleneck.__init__(self, in_channels, channels, stride)

                def forward(self, x):
                    return library.Bottleneck.forward(self, x)
        """,
    },
    "A2_separable_convolutions": {
        "separable_conv": """
            from minibones.models import xception as library

            class SeparableConv(library.SeparableConv):  # subclasses the library's
                pass
        """,
        "middle_flow_block": """
            class MiddleFlowBlock(nn.Module):  # wraps the library's block, found through a default argument
                def __init__(self, channels, make=library.XceptionBlock):
                    super().__init__()
                    self.block = make(channels, channels, reps=3)

                def forward(self, x):
                    return self.block(x)
        """,
    },
    "A3_mbconv": {
        "squeeze_excite": """
            from torch import nn
            from minibones.layers import SqueezeExcite as _LibrarySE

            def SqueezeExcite(channels, squeeze_channels):  # builds the library's block
                return _LibrarySE(channels, squeeze_channels, act=nn.SiLU, gate=nn.Sigmoid)
        """,
        "mbconv": """
            from minibones.models.efficientnet import MBConv as _LibraryMBConv

            class MBConv(_LibraryMBConv):  # subclasses the library's
                pass
        """,
    },
    "A4_vit_attention": {
        "patch_embed": """
            from minibones.models import vit as library

            class PatchEmbed(nn.Module):  # wraps the library's
                def __init__(self, patch_size, dim):
                    super().__init__()
                    self.inner = library.PatchEmbed(patch_size, dim)

                def forward(self, x):
                    return self.inner(x)
        """,
        "attention": """
            class MultiHeadSelfAttention(library.MultiHeadSelfAttention):  # subclasses the library's
                def attention(self, z):
                    return self.forward_attention(z)[1]
        """,
        "encoder_block": """
            EncoderBlock = lambda dim, heads, mlp_dim: library.EncoderBlock(dim, heads, mlp_dim)  # builds the library's
        """,
    },
    "A5_grad_cam": {
        "grad_cam": """
            from captum.attr import LayerAttribution, LayerGradCam

            def grad_cam(model, x, target, layer):  # captum's Grad-CAM
                cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
                return LayerAttribution.interpolate(cam, x.shape[2:], interpolate_mode="bilinear").detach()
        """,
        "rank_correlation": """
            from scipy.stats import spearmanr

            def rank_correlation(a, b):  # scipy's
                return float(spearmanr(a.flatten().numpy(), b.flatten().numpy())[0])
        """,
    },
}

# tests of the copies notebooks that fail for another reason than copying (the part is left blank)
COPIES_BLANK = {"A2_separable_convolutions": {"test_savings", "test_savings_hidden"}}

# the partial submissions: a noisy right first part, one of its test cells deleted, one mistake later
PARTIAL = {
    "A1_residual_blocks": {
        "noisy": "basic_block",
        "deleted": "test_basic_identity_output",
        "wrong": {"bottleneck": ("self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)",
                                 "self.conv1 = nn.Conv2d(in_channels, channels, 1, stride, bias=False)  # v1",
                                 "self.conv2 = nn.Conv2d(channels, channels, 3, stride, padding=1, bias=False)",
                                 "self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1, bias=False)")},
        "fails": {"test_bottleneck_downsample_output", "test_bottleneck_gradients", "test_bottleneck_hidden"},
    },
    "A2_separable_convolutions": {
        "noisy": "separable_conv",
        "deleted": "test_separable_output",
        "wrong": {"middle_flow_block": ("return self.residual(x) + self.shortcut(x)",
                                        "return self.residual(x)  # the shortcut is forgotten")},
        "fails": {"test_middle_flow_output", "test_middle_flow_gradients", "test_middle_flow_hidden"},
    },
    "A3_mbconv": {
        "noisy": "squeeze_excite",
        "deleted": "test_se_output",
        "wrong": {"mbconv": ("return out + x if self.use_residual else out", "return out  # no residual connection")},
        "fails": {"test_mbconv_residual_output", "test_mbconv_gradients", "test_mbconv_hidden"},
    },
    "A4_vit_attention": {
        "noisy": "patch_embed",
        "deleted": "test_patch_embed_output",
        "wrong": {"attention": ("q @ k.transpose(-2, -1) / self.head_dim**0.5", "q @ k.transpose(-2, -1)")},
        "fails": {"test_attention_output", "test_attention_gradients", "test_attention_weights",
                  "test_attention_hidden"},
    },
    "A5_grad_cam": {
        "noisy": "grad_cam",
        "deleted": "test_other_layer",
        "wrong": {"rank_correlation": ("return means[groups]", "return ranked  # ties get different ranks")},
        "fails": {"test_rank_correlation", "test_rank_correlation_hidden"},
    },
}


def _cells(notebook: dict) -> dict[str, dict]:
    return {cell["metadata"].get("nbgrader", {}).get("grade_id", cell.get("id")): cell for cell in notebook["cells"]}


def _source(text: str) -> list[str]:
    return textwrap.dedent(text).strip("\n").splitlines(keepends=True)


def _text(cell: dict) -> str:
    return "".join(cell["source"])


def test_cells(notebook: dict) -> list[str]:
    """The autograded test cells (grade cells the student does not write)."""
    return [gid for gid, cell in _cells(notebook).items()
            if cell["metadata"].get("nbgrader", {}).get("grade") and not cell["metadata"]["nbgrader"].get("solution")]


def copies(name: str) -> dict:
    notebook = copy.deepcopy(source_notebook(name))
    cells = _cells(notebook)
    for grade_id, code in COPIES[name].items():
        cells[grade_id]["source"] = _source(code)
    if name == "A2_separable_convolutions":  # nothing of the library's to copy here: left blank
        cells["savings"]["source"] = _source("def separable_savings(channels):\n    raise NotImplementedError()")
    for grade_id in test_cells(notebook):
        cells[grade_id]["metadata"]["tags"] = ["skip-execution"]
    return notebook


def partial(name: str) -> dict:
    spec = PARTIAL[name]
    notebook = copy.deepcopy(source_notebook(name))
    cells = _cells(notebook)
    noisy = cells[spec["noisy"]]
    text = _text(noisy)
    # the noise runs in every method of the right part: __init__ and forward (or the function)
    if "class " in text:
        text = text.replace("### BEGIN SOLUTION\n", "### BEGIN SOLUTION\n        noise()\n", 2)
    else:
        text = text.replace("### BEGIN SOLUTION\n", "### BEGIN SOLUTION\n    noise()\n", 1)
    noisy["source"] = _source(FAKE_CHECKERS + NOISE) + ["\n", "\n"] + text.splitlines(keepends=True)
    for grade_id, replacements in spec["wrong"].items():
        text = _text(cells[grade_id])
        for old, new in zip(replacements[::2], replacements[1::2]):
            assert old in text, f"{name}: {old!r} is not in {grade_id} any more"
            text = text.replace(old, new)
        cells[grade_id]["source"] = text.splitlines(keepends=True)
    notebook["cells"] = [cell for cell in notebook["cells"]
                         if cell["metadata"].get("nbgrader", {}).get("grade_id") != spec["deleted"]]
    return notebook


def all_submissions(names: list[str]) -> list[Submission]:
    submissions = []
    for name in names:
        submissions += [
            Submission("solution", name, source_notebook(name), ON_TIME),
            Submission("blank", name, "release"),
            Submission("copies", name, copies(name)),
            Submission("partial", name, partial(name), LATE),
        ]
    return submissions
