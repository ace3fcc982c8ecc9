"""Declared checks of arguments, one message shape for all.

In the spirit of scikit-learn's parameter constraints: a function states what
an argument may be (an integer in a range, a number in a range, one of some
choices) and these checks raise kertransfer's error with the house message,
``"<name> must be <what>." ... "Received: <name>=<value>"``. Numpy scalars are
accepted wherever Python numbers are (``np.int64(3)`` is an integer, a
``bool`` never is); the value comes back as a Python ``int`` or ``float``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from kertransfer.errors import InvalidArgumentError, format_message, suggest

__all__ = ["check_choice", "check_fraction", "check_int", "check_number", "is_bool", "is_int",
           "is_number"]


def is_int(value: Any) -> bool:
    """An integer, Python or numpy, and not a bool."""
    return isinstance(value, numbers.Integral) and not is_bool(value)


def is_number(value: Any) -> bool:
    """A real number (integer or float, Python or numpy), and not a bool."""
    return isinstance(value, numbers.Real) and not is_bool(value)


def is_bool(value: Any) -> bool:
    """A Python ``bool`` or a numpy ``bool_`` (which is no ``bool`` subclass)."""
    return isinstance(value, (bool, np.bool_))


def _range_text(minimum, maximum, exclusive_minimum: bool,
                exclusive_maximum: bool = False) -> str:
    low = None if minimum is None else f"{'>' if exclusive_minimum else '>='} {minimum:g}"
    high = None if maximum is None else f"{'<' if exclusive_maximum else '<='} {maximum:g}"
    return " and ".join(t for t in (low, high) if t)


def _refuse(name: str, value: Any, what: str, allow_none: bool, error,
            fix: str | None = None) -> None:
    what += " or None" if allow_none else ""
    raise error(format_message(f"{name} must be {what}.", fix=fix, received={name: value}))


def check_int(value: Any, name: str, *, minimum: int | None = None,
              maximum: int | None = None, allow_none: bool = False,
              error: type[Exception] = InvalidArgumentError,
              fix: str | None = None) -> int | None:
    """``value`` as an ``int``, or raise naming ``name``.

    The message says "a positive integer" for ``minimum=1``, "a non-negative
    integer" for ``minimum=0``, else "an integer >= m" (and "<= M"); ``fix``,
    a sentence on what the argument means or how to mend it, goes before
    ``Received:``.
    """
    if value is None and allow_none:
        return None
    ok = is_int(value) and (minimum is None or value >= minimum) \
        and (maximum is None or value <= maximum)
    if not ok:
        if maximum is None and minimum == 1:
            what = "a positive integer"
        elif maximum is None and minimum == 0:
            what = "a non-negative integer"
        else:
            bounds = _range_text(minimum, maximum, False)
            what = "an integer" + (f" {bounds}" if bounds else "")
        _refuse(name, value, what, allow_none, error, fix)
    return int(value)


def check_number(value: Any, name: str, *, minimum: float | None = None,
                 maximum: float | None = None, exclusive_minimum: bool = False,
                 exclusive_maximum: bool = False, allow_none: bool = False,
                 error: type[Exception] = InvalidArgumentError,
                 fix: str | None = None) -> float | None:
    """``value`` as a ``float``, or raise naming ``name``.

    ``minimum=0, exclusive_minimum=True`` reads "a number > 0";
    ``minimum=0, maximum=1, exclusive_maximum=True`` reads "a number >= 0 and
    < 1". ``fix`` is as for `check_int`.
    """
    if value is None and allow_none:
        return None
    ok = is_number(value) and value == value  # not NaN
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive_maximum else value <= maximum
    if not ok:
        bounds = _range_text(minimum, maximum, exclusive_minimum, exclusive_maximum)
        _refuse(name, value, "a number" + (f" {bounds}" if bounds else ""), allow_none, error,
                fix)
    return float(value)


def check_fraction(value: Any, name: str, *, open_low: bool = False, allow_none: bool = False,
                   error: type[Exception] = InvalidArgumentError,
                   fix: str | None = None) -> float | None:
    """``value`` as a ``float`` in [0, 1) (``open_low``: in (0, 1)), or raise naming ``name``.

    The message reads "<name> must be a fraction in [0, 1)." (a split, a rate,
    a share of steps); ``fix`` is as for `check_int`.
    """
    if value is None and allow_none:
        return None
    ok = is_number(value) and (value > 0 if open_low else value >= 0) and value < 1
    if not ok:
        _refuse(name, value, f"a fraction in {'(' if open_low else '['}0, 1)", allow_none,
                error, fix)
    return float(value)


def check_choice(value: Any, name: str, choices: Iterable[str], *, what: str = "",
                 error: type[Exception] = InvalidArgumentError) -> str:
    """``value`` if it is one of ``choices``, or raise with a "Did you mean" hint."""
    choices = tuple(choices)
    if value not in choices:
        hint = suggest(str(value), choices)
        problem = f"Unknown {what or name}." + (f" {hint}" if hint else "")
        raise error(format_message(problem, expected=f"one of {', '.join(map(repr, choices))}",
                                   received={name: value}))
    return value
