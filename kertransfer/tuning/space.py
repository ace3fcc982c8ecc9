"""The search space of a transfer search: its knobs, their defaults, and user overrides.

Each knob has a kind (int, float, choice) and a default range. A user changes
the space with a plain mapping, ``{knob: spec}``, where a spec is:

- a scalar: the knob is fixed to it (``"dropout": 0.3``);
- a ``(low, high)`` tuple: searched in that range (``"head_learning_rate": (1e-4, 1e-2)``;
  learning rates are sampled on a log scale);
- a list: searched among those values (``"bn": ["frozen", "trainable"]``);
- ``None``: fixed to its default.

Optional knobs (``bn``, ``head_units``, ``head_epochs``, ``decay``) are fixed to
their default unless the mapping gives them a range or list. ``unfreeze_top`` is
counted in blocks from the top of the backbone, so its range is per backbone
(declared as ``"<backbone>/unfreeze_top"`` inside a conditional scope, because
block counts differ); its default range is every depth, 0 (head only) to all
blocks, and a range given by the user is clipped to each backbone's count.
kertransfer declares every knob itself, so fixing, narrowing or widening one
never creates a duplicate or an inactive twin in KerasTuner's space.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from kertransfer.errors import InvalidArgumentError, format_message, suggest
from kertransfer.validation import is_number


@dataclasses.dataclass(frozen=True)
class Knob:
    """One hyperparameter of the transfer search.

    Attributes:
        name: Its name in the space.
        kind: ``"int"``, ``"float"`` or ``"choice"``.
        default: The value used when the knob is fixed.
        values: The default range ``(low, high)`` or choice list when searched.
        log: Sample floats on a log scale.
        step: Step of a float or int range (None: continuous / 1).
        searched: Searched by default (else fixed to ``default``).
        help: One line for the docs.
    """

    name: str
    kind: str
    default: Any
    values: Any
    log: bool = False
    step: Any = None
    searched: bool = True
    help: str = ""


KNOBS: dict[str, Knob] = {k.name: k for k in (
    Knob("unfreeze_top", "int", 2, None,
         help="blocks trainable from the top in phase 2 (0: head only); per backbone"),
    Knob("head_learning_rate", "float", 1e-3, (1e-4, 1e-2), log=True,
         help="learning rate of phase 1 (head on the frozen backbone)"),
    Knob("fine_tune_learning_rate", "float", 1e-4, (1e-5, 1e-3), log=True,
         help="learning rate of phase 2 (the unfrozen blocks and the head)"),
    Knob("dropout", "float", 0.2, (0.0, 0.5), step=0.1,
         help="dropout before the classifier"),
    Knob("bn", "choice", "frozen", ["frozen", "trainable"], searched=False,
         help="BatchNorm mode of the unfrozen blocks"),
    Knob("head_units", "choice", 0, [0, 64, 128, 256], searched=False,
         help="width of a hidden dense layer in the head (0: none)"),
    Knob("head_epochs", "int", 2, (1, 5), searched=False,
         help="epochs of phase 1 (the epoch where unfreezing happens)"),
    Knob("decay", "float", 1.0, (1.0, 3.0), searched=False,
         help="discriminative rate decay per block in phase 2 (1: one rate)"),
)}


@dataclasses.dataclass(frozen=True)
class Decl:
    """How one knob is declared: fixed, a range, or choices."""

    kind: str  # "fixed" | "int" | "float" | "choice"
    value: Any = None
    low: Any = None
    high: Any = None
    values: tuple = ()
    log: bool = False
    step: Any = None


def _plain(spec: Any) -> Any:
    """Numpy scalars of a spec as Python values (KerasTuner declares only those)."""
    if isinstance(spec, (list, tuple)):
        return (tuple if isinstance(spec, tuple) else list)(_plain(v) for v in spec)
    return spec.item() if isinstance(spec, np.generic) else spec


def _bad(name: str, spec: Any, expected: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        format_message(f"Bad search space entry for {name!r}.", expected=expected,
                       received={f"space[{name!r}]": spec})
    )


def parse_space(space: dict | None) -> dict[str, Decl]:
    """Declarations for every knob: the defaults, changed by ``space``."""
    if space is None:
        space = {}
    if not isinstance(space, dict):
        raise InvalidArgumentError(
            format_message("space must be a mapping {knob: spec}.",
                           expected=f"keys among {sorted(KNOBS)}", received={"space": space})
        )
    unknown = [k for k in space if k not in KNOBS]
    if unknown:
        raise InvalidArgumentError(
            format_message(f"Unknown search space knob {unknown[0]!r}.",
                           expected=f"one of {sorted(KNOBS)}",
                           fix=suggest(str(unknown[0]), KNOBS),
                           received={"space": {k: space[k] for k in unknown}})
        )
    decls = {}
    for name, knob in KNOBS.items():
        spec = _plain(space.get(name, "__default__"))
        if spec == "__default__":
            if knob.searched and knob.values is not None:
                spec = tuple(knob.values) if knob.kind != "choice" else list(knob.values)
            elif knob.searched:  # unfreeze: every depth, resolved per backbone
                decls[name] = Decl("int", low=0, high=None)
                continue
            else:
                spec = None
        if spec is None:
            decls[name] = Decl("fixed", value=knob.default)
        elif isinstance(spec, list):
            if not spec:
                raise _bad(name, spec, "a non-empty list of values")
            if knob.kind in ("int", "float") and not all(is_number(v) for v in spec):
                raise _bad(name, spec, "a list of numbers")
            decls[name] = Decl("choice", values=tuple(spec)) if len(spec) > 1 \
                else Decl("fixed", value=spec[0])
        elif isinstance(spec, tuple):
            if knob.kind == "choice":
                raise _bad(name, spec, f"a list of choices, e.g. {list(knob.values)}")
            if len(spec) != 2 or not all(is_number(v) for v in spec) or spec[0] > spec[1]:
                raise _bad(name, spec, "a (low, high) tuple of numbers with low <= high")
            low, high = spec
            if knob.kind == "int":
                if int(low) != low or int(high) != high:
                    raise _bad(name, spec, "whole numbers")
                low, high = int(low), int(high)
            if knob.log and low <= 0:
                raise _bad(name, spec, "positive bounds (sampled on a log scale)")
            if low == high:
                decls[name] = Decl("fixed", value=low)
            else:
                decls[name] = Decl(knob.kind, low=low, high=high, log=knob.log,
                                   step=knob.step if knob.kind == "float" else None)
        else:
            if knob.kind in ("int", "float") and not is_number(spec):
                raise _bad(name, spec, f"a number, a (low, high) tuple or a list ({knob.help})")
            if knob.kind == "choice" and name == "bn" and spec not in knob.values:
                raise _bad(name, spec, f"one of {knob.values}")
            decls[name] = Decl("fixed", value=spec)
        _check_values(name, decls[name])
    return decls


def _check_values(name: str, decl: Decl) -> None:
    values = [decl.value] if decl.kind == "fixed" else (
        list(decl.values) if decl.kind == "choice" else [decl.low, decl.high])
    values = [v for v in values if v is not None]
    if name in ("unfreeze_top", "head_units", "head_epochs") and any(
            not is_number(v) or int(v) != v or v < 0 for v in values):
        raise _bad(name, decl.value if decl.kind == "fixed" else values,
                   "whole numbers >= 0")
    if name == "head_epochs" and any(v < 1 for v in values):
        raise _bad(name, values, "at least 1 epoch of head training")
    if name in ("head_learning_rate", "fine_tune_learning_rate") and any(v <= 0 for v in values):
        raise _bad(name, values, "positive learning rates")
    if name == "dropout" and any(not 0 <= v < 1 for v in values):
        raise _bad(name, values, "rates in [0, 1)")
    if name == "decay" and any(v < 1 for v in values):
        raise _bad(name, values, "decay >= 1 (1: the same rate for every block)")
    if name == "bn" and any(v not in ("frozen", "trainable") for v in values):
        raise _bad(name, values, '"frozen" or "trainable"')


def declare(hp, name: str, decl: Decl, *, high: int | None = None):
    """Declare ``decl`` under ``name`` on KerasTuner's ``hp`` and return its value."""
    if decl.kind == "fixed":
        return hp.Fixed(name, decl.value)
    if decl.kind == "choice":
        return hp.Choice(name, list(decl.values), ordered=False
                         if any(isinstance(v, str) for v in decl.values) else None)
    if decl.kind == "int":
        top = decl.high if decl.high is not None else high
        if high is not None:
            top = min(top, high)
        low = min(decl.low, top)
        if low == top:
            return hp.Fixed(name, int(low))
        return hp.Int(name, int(low), int(top))
    return hp.Float(name, float(decl.low), float(decl.high), step=decl.step,
                    sampling="log" if decl.log else "linear")
