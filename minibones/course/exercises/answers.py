"""What every exercise checker does first and last: read the learner's answer, and print the verdict.

An answer is read as what the question asks for (a number, a whole number, a tuple of whole
numbers); anything else is refused with an error that says what to give and what was given,
before any comparison, so that ``"512"`` or ``(3, 1)`` is never reported as a wrong count.
A whole number may be written as a float (``27.0``, from a division): a count is a count.
Where the answer is a function, it must be the function itself, not a call to it
(:func:`as_function`); what it returns is read as a number too (:func:`number_returned`), but
a wrong type there is a "not yet" verdict, as any other mistake in the function.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch


def verdict(correct: bool, hint: str) -> None:
    """Print the one-line verdict every checker gives: "correct", or "not yet: <hint>"."""
    print("correct" if correct else f"not yet: {hint}")


def positive_int(value, what: str) -> int:
    """``value`` if it is a whole number of at least 1 (a size, a count), else a clear error.

    For the arguments of a question (``in_channels=``), not for answers: no float is taken.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive whole number, got {value!r}")
    return value


def _is_number(answer) -> bool:
    return isinstance(answer, Real) and not isinstance(answer, bool)  # True is an int to Python, not an answer


def _is_whole(answer) -> bool:
    return _is_number(answer) and math.isfinite(answer) and answer == int(answer)


def as_number(answer, what: str) -> float:
    """A learner's numeric answer as a float; anything else (a string, a tuple) gets a clear error."""
    if not _is_number(answer):
        raise ValueError(f"give {what} as a number, got {answer!r}")
    return float(answer)


def as_whole_number(answer, what: str) -> int:
    """A count or a size: ``27`` or ``27.0``; not ``27.5``, ``True`` or ``"27"``."""
    if not _is_whole(answer):
        raise ValueError(f"give {what} as a whole number, got {answer!r}")
    return int(answer)


def as_whole_numbers(answer, what: str, count: int | None = None) -> tuple[int, ...]:
    """A shape, a box or a list of strides: a tuple (or list) of whole numbers, ``count`` of them if given."""
    if (not isinstance(answer, (tuple, list)) or (count is not None and len(answer) != count)
            or not all(map(_is_whole, answer))):
        how_many = f"{count} " if count is not None else ""
        raise ValueError(f"give {what} as a tuple of {how_many}whole numbers, got {answer!r}")
    return tuple(int(value) for value in answer)


def as_function(function, example: str):
    """The learner's function itself (``f``), not what it returns (``f(...)``); ``example`` shows the call."""
    if not callable(function):
        raise ValueError(f"pass your function itself (its name, without brackets), e.g. {example}, got {function!r}")
    return function


def number_returned(value, whole: bool = False) -> int | float | None:
    """What a learner's function returned, as one number (a one-element tensor counts: ``x.sum()``);
    an ``int`` if ``whole`` (code that computes a count can give it the type of one, unlike an answer
    typed from a division). None when it is not, for the checker to say so in its verdict."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not _is_number(value) or (whole and not isinstance(value, Integral)):
        return None
    return value
