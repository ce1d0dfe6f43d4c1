#!/usr/bin/env python3
"""Set up minibones in a project-local virtual environment, then open the course or test it.

    python3 course.py lab     # set up, then open JupyterLab at the first notebook
    python3 course.py test    # set up, then run the unit tests and every notebook (pytest --nbval)
    python3 course.py assignments   # set up, then generate the students' versions of the assignments

Only the standard library is used here, so this works on a machine with nothing
but Python 3.11 and pip. Setting up is idempotent: the environment in ``.venv``
is (re)installed only when ``pyproject.toml`` changed since the last install.
Extra arguments are passed on (``python3 course.py test -k resnet``,
``python3 course.py lab --no-browser --port 8890``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".minibones-installed"
FIRST_NOTEBOOK = "notebooks/00_what_a_backbone_is.ipynb"
# -n auto: one test process per core; --dist loadscope keeps each test file, and each
# notebook's cells, in one process (in order, sharing their module-scoped fixtures).
# --no-loadscope-reorder: files are handed out in the order given, the notebooks (30-50 s
# each) first and the test files after, so the run ends on short files with both processes
# busy. (The default order, by number of tests, left the nbgrader and browser tests, a
# minute and half a minute with few tests each, for last.)
TEST_COMMAND = [
    "-m", "pytest", "-n", "auto", "--dist", "loadscope", "--no-loadscope-reorder", "--nbval",
    "--nbval-current-env", "--nbval-sanitize-with", "notebooks/sanitize.cfg", "notebooks", "tests",
]


def fingerprint() -> str:
    """What the installed environment depends on: the pinned requirements."""
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def setup() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"minibones needs Python 3.11 or newer; this is {sys.version.split()[0]}. Run it with python3.11.")
    if not PYTHON.exists():
        print(f"creating the virtual environment {VENV.relative_to(ROOT)}/", flush=True)
        venv.create(VENV, with_pip=True)
    if STAMP.exists() and STAMP.read_text().strip() == fingerprint():
        return
    print("installing minibones and its pinned dependencies into .venv (a few minutes, once)", flush=True)
    # --no-compile: Python compiles the modules it actually imports on first use (see run);
    # compiling every file of every package up front (torch alone has thousands) only costs time
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--no-compile", "-e", ".[course,test]"],
                   cwd=ROOT, check=True)
    STAMP.write_text(fingerprint())


def run(args: list[str]) -> int:
    # tools called by name from inside (nbgrader calls alembic) must come from .venv too
    env = {**os.environ, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
    # Python's bytecode cache is kept, inside .venv, even where PYTHONDONTWRITEBYTECODE is set:
    # without it every process (each notebook kernel, each test worker) compiles torch's
    # modules again on import, about 15 s of CPU each instead of a few.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(VENV / "pycache"))
    return subprocess.run([str(PYTHON), *args], cwd=ROOT, env=env).returncode


def main(argv: list[str]) -> int:
    commands = {
        "setup": [],
        "lab": ["-m", "jupyter", "lab", FIRST_NOTEBOOK],
        "test": TEST_COMMAND,
        "assignments": ["-m", "minibones.course.classroom", "release"],
    }
    if not argv or argv[0] not in commands:
        print(__doc__.strip())
        return 2
    setup()
    if argv[0] == "setup":
        return 0
    if argv[0] == "lab" and hasattr(os, "geteuid") and os.geteuid() == 0:
        commands["lab"].append("--allow-root")  # containers often run as root; Jupyter refuses without this
    return run(commands[argv[0]] + argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
