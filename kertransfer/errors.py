"""One exception tree for kertransfer, and helpers that format its messages.

Every error kertransfer raises on bad input derives from
`KertransferError` *and* from the builtin that fits (``ValueError``,
``TypeError``, ``FileNotFoundError``, ...), so callers can catch either.

Messages say what happened, what was expected, how to fix it when there is a
fix, and end with ``Received: name=value``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "KertransferError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "UnknownBackboneError",
    "IncompatibleInputError",
    "FreezeError",
    "WeightsError",
    "WeightsNotFoundError",
    "WeightsMismatchError",
    "WeightsConversionError",
    "DataError",
    "DataSourceNotFoundError",
    "DataUnavailableError",
    "LabelError",
    "CorruptImageError",
    "MissingDependencyError",
    "SearchError",
    "ExportError",
    "ParityError",
    "format_message",
    "suggest",
]


class KertransferError(Exception):
    """Base class of every error kertransfer raises on purpose."""


class InvalidArgumentError(KertransferError, ValueError):
    """An argument has a value outside what is allowed."""


class InvalidTypeError(KertransferError, TypeError):
    """An argument has a type kertransfer cannot use."""


class UnknownBackboneError(InvalidArgumentError):
    """A backbone name is not in the registry."""


class IncompatibleInputError(InvalidArgumentError):
    """An input shape does not fit the backbone (too small, wrong channels)."""


class FreezeError(InvalidArgumentError):
    """A freeze policy cannot be applied (unknown block, depth too large)."""


class WeightsError(KertransferError, ValueError):
    """Weights cannot be loaded into the model."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A weights file is missing (a local path, or an uncached download)."""


class WeightsMismatchError(WeightsError):
    """A weights file belongs to another architecture."""


class WeightsConversionError(WeightsError, RuntimeError):
    """Converted weights fail their parity checks (``kertransfer weights install``)."""


class DataError(KertransferError, ValueError):
    """A data source is malformed or cannot be used as asked."""


class DataSourceNotFoundError(DataError, FileNotFoundError):
    """A data folder or file does not exist."""


class DataUnavailableError(DataError, ConnectionError):
    """A dataset needs a download that cannot happen (offline, not prepared)."""


class LabelError(DataError):
    """Labels fall outside the classes."""


class CorruptImageError(DataError):
    """An image file cannot be decoded (raised in strict mode)."""


class MissingDependencyError(KertransferError, ImportError):
    """An optional package is needed for this feature."""


class SearchError(KertransferError, RuntimeError):
    """A search cannot go on (its processes keep dying, a child process failed, or its
    directory holds a search with other settings)."""


class ExportError(KertransferError, RuntimeError):
    """An export could not be written or verified (the converter failed, say)."""


class ParityError(ExportError):
    """An exported model's outputs differ from the Keras model's beyond the tolerance."""


def _repr(value: Any) -> str:
    text = repr(value)
    if len(text) > 200:
        text = text[:197] + "..."
    return text


def format_message(
    problem: str,
    *,
    expected: str | None = None,
    fix: str | None = None,
    received: dict[str, Any] | None = None,
) -> str:
    """Build an error message in kertransfer's house style.

    Args:
        problem: What went wrong, as a sentence.
        expected: What is allowed or expected.
        fix: How to fix it.
        received: The offending arguments, shown as ``Received: k=v, ...``.

    Returns:
        The message text.
    """
    parts = [problem.rstrip()]
    if expected:
        parts.append(f"Expected {expected.rstrip('.')}.")
    if fix:
        parts.append(fix.rstrip())
    if received:
        shown = ", ".join(f"{k}={_repr(v)}" for k, v in received.items())
        parts.append(f"Received: {shown}")
    return " ".join(parts)


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a "Did you mean ...?" sentence for close matches, or ""."""
    choices = list(choices)
    close = difflib.get_close_matches(str(name).lower(), choices, n=n, cutoff=0.5)
    if not close:
        return ""
    return "Did you mean " + ", ".join(repr(c) for c in close) + "?"
