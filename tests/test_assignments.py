"""The classroom assignments grade honestly under nbgrader, and the grading messages help.

The round trip is what an instructor relies on. All submissions of every assignment are
autograded by nbgrader 0.9 in one process (``classroom.grade``), then read back from the
gradebook, the graded notebooks and the feedback files:

* the instructor solution scores full marks on the autograded tests, the untouched student
  version zero, and the grader does not crash on it;
* a submission that copies the library (is, subclasses, wraps or delegates to it), with its
  test cells tagged ``skip-execution``, scores zero on every test, each saying why;
* a submission whose first part is right but prints to stderr, whose test cell for that part
  was deleted, whose later part has one mistake, and which rebinds every checker name, scores
  exactly the tests that its code passes, and is penalised for being late;
* the feedback holds no hidden test and no mark scheme; the experiment of the open task keeps
  the student's outputs and is not run again.
"""

import html
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import assignment_submissions as submissions
from minibones.course import classroom
from minibones.course.grading import A1, A4
from minibones.course.own_work import NotOwnWork
from minibones.course.same_computation import Mismatch, check_same_parameters, compare_outputs, copy_weights
from minibones.models import resnet
from minibones.models.resnet import BasicBlock, ProjectionShortcut

ASSIGNMENTS = classroom.assignments()
POINTS = {"autograded": 15, "written": 10, "open task": 5}


def test_there_are_assignments_to_hand_out():
    assert ASSIGNMENTS, "no source notebooks in notebooks/assignments/source"


def test_the_course_folders_are_the_ones_its_nbgrader_config_names(tmp_path):
    name, course_dir = ASSIGNMENTS[0], tmp_path / "course"
    shutil.copytree(classroom.folder(classroom.course(), "source", name), course_dir / "masters" / name)
    config = (classroom.COURSE_DIR / "nbgrader_config.py").read_text()
    (course_dir / "nbgrader_config.py").write_text(
        config + '\nc.CourseDirectory.source_directory = "masters"\nc.CourseDirectory.release_directory = "handed_out"\n')
    assert classroom.assignments(course_dir) == [name]
    assert classroom.source_notebook(name, course_dir) == classroom.source_notebook(name)
    assert classroom.release(course_dir) == [course_dir / "handed_out" / name]
    assert (course_dir / "handed_out" / name / f"{name}.ipynb").is_file()


@pytest.fixture(scope="module")
def graded():
    start, cpu = time.perf_counter(), _cpu_seconds()
    result = classroom.grade(submissions.all_submissions(ASSIGNMENTS), duedate=submissions.DUEDATE)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    print(f"\nnbgrader round trip: {len(result)} submissions in {seconds:.0f} s "
          f"({cpu:.0f} s of CPU, this process and the notebooks' kernels)")
    return result


def _cpu_seconds() -> float:
    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in used)


def cells_of(name: str) -> dict[str, dict]:
    return {c["metadata"]["nbgrader"]["grade_id"]: c for c in classroom.source_notebook(name)["cells"]
            if "nbgrader" in c["metadata"]}


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_points_are_15_autograded_10_written_5_open(name):
    graded_cells = [c for c in cells_of(name).values() if c["metadata"]["nbgrader"].get("grade")]
    auto = sum(c["metadata"]["nbgrader"]["points"] for c in graded_cells if not c["metadata"]["nbgrader"]["solution"])
    open_task = sum(c["metadata"]["nbgrader"]["points"] for gid, c in cells_of(name).items()
                    if gid in ("experiment", "interpretation"))
    written = sum(c["metadata"]["nbgrader"]["points"] for c in graded_cells) - auto - open_task
    assert (auto, written, open_task) == tuple(POINTS.values())


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solution_scores_full_marks(graded, name):
    solution = graded["solution", name]
    assert solution.auto_score == (15, 15), f"the solution of {name} failed: {solution.errors()}"
    assert solution.late_penalty == 0


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_untouched_release_scores_zero(graded, name):
    blank = graded["blank", name]
    assert blank.autograded is not None, "nbgrader could not grade the untouched student version"
    assert blank.auto_score == (0, 15)


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_copying_the_library_scores_zero_and_says_why(graded, name):
    copied = graded["copies", name]
    assert copied.auto_score == (0, 15), f"{name}: points for copying the library: {copied.cells}"
    errors = copied.errors()
    for grade_id in set(copied.auto_cells) - submissions.COPIES_BLANK.get(name, set()):
        assert grade_id in errors, f"{name}: {grade_id} did not run (a skip-execution tag was obeyed?)"
        assert errors[grade_id].startswith("NotOwnWork") and "write this yourself" in errors[grade_id], errors[grade_id]


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_one_mistake_costs_its_tests_only_whatever_the_notebook_rebinds(graded, name):
    partial, expected = graded["partial", name], submissions.PARTIAL[name]["fails"]
    failed = {gid for gid in partial.auto_cells if partial.cells[gid][0] == 0}
    assert failed == expected, f"{name}: expected {sorted(expected)} to fail, got {sorted(failed)}: {partial.errors()}"
    for grade_id in expected:
        assert partial.errors()[grade_id].startswith("Mismatch"), partial.errors()[grade_id]


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_stderr_output_costs_nothing_and_is_shown_on_stdout(graded, name):
    partial = graded["partial", name]
    noisy_cells = [c for c in partial.autograded["cells"] if c.get("outputs")
                   and any("a line on stderr" in "".join(o.get("text", "")) for o in c["outputs"])]
    assert noisy_cells, "the noisy part printed nothing"
    for cell in noisy_cells:
        assert not any(o.get("name") == "stderr" for o in cell["outputs"]), "stderr left in a graded cell"
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in partial.auto_cells:
            assert partial.cells[grade_id][0] == partial.cells[grade_id][1]


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_a_deleted_test_cell_is_put_back_with_its_points(graded, name):
    partial, deleted = graded["partial", name], submissions.PARTIAL[name]["deleted"]
    score, points = partial.cells[deleted]
    assert points > 0 and score == points


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_late_work_loses_ten_percent_per_started_day(graded, name):
    partial = graded["partial", name]
    assert partial.late_penalty == pytest.approx(0.2 * partial.auto_score[0])


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_grader_sees_the_mark_scheme_above_each_answer(graded, name):
    shown = "".join("".join(c["source"]) for c in graded["blank", name].autograded["cells"])
    assert shown.count("### BEGIN MARK SCHEME") == 3


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_experiment_keeps_its_outputs_and_is_not_run_again(graded, name):
    submitted = cells_of(name)["experiment"]
    graded_cell = next(c for c in graded["solution", name].autograded["cells"]
                       if c["metadata"].get("nbgrader", {}).get("grade_id") == "experiment")
    assert submitted["outputs"] and graded_cell["outputs"] == submitted["outputs"]


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_feedback_has_no_hidden_test_and_no_mark_scheme(graded, name):
    hidden_code = [line.strip() for cell in cells_of(name).values()
                   for region in "".join(cell["source"]).split("### BEGIN HIDDEN TESTS")[1:]
                   for line in region.split("### END HIDDEN TESTS")[0].splitlines()
                   if line.strip() and "import" not in line]
    assert hidden_code
    for student in ("solution", "blank", "copies", "partial"):
        feedback = graded[student, name].feedback
        assert feedback, f"no feedback for {student}"
        text = html.unescape(re.sub(r"<[^>]+>", "", feedback))
        assert "HIDDEN TESTS" not in text and "MARK SCHEME" not in text
        leaked = [line for line in hidden_code if line in text]
        assert not leaked, f"{student}'s feedback shows hidden test code: {leaked[:2]}"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_student_version_has_no_solution_hidden_test_or_mark_scheme(graded, name):
    release = json.dumps(graded["blank", name].release)
    for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "BEGIN MARK SCHEME"):
        assert marker not in release
    assert "YOUR CODE HERE" in release and "YOUR ANSWER HERE" in release
    assert all(not cell.get("outputs") for cell in graded["blank", name].release["cells"])  # not even the experiment's


# --- the checkers' messages, without nbgrader ---------------------------------------------


class BlockWithBias(BasicBlock):
    def __init__(self, *args):
        super().__init__(*args)
        self.conv1 = nn.Conv2d(64, 64, 3, 1, 1, bias=True)


class BlockWithWrongStride(BasicBlock):
    def __init__(self, in_channels, channels, stride):
        super().__init__(in_channels, channels, 1)
        self.shortcut = ProjectionShortcut(in_channels, channels, 1)


class BlockWithoutFinalReLU(BasicBlock):
    def forward(self, x):
        return self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x)


def test_an_extra_bias_is_named():
    with pytest.raises(Mismatch, match="conv1 has a bias it should not have"):
        check_same_parameters(BlockWithBias(64, 64), BasicBlock(64, 64))


@torch.no_grad()
def test_a_wrong_stride_is_pointed_at():
    student, reference = BlockWithWrongStride(64, 128, 2), BasicBlock(64, 128, 2)
    copy_weights(student, reference)
    student.eval(), reference.eval()
    x = torch.randn(1, 64, 8, 8)
    with pytest.raises(Mismatch, match=r"returned shape \(1, 128, 8, 8\), expected \(1, 128, 4, 4\).*check the strides"):
        compare_outputs(student(x), reference(x), x, "BasicBlock(64, 128, 2)", rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_a_missing_activation_is_caught_by_the_values_and_the_library_block_is_not():
    x = torch.randn(2, 64, 8, 8)
    reference = BasicBlock(64, 64).eval()
    for block, same in ((BlockWithoutFinalReLU(64, 64), False), (BasicBlock(64, 64), True)):
        copy_weights(block.eval(), reference)
        if same:
            compare_outputs(block(x), reference(x), x, "BasicBlock(64, 64)", rtol=1e-5, atol=1e-6)
        else:
            with pytest.raises(Mismatch, match="right shapes but different values"):
                compare_outputs(block(x), reference(x), x, "BasicBlock(64, 64)", rtol=1e-5, atol=1e-6)


class OwnBlock(nn.Module):
    """A correct BasicBlock written from nn layers, as a student would."""

    def __init__(self, in_channels, channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1, self.relu1 = nn.BatchNorm2d(channels), nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        projection = stride != 1 or in_channels != channels
        self.shortcut = ProjectionShortcut(in_channels, channels, stride) if projection else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


def test_a_block_written_from_nn_layers_passes_every_check():
    A1.basic_block.check(OwnBlock, 16, 32, stride=2, input_shape=(2, 16, 9, 7))


class Subclass(resnet.BasicBlock):
    pass


class Wrapper(nn.Module):
    def __init__(self, *args, make=resnet.BasicBlock):  # reached through a default argument: no name to see
        super().__init__()
        self.block = make(*args)

    def forward(self, x):
        return self.block(x)


class Delegate(OwnBlock):
    def forward(self, x):
        return resnet.BasicBlock.forward(self, x)


class Hidden(OwnBlock):
    def forward(self, x):  # the library reached by a computed name: only running it shows it
        return getattr(__import__("minibones.models.resnet", fromlist=["x"]), "Basic" + "Block").forward(self, x)


class WatchOff(OwnBlock):
    def forward(self, x):
        import sys

        getattr(sys, "set" + "profile")(None)
        return super().forward(x)


@pytest.mark.parametrize("student, message", [
    (resnet.BasicBlock, "is the library's minibones.models.resnet.BasicBlock"),
    (Subclass, "is a subclass of the library's minibones.models.resnet.BasicBlock"),
    (Wrapper, "runs minibones.models.resnet.BasicBlock.__init__"),
    (Delegate, "that is minibones.models.resnet.BasicBlock"),
    (Hidden, "runs minibones.models.resnet.BasicBlock.forward"),
    (WatchOff, "switched off the grader's watch"),
])
def test_a_block_that_is_not_the_students_own_work_fails_and_says_how(student, message):
    with pytest.raises(NotOwnWork, match=re.escape(message)):
        A1.basic_block.check_output(student, 16, 16, input_shape=(2, 16, 6, 6))


def test_a_wrapper_found_only_by_its_children_is_named():
    module = Wrapper(16, 16)
    with pytest.raises(NotOwnWork, match=r"holds the library's minibones.models.resnet.BasicBlock \(as .block\)"):
        A1.basic_block.rules.check_module(module, "BasicBlock(16, 16)")


class FusedAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, z):
        b, n, d = z.shape
        q, k, v = self.qkv(z).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


def test_pytorchs_fused_attention_is_not_an_answer_to_a4():
    with pytest.raises(NotOwnWork, match="scaled_dot_product_attention"):
        A4.attention.check_output(FusedAttention, 32, 4, input_shape=(2, 5, 32))


class Renamed(nn.Module):
    """A right block whose first conv is called `first`: the names differ, the computation does not."""

    def __init__(self, in_channels, channels, stride=1):
        super().__init__()
        self.first = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1, self.relu1 = nn.BatchNorm2d(channels), nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1, bias=False)
        self.bn2, self.shortcut, self.relu2 = nn.BatchNorm2d(channels), nn.Identity(), nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.first(x))))) + x)


def test_names_that_differ_cost_the_parameter_test_only():
    with pytest.raises(Mismatch, match="unexpected first.weight"):
        A1.basic_block.check_parameters(Renamed, 16, 16)
    A1.basic_block.check_output(Renamed, 16, 16, input_shape=(2, 16, 6, 6))  # the weights are copied in order
    A1.basic_block.check_gradients(Renamed, 16, 16, input_shape=(2, 16, 6, 6))


def test_under_the_autograder_running_out_of_memory_is_an_error_not_a_dead_kernel():
    program = (
        "import torch\n"
        "from minibones.course.grading import limit_memory\n"
        "limit_memory(extra_gb=0.25)\n"
        "try:\n"
        "    torch.ones(2**28)  # 1 GB\n"
        "except (RuntimeError, MemoryError) as error:\n"
        "    print('refused:', type(error).__name__)\n"
    )
    env = {**os.environ, "NBGRADER_EXECUTION": "autograde"}
    result = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "refused:" in result.stdout, result.stderr[-2000:]
