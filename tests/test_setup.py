"""The two ways to install the course name the same packages with the same pins."""

import hashlib
import re
import subprocess
import sys
import tomllib

import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pins_in_pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return dict(re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", r).groups() for r in requirements)


def pins_in_environment_yml() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        match = re.fullmatch(r"\s*- ([A-Za-z0-9_.-]+)==(\S+)\s*", line)
        if match:
            pins[match[1]] = match[2]
    return pins


def test_environment_yml_and_pyproject_pin_the_same_packages():
    assert pins_in_environment_yml() == pins_in_pyproject()


def test_every_dependency_is_pinned_exactly():
    pins = pins_in_pyproject()
    for package in ("torch", "torchvision", "jupyterlab", "matplotlib", "nbval", "captum", "pytest"):
        assert package in pins, f"{package} is not pinned"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"  # the pair known to work together


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python3 course.py test"
    assert f"\n{command}\n" in readme
    assert command in ci.splitlines()


def test_the_conda_route_runs_the_same_pytest_command():
    import runpy

    test_command = runpy.run_path(str(ROOT / "course.py"))["TEST_COMMAND"]
    assert test_command[:2] == ["-m", "pytest"]
    assert "\npytest " + " ".join(test_command[2:]) + "   # the tests\n" in (ROOT / "README.md").read_text()


def test_setup_is_idempotent_and_the_test_command_runs_pytest_with_nbval():
    # a second setup must not reinstall: the stamp matches the pinned requirements
    stamp = ROOT / ".venv" / ".minibones-installed"
    fingerprint = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != fingerprint:
        pytest.skip("this environment was not set up by course.py from the current pyproject.toml")
    output = subprocess.run([sys.executable, str(ROOT / "course.py"), "setup"], capture_output=True, text=True, cwd=ROOT)
    assert output.returncode == 0, output.stderr
    assert "installing" not in output.stdout
    source = (ROOT / "course.py").read_text()
    assert '"--nbval"' in source and '"notebooks"' in source and '"tests"' in source
