"""Release, grade and check the nbgrader assignments in ``notebooks/assignments``.

    python -m minibones.course.classroom release   # student versions into notebooks/assignments/release/
    python -m minibones.course.classroom check     # prove every assignment grades: solution full, blank zero

``check`` works on a copy in a temporary folder: it submits the instructor's solution and the
untouched student version of every assignment as two students, autogrades them in one call,
and reads the scores from the gradebook. :func:`grade` does the same for any set of
submissions (the test suite adds copies of the library, replaced checkers, warnings...).

Three nbgrader plug-ins live here too, named in ``nbgrader_config.py``:

* :class:`ClearOutputExceptExperiments` replaces nbgrader's first autograding step, which
  clears every output: the open tasks' experiments (cells whose id starts with
  ``experiment``) keep the outputs the student submitted and are not run again (a person
  grades them, and rerunning every student's two-minute experiment would multiply the
  grading time); every other cell loses its outputs and any ``skip-execution`` tag (without
  this, a student who tags the test cells ``skip-execution`` gets full marks: measured).
* :class:`FeedbackWithoutHiddenTests` removes the hidden tests and the mark schemes from the
  feedback (``generate_feedback`` keeps both by default), and shortens the traceback of a
  failed hidden test to its message.
* :class:`LatePenalty`: a share of the points per day late.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nbconvert.preprocessors import Preprocessor
from nbgrader.coursedir import CourseDirectory
from nbgrader.plugins import LateSubmissionPlugin
from traitlets import Bool, Float, Unicode
from traitlets.config.loader import PyFileConfigLoader

import minibones

COURSE_DIR = Path(minibones.__file__).resolve().parents[1] / "notebooks" / "assignments"
"""The course nbgrader works on, in the repository that holds the package. The folders inside it
(source, release, submitted, autograded, feedback) and the gradebook are named by its
``nbgrader_config.py`` and found through :func:`course`, never spelled out here."""
SKIP_TAG = "skip-execution"  # nbclient's (and so nbgrader's) tag for cells it does not run
HIDDEN_TESTS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
MARK_SCHEME = ("### BEGIN MARK SCHEME", "### END MARK SCHEME")


# --- nbgrader plug-ins -------------------------------------------------------------------


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_experiment(cell, prefix: str = "experiment") -> bool:
    """An open task's experiment: a manually graded code cell whose id starts with ``prefix``."""
    meta = _nbgrader(cell)
    return (cell.get("cell_type") == "code" and meta.get("solution", False) and meta.get("grade", False)
            and str(meta.get("grade_id", "")).startswith(prefix))


class ClearOutputExceptExperiments(Preprocessor):
    """Autograding's first step: clear every code cell's outputs and remove any ``skip-execution``
    tag, except in the open tasks' experiments, which keep the student's outputs and are tagged
    so that they are not run again."""

    enabled = Bool(True).tag(config=True)
    experiment_prefix = Unicode("experiment", help="grade_id prefix of the experiment cells").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        tags = [tag for tag in cell.metadata.get("tags", []) if tag != SKIP_TAG]
        if is_experiment(cell, self.experiment_prefix):
            tags.append(SKIP_TAG)
        else:
            cell.outputs, cell.execution_count = [], None
            for key in ("collapsed", "scrolled"):
                cell.metadata.pop(key, None)
        if tags:
            cell.metadata["tags"] = tags
        else:
            cell.metadata.pop("tags", None)
        return cell, resources


def remove_region(source: str, delimiters: tuple[str, str]) -> tuple[str, bool]:
    """``source`` without the lines from a BEGIN delimiter to its END (inclusive); and whether any went."""
    begin, end = delimiters
    kept, inside, removed = [], False, False
    for line in source.split("\n"):
        if begin in line:
            inside, removed = True, True
        elif end in line:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept), removed


class FeedbackWithoutHiddenTests(Preprocessor):
    """Feedback shows the visible tests and what failed, never the hidden tests' code or a mark scheme.

    A failed hidden test keeps its message (it says what differs, in words) but not its
    traceback, which would quote the hidden code.
    """

    enabled = Bool(True).tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        cell.source, had_hidden = remove_region(cell.source, HIDDEN_TESTS)
        cell.source, _ = remove_region(cell.source, MARK_SCHEME)
        if had_hidden and cell.cell_type == "code":
            for output in cell.outputs:
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
        return cell, resources


class LatePenalty(LateSubmissionPlugin):
    """Late work loses ``percent_per_day`` of its score per started day, and everything after
    ``zero_after_days`` days."""

    percent_per_day = Float(10.0, help="share of the score lost per started day late, in percent").tag(config=True)
    zero_after_days = Float(7.0, help="days late after which the score is zero").tag(config=True)

    def late_submission_penalty(self, student_id: str, score: float, total_seconds_late: float) -> float:
        days = math.ceil(total_seconds_late / 86400)
        if days > self.zero_after_days:
            return score
        return min(score, score * self.percent_per_day / 100 * days)


# --- running nbgrader --------------------------------------------------------------------


def _config(course_dir: Path):
    """The course's ``nbgrader_config.py``, with ``course_dir`` as the course's root."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config()
    config.CourseDirectory.root = str(course_dir)
    return config


def course(course_dir: Path = COURSE_DIR) -> CourseDirectory:
    """Where nbgrader keeps what in ``course_dir``, as its configuration says."""
    return CourseDirectory(config=_config(course_dir))


def folder(where: CourseDirectory, step: str, name: str, student: str = ".") -> Path:
    """The folder of assignment ``name`` at an nbgrader ``step`` (``"source"``, ``"release"``,
    ``"submitted"``, ``"autograded"``, ``"feedback"``), for ``student`` in the last three."""
    return Path(where.format_path(getattr(where, f"{step}_directory"), student, name))


def notebook_path(where: CourseDirectory, step: str, name: str, student: str = ".") -> Path:
    return folder(where, step, name, student) / f"{name}.ipynb"


def assignments(course_dir: Path = COURSE_DIR) -> list[str]:
    source = folder(course(course_dir), "source", "")
    return sorted(p.name for p in source.iterdir() if p.is_dir())


@contextmanager
def _tools_on_path():
    """nbgrader calls some tools by name (``alembic``): they must come from this environment."""
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), before])
    try:
        yield
    finally:
        os.environ["PATH"] = before


def grader(course_dir: Path):
    """nbgrader's Python API on ``course_dir``, configured by its ``nbgrader_config.py``.

    In-process rather than one ``nbgrader`` command per step: each command would
    start Python and import nbgrader again, which costs more than the grading.
    """
    from nbgrader.apps import NbGraderAPI

    return NbGraderAPI(config=_config(course_dir))


def run(api, step: str, *args, tolerate_errors: bool = False) -> str:
    """Run one nbgrader step (``generate_assignment``, ``autograde``...) and fail loudly on any error.

    ``tolerate_errors``: a submission nbgrader could not grade (its kernel died) is logged,
    not raised; the caller reads the gradebook. Returns nbgrader's log.
    """
    with _tools_on_path():
        result = getattr(api, step)(*args, force=True)
    log = result.get("log", "")
    failed = not result["success"] or "[ERROR]" in log or "| ERROR]" in log
    if failed and not tolerate_errors:
        raise RuntimeError(f"nbgrader {step} {' '.join(map(str, args))} failed in {api.coursedir.root}:\n"
                           f"{(result.get('error') or '')[-2000:]}\n{log[-4000:]}")
    return log


def release(course_dir: Path = COURSE_DIR) -> list[Path]:
    """Generate the student version of every assignment (solutions and hidden tests removed)."""
    api, released = grader(course_dir), []
    for name in assignments(course_dir):
        run(api, "generate_assignment", name)
        released.append(folder(api.coursedir, "release", name))
    return released


@dataclass
class Submission:
    """One student's notebook for one assignment, as nbformat JSON; ``timestamp`` as the exchange writes it."""

    student: str
    assignment: str
    notebook: dict
    timestamp: str | None = None


@dataclass
class Graded:
    """What nbgrader made of one submission."""

    student: str
    assignment: str
    cells: dict[str, tuple[float | None, float]]  # grade_id -> (score, max) for every graded cell
    autograded: dict | None  # the autograded notebook (None: nbgrader could not grade it)
    feedback: str | None  # the feedback HTML
    late_penalty: float = 0.0
    auto_cells: set[str] = field(default_factory=set)  # the autograded test cells
    release: dict | None = None  # the student version of the assignment, as handed out

    @property
    def auto_score(self) -> tuple[float, float]:
        """Score and maximum of the autograded tests only (written answers wait for a person)."""
        scores = [self.cells[c] for c in self.auto_cells]
        return sum(s or 0 for s, _ in scores), sum(m for _, m in scores)

    def errors(self) -> dict[str, str]:
        """grade_id -> the error message each failed test cell showed."""
        found = {}
        for cell in (self.autograded or {}).get("cells", []):
            grade_id = _nbgrader(cell).get("grade_id")
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error" and grade_id:
                    found[grade_id] = f"{output.get('ename')}: {output.get('evalue')}"
        return found


def source_notebook(name: str, course_dir: Path = COURSE_DIR) -> dict:
    return json.loads(notebook_path(course(course_dir), "source", name).read_text())


def grade(submissions: list[Submission], course_dir: Path = COURSE_DIR, duedate: str | None = None,
          work: Path | None = None) -> dict[tuple[str, str], Graded]:
    """Generate every assignment, autograde all ``submissions`` in one nbgrader call, write the
    feedback, and read back each submission's scores, graded notebook and feedback.

    Works on a copy of ``course_dir`` (in ``work``, or a temporary folder). ``"release"`` as a
    notebook stands for the untouched student version. ``duedate`` (e.g.
    ``"2030-01-15 17:00:00 UTC"``) is given to every assignment, for the late penalty.
    """
    from nbgrader.api import Gradebook

    with tempfile.TemporaryDirectory(prefix="minibones-grading-") as tmp:
        root = Path(work or tmp) / "course"
        left_out = [*_written_while_grading(course(course_dir)), ".ipynb_checkpoints"]
        shutil.copytree(course_dir, root, ignore=shutil.ignore_patterns(*left_out))
        api = grader(root)
        where = api.coursedir
        names = sorted({s.assignment for s in submissions})
        for name in names:
            run(api, "generate_assignment", name)
        if duedate:
            with Gradebook(where.db_url) as gradebook:
                for name in names:
                    gradebook.update_or_create_assignment(name, duedate=duedate)
        for submission in submissions:
            _submit(where, submission)
        for name in names:
            run(api, "autograde", name, "*", tolerate_errors=True)
            run(api, "generate_feedback", name)
        graded = {(s.student, s.assignment): _read(where, s.student, s.assignment) for s in submissions}
        for g in graded.values():
            g.release = _released(where, g.assignment)
        return graded


def _written_while_grading(where: CourseDirectory) -> list[str]:
    """What nbgrader adds to a course: its student versions, submissions, graded notebooks,
    feedback and gradebook."""
    gradebook = Path(where.db_url.removeprefix("sqlite:///")).name
    return [where.release_directory, where.submitted_directory, where.autograded_directory,
            where.feedback_directory, gradebook]


def _released(where: CourseDirectory, name: str) -> dict:
    return json.loads(notebook_path(where, "release", name).read_text())


def _submit(where: CourseDirectory, submission: Submission) -> None:
    """Put a submission where nbgrader's exchange would have collected it, with its timestamp."""
    path = notebook_path(where, "submitted", submission.assignment, submission.student)
    path.parent.mkdir(parents=True, exist_ok=True)
    notebook = _released(where, submission.assignment) if submission.notebook == "release" else submission.notebook
    path.write_text(json.dumps(notebook))
    if submission.timestamp:  # the file nbgrader reads (CourseDirectory.get_existing_timestamp)
        (path.parent / "timestamp.txt").write_text(submission.timestamp)


def _read(where: CourseDirectory, student: str, name: str) -> Graded:
    from nbgrader.api import Gradebook

    with Gradebook(where.db_url) as gradebook:
        notebook = gradebook.find_submission_notebook(name, name, student)
        cells = {g.name: (g.score, g.max_score) for g in notebook.grades}
        source = gradebook.find_notebook(name, name)
        # autograded tests: graded cells the student does not write (answers and experiments wait for a person)
        auto = {c.name for c in source.grade_cells} - {c.name for c in source.solution_cells}
        penalty = notebook.late_submission_penalty or 0.0
    graded_path = notebook_path(where, "autograded", name, student)
    feedback_path = folder(where, "feedback", name, student) / f"{name}.html"
    return Graded(student, name, cells, json.loads(graded_path.read_text()) if graded_path.exists() else None,
                  feedback_path.read_text() if feedback_path.exists() else None, penalty, auto)


def check(course_dir: Path = COURSE_DIR, names: list[str] | None = None) -> dict[str, dict[str, tuple[float, float]]]:
    """Autograde the solution and the blank student version of each assignment, on a copy.

    Returns ``{assignment: {"solution": (score, max), "blank": (score, max)}}`` over the
    autograded tests (written answers and experiments are graded by a person).
    """
    names = names or assignments(course_dir)
    submissions = [Submission("solution", n, source_notebook(n, course_dir)) for n in names]
    submissions += [Submission("blank", n, "release") for n in names]
    graded = grade(submissions, course_dir)
    return {n: {s: graded[s, n].auto_score for s in ("solution", "blank")} for n in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["release", "check"])
    args = parser.parse_args(argv)
    if args.command == "release":
        for released in release():
            print(f"released {os.path.relpath(released)}")
        return 0
    ok = True
    for name, result in check().items():
        solution, blank = result["solution"], result["blank"]
        good = solution[0] == solution[1] > 0 and blank[0] == 0
        ok &= good
        print(f"{name}: autograded tests: solution {solution[0]:g}/{solution[1]:g}, blank {blank[0]:g}/{blank[1]:g}"
              f"{'' if good else '  <- expected full marks and zero'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
