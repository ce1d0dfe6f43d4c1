"""Release and check the nbgrader assignments in ``notebooks/assignments``.

    python -m minibones.classroom release   # student versions into notebooks/assignments/release/
    python -m minibones.classroom check     # prove every assignment grades: solution full, blank zero

``check`` works on a copy in a temporary folder: it submits the instructor's
solution and the untouched student version of every assignment as two
students, autogrades both, and reads the scores from the gradebook.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

COURSE_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "assignments"


def assignments(course_dir: Path = COURSE_DIR) -> list[str]:
    return sorted(p.name for p in (course_dir / "source").iterdir() if p.is_dir())


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
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config()
    config.CourseDirectory.root = str(course_dir)
    return NbGraderAPI(config=config)


def run(api, step: str, *args) -> None:
    """Run one nbgrader step (``generate_assignment``, ``autograde``) and fail loudly on any error."""
    with _tools_on_path():
        result = getattr(api, step)(*args, force=True)
    log = result.get("log", "")
    if not result["success"] or "[ERROR]" in log or "| ERROR]" in log:
        raise RuntimeError(f"nbgrader {step} {' '.join(args)} failed in {api.coursedir.root}:\n"
                           f"{(result.get('error') or '')[-2000:]}\n{log[-4000:]}")


def release(course_dir: Path = COURSE_DIR) -> list[Path]:
    """Generate the student version of every assignment (solutions and hidden tests removed)."""
    api, released = grader(course_dir), []
    for name in assignments(course_dir):
        run(api, "generate_assignment", name)
        released.append(course_dir / "release" / name)
    return released


def check(course_dir: Path = COURSE_DIR, names: list[str] | None = None) -> dict[str, dict[str, tuple[float, float]]]:
    """Autograde the solution and the blank student version of each assignment, on a copy.

    Returns ``{assignment: {"solution": (score, max), "blank": (score, max)}}``.
    """
    from nbgrader.api import Gradebook

    names = names or assignments(course_dir)
    scores = {}
    with tempfile.TemporaryDirectory(prefix="minibones-grading-") as tmp:
        work = Path(tmp) / "course"
        shutil.copytree(course_dir, work, ignore=shutil.ignore_patterns(
            "release", "submitted", "autograded", "feedback", "gradebook.db", ".ipynb_checkpoints"))
        api = grader(work)
        for name in names:
            run(api, "generate_assignment", name)
            for student, folder in (("solution", work / "source" / name), ("blank", work / "release" / name)):
                target = work / "submitted" / student / name
                shutil.copytree(folder, target, dirs_exist_ok=True)
            for student in ("solution", "blank"):
                run(api, "autograde", name, student)
        with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gradebook:
            for name in names:
                scores[name] = {
                    student: (gradebook.find_submission(name, student).score,
                              gradebook.find_submission(name, student).max_score)
                    for student in ("solution", "blank")
                }
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["release", "check"])
    args = parser.parse_args(argv)
    if args.command == "release":
        for folder in release():
            print(f"released {folder.relative_to(COURSE_DIR.parents[1])}")
        return 0
    ok = True
    for name, result in check().items():
        solution, blank = result["solution"], result["blank"]
        good = solution[0] == solution[1] and blank[0] == 0
        ok &= good
        print(f"{name}: solution {solution[0]:g}/{solution[1]:g}, blank {blank[0]:g}/{blank[1]:g}"
              f"{'' if good else '  <- expected full marks and zero'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
