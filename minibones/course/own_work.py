"""Is it the learner's own work? The rules an assignment's block must keep, and how they are enforced.

A block that *is* the library's class, subclasses it, holds one as a child, or runs its code
(``library.BasicBlock.forward(self, x)``, captum's Grad-CAM) scores nothing, and the message
says which of these it did. Three independent looks, each of which a determined learner could
get around alone:

1. :meth:`Rules.check_module`: the class of every submodule, and its bases;
2. :meth:`Rules.check_code`: the names the learner's functions refer to, read from their
   bytecode (``library.Bottleneck`` is followed down to the class it names);
3. :meth:`Rules.watch`: the code that actually runs while the learner's block is built and
   called (``sys.setprofile`` sees every Python frame and every call into C), which also
   catches a name computed at run time or reached through a default argument.
"""

from __future__ import annotations

import contextlib
import dis
import functools
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from torch import nn


class NotOwnWork(AssertionError):
    """The learner's code is, contains or runs the implementation it was asked to write."""


def dotted(obj) -> str:
    module = getattr(obj, "__module__", None) or getattr(getattr(obj, "__self__", None), "__name__", "")
    return f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}".lstrip(".")


@functools.lru_cache
def _package_path(name: str) -> str | None:
    """Where the code of a dotted module or package lives, without importing it."""
    top, *rest = name.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    base = Path(spec.submodule_search_locations[0]) if spec.submodule_search_locations else Path(spec.origin).parent
    path = base.joinpath(*rest)
    return f"{path}{os.sep}" if path.is_dir() or not rest else f"{path}.py"


def _codes(function) -> Iterator[types.CodeType]:
    """The code object of a function and of everything defined inside it (lambdas, comprehensions)."""
    stack = [function.__code__]
    while stack:
        code = stack.pop()
        yield code
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))


def _class_functions(cls: type) -> Iterator[types.FunctionType]:
    for value in vars(cls).values():
        value = getattr(value, "__func__", value)  # staticmethod, classmethod
        if isinstance(value, property):
            yield from (f for f in (value.fget, value.fset) if f is not None)
        elif isinstance(value, types.FunctionType):
            yield value


_LOADS = ("LOAD_GLOBAL", "LOAD_DEREF", "LOAD_NAME", "LOAD_CLASSDEREF")


def _references(code: types.CodeType) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Each global (or closure) name the code loads, with the attributes read from it right
    after: ``library.Bottleneck.forward`` gives ``("library", ("Bottleneck", "forward"))``."""
    instructions = list(dis.get_instructions(code))
    for i, instruction in enumerate(instructions):
        if instruction.opname in _LOADS:
            attributes = []
            for following in instructions[i + 1:]:
                if following.opname not in ("LOAD_ATTR", "LOAD_METHOD"):
                    break
                attributes.append(following.argval)
            yield instruction.argval, tuple(attributes)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _references(const)


@dataclass(frozen=True)
class Rules:
    """What a learner's implementation must not be, contain or run.

    ``forbidden``: classes and functions (the library's blocks, captum's Grad-CAM, a fused
    attention kernel), or dotted names of whole modules and packages (``"captum"``,
    ``"torchvision.models"``). ``allowed``: the library's classes an assignment hands out
    (``ProjectionShortcut``), allowed even inside a forbidden module. ``hint``: what to build
    from instead; every message ends with it.
    """

    forbidden: tuple = ()
    allowed: tuple = ()
    hint: str = ""

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(f for f in self.forbidden if isinstance(f, str))

    def _in_forbidden_module(self, module_name: str | None) -> bool:
        return bool(module_name) and any(module_name == m or module_name.startswith(m + ".") for m in self.modules)

    def _allowed_class(self, cls: type) -> bool:
        return any(isinstance(a, type) and issubclass(cls, a) for a in self.allowed)

    def offending_class(self, cls: type) -> type | None:
        """The first forbidden class among ``cls`` and its bases (None when all are fine)."""
        if self._allowed_class(cls):
            return None
        for base in cls.__mro__:
            if base in self.forbidden or self._in_forbidden_module(base.__module__):
                return base
        return None

    def forbids(self, obj) -> bool:
        """Is ``obj`` (a class, function, builtin, module or module instance) forbidden?"""
        if isinstance(obj, type):
            return self.offending_class(obj) is not None
        if isinstance(obj, types.ModuleType):
            return self._in_forbidden_module(obj.__name__)
        if isinstance(obj, nn.Module):
            return self.offending_class(type(obj)) is not None
        if any(obj is a for a in self.allowed):
            return False
        if any(obj is f for f in self.forbidden):
            return True
        functions = (types.FunctionType, types.BuiltinFunctionType)
        return isinstance(obj, functions) and self._in_forbidden_module(getattr(obj, "__module__", None))

    def fail(self, what: str, problem: str) -> None:
        """Raise :class:`NotOwnWork`: what the learner's code did, that it scores nothing, and the hint."""
        raise NotOwnWork(f"{what} {problem}. The assignment asks you to write this yourself, so this test gives "
                         f"no points.{' ' + self.hint if self.hint else ''}")

    def check_class(self, cls: type, what: str) -> None:
        """``cls`` is not, and does not subclass, a forbidden class."""
        bad = self.offending_class(cls)
        if bad is not None:
            self.fail(what, f"is the library's {dotted(bad)}" if cls is bad
                      else f"is a subclass of the library's {dotted(bad)}")

    def check_module(self, module: nn.Module, what: str) -> None:
        """No submodule is, subclasses or is built from a forbidden class."""
        inside_allowed: list[str] = []
        for path, sub in module.named_modules():
            if any(path.startswith(prefix + ".") for prefix in inside_allowed):
                continue
            if self._allowed_class(type(sub)):
                inside_allowed.append(path)
                continue
            if path == "":
                self.check_class(type(sub), what)
            elif (bad := self.offending_class(type(sub))) is not None:
                self.fail(what, f"holds the library's {dotted(bad)} (as .{path}) and hands the work to it")

    def check_code(self, obj, what: str) -> None:
        """The learner's functions (methods, helpers they call) name nothing forbidden."""
        home = getattr(obj, "__module__", None)
        seen, todo = set(), list(own_functions(obj, home))
        while todo:
            function = todo.pop()
            if function in seen:
                continue
            seen.add(function)
            scope = dict(function.__globals__)
            for name, cell in zip(function.__code__.co_freevars, function.__closure__ or ()):
                with contextlib.suppress(ValueError):
                    scope[name] = cell.cell_contents
            for name, attributes in _references(function.__code__):
                if name not in scope:
                    continue
                value, used = scope[name], [name]
                for attribute in attributes:  # follow modules down to what is used: library.Bottleneck
                    if not isinstance(value, types.ModuleType) or not hasattr(value, attribute):
                        break
                    value = getattr(value, attribute)
                    used.append(attribute)
                if self.forbids(value):
                    self.fail(what, f"uses {'.'.join(used)}, that is {_described(value)}")
                elif getattr(value, "__module__", None) == home and value is not obj:
                    todo.extend(own_functions(value, home))

    @contextlib.contextmanager
    def watch(self, what: str) -> Iterator[None]:
        """Run the learner's code and fail if any forbidden code ran inside it."""
        watcher, previous, error = _Watcher(self), sys.getprofile(), None
        sys.setprofile(watcher)
        try:
            yield
        except Exception as raised:  # the learner's own error, unless forbidden code ran before it
            error = raised
        finally:
            watcher.done = True
            still_ours = sys.getprofile() is watcher
            sys.setprofile(previous)
        if not still_ours:
            self.fail(what, "switched off the grader's watch over which code runs (sys.setprofile)")
        if watcher.ran:
            self.fail(what, f"runs {watcher.ran}, which it must not use")
        if error is not None:
            raise error


def _described(obj) -> str:
    if isinstance(obj, types.ModuleType):
        return f"the module {obj.__name__}"
    if isinstance(obj, nn.Module):
        return f"an instance of {dotted(type(obj))}"
    return dotted(obj)


def own_functions(obj, home: str | None) -> Iterator[types.FunctionType]:
    """The functions written where ``obj`` was: its own methods and those of bases written there too."""
    if isinstance(obj, types.FunctionType):
        yield obj
    elif isinstance(obj, type):
        for cls in obj.__mro__:
            if cls.__module__ == home:
                yield from _class_functions(cls)


_WATCH_OFF = (sys.setprofile,)  # a learner's code that turns the watch off fails the test


class _Watcher:
    """A profile function (``sys.setprofile``) that records the first forbidden code to run.

    Code run *inside* an allowed class (``ProjectionShortcut.__init__`` calling the library's
    ``conv1x1``) is not counted: frames below an allowed frame are skipped.
    """

    def __init__(self, rules: Rules):
        self.paths = tuple(p for p in map(_package_path, rules.modules) if p)
        self.codes = {}
        for item in rules.forbidden:
            functions = _class_functions(item) if isinstance(item, type) else [item]
            for function in functions:
                if isinstance(function, types.FunctionType):
                    self.codes.update({code: dotted(function) for code in _codes(function)})
        self.builtins = {id(f): dotted(f) for f in rules.forbidden if isinstance(f, types.BuiltinFunctionType)}
        self.builtins.update({id(f): f"{f.__module__}.{f.__name__}" for f in _WATCH_OFF})
        self.allowed = set()
        for cls in rules.allowed:
            for base in (cls.__mro__ if isinstance(cls, type) else ()):
                if not base.__module__.startswith("torch"):
                    for function in _class_functions(base):
                        self.allowed.update(_codes(function))
        self.inside_allowed: list = []
        self.ran: str | None = None
        self.done = False  # set just before the grader itself switches the watch off

    def __call__(self, frame, event, arg) -> None:
        if self.done:
            return
        if event == "return" and self.inside_allowed and frame is self.inside_allowed[-1]:
            self.inside_allowed.pop()
        elif self.inside_allowed or self.ran:
            return
        elif event == "call":
            code = frame.f_code
            if code in self.allowed:
                self.inside_allowed.append(frame)
            elif code in self.codes:
                self.ran = self.codes[code]
            elif code.co_filename.startswith(self.paths):
                self.ran = f"{frame.f_globals.get('__name__', code.co_filename)}.{code.co_qualname}"
        elif event == "c_call" and id(arg) in self.builtins:
            self.ran = self.builtins[id(arg)]
