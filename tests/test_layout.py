"""The folders say what depends on what: the course's machinery uses the library, never the reverse."""

import ast
from pathlib import Path

import minibones

PACKAGE = Path(minibones.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path.name}: relative import of {node.module}; the library imports by full name"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def library_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "course" not in p.relative_to(PACKAGE).parts]


def test_the_library_never_imports_the_course():
    files = library_files()
    assert len(files) > 40 and not any("exercises" in p.parts for p in files)
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(m for m in imported_modules(path) if m.startswith("minibones.course"))
        for path in files
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_the_course_is_built_on_the_library():
    """Every checker and grader measures the library's own models; only the plumbing stands alone."""
    course = PACKAGE / "course"
    standalone = {
        str(p.relative_to(course)) for p in course.rglob("*.py")
        if not any(m == "minibones" or m.startswith("minibones.") and not m.startswith("minibones.course")
                   for m in imported_modules(p))
    }
    assert standalone == {"__init__.py", "regime.py", "own_work.py", "exercises/answers.py"}


def test_an_import_of_the_course_is_found(tmp_path):
    """The scan above would catch the first mistake a maintainer makes."""
    module = tmp_path / "example.py"
    module.write_text("def f():\n    from minibones.course.grading import A1\n    import minibones.course.regime\n")
    assert {"minibones.course.grading", "minibones.course.regime"} <= imported_modules(module)


def test_functions_fit_on_a_screen_and_modules_stay_short():
    """About 80 lines per function (docstring included) and 500 per module, so each reads at once."""
    long_functions, long_modules = [], []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        if len(source.splitlines()) > 500:
            long_modules.append(str(path.relative_to(PACKAGE)))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long_functions.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert (long_functions, long_modules) == ([], [])
