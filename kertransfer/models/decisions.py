"""How a classification head's probabilities become classes: the one decision rule.

A head's activation and its number of units give its rule
(`decision_rule`):

- ``"argmax"`` (softmax and logits heads): the most probable class;
- ``"binary"`` (one sigmoid unit): two classes, negative (index 0) and
  positive (index 1, given when ``p > threshold``);
- ``"multi_label"`` (several sigmoid units): every class whose probability is
  above the threshold, possibly none.

`decided` applies the rule to a batch of probabilities; `decide` ranks each
row's classes the way predictions are reported. Exports
(`kertransfer.export`: their metadata and `kertransfer.serving.predict` on
every format), run reports (`kertransfer.insight.report.evaluate_run`) and Grad-CAM
(`kertransfer.insight.gradcam.grad_cam`) all read heads through this module.
"""

from __future__ import annotations

import numpy as np

from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.validation import is_number

__all__ = ["DECISIONS", "DEFAULT_THRESHOLD", "check_threshold", "decide", "decided",
           "decision_rule", "head_activation", "head_rule", "name_count"]

DEFAULT_THRESHOLD = 0.5
DECISIONS = ("argmax", "binary", "multi_label")


def decision_rule(activation: str | None, units: int) -> str:
    """How a head's probabilities become classes.

    ``"argmax"`` for softmax and logits heads (the most probable class);
    ``"binary"`` for one sigmoid unit (two classes: 1 when ``p > threshold``,
    else 0); ``"multi_label"`` for several sigmoid units (every class whose
    probability is above the threshold).
    """
    if activation == "sigmoid":
        return "binary" if units == 1 else "multi_label"
    return "argmax"


def name_count(rule: str, units: int) -> int:
    """How many class names a head takes: two for a binary head, else one per unit."""
    return 2 if rule == "binary" else units


def head_activation(model, head: str | None) -> str:
    """The activation a head ends with (``softmax``, ``sigmoid`` or ``logits``).

    Read from the model's ``activation`` (a `kertransfer.TransferModel`, also
    once loaded from its ``.keras`` file); ``softmax`` for any other model.
    """
    activation = getattr(model, "activation", "softmax")
    if isinstance(activation, dict):
        activation = activation.get(head, "softmax")
    return activation if isinstance(activation, str) else "softmax"


def head_rule(model, head: str | None, units: int) -> str:
    """The decision rule of one of ``model``'s heads, of ``units`` outputs."""
    return decision_rule(head_activation(model, head), units)


def check_threshold(value, arg: str = "threshold") -> float:
    """``value`` as a float, when it is a probability strictly between 0 and 1.

    Raises:
        InvalidArgumentError: It is not.
    """
    if not is_number(value) or not 0 < value < 1:
        raise InvalidArgumentError(
            format_message(f"{arg} must be a probability strictly between 0 and 1: a sigmoid "
                           "head's class is given when its probability is above it.",
                           expected="e.g. 0.5 (the default)", received={arg: value})
        )
    return float(value)


def decided(probs, rule: str, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The classes ``probs`` (``[batch, units]``) decide under ``rule``.

    Returns:
        ``argmax`` and ``binary``: the class index of each row, int64 ``[batch]``
        (a binary row is 1 when ``p > threshold``); ``multi_label``: a boolean
        mask ``[batch, units]`` of the classes above the threshold.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if rule == "binary":
        return (probs[..., 0] > threshold).astype("int64")
    if rule == "multi_label":
        return probs > threshold
    return probs.argmax(axis=-1).astype("int64")


def decide(probs, rule: str, threshold: float = DEFAULT_THRESHOLD) -> list[list]:
    """The classes each row of ``probs`` decides: ``[[(index, probability), ...], ...]``.

    ``argmax``: every class, most probable first. ``binary``: the decided
    class (1 when ``p > threshold``), then the other, each with its own
    probability (``p`` or ``1 - p``). ``multi_label``: the classes above the
    threshold, most probable first (none when no class is).
    """
    probs = np.asarray(probs, dtype=np.float64)
    classes = decided(probs, rule, threshold)
    rows = []
    for row, chosen in zip(probs, classes):
        if rule == "binary":
            p = float(row[0])
            first = int(chosen)
            rows.append([(first, p if first else 1.0 - p), (1 - first, 1.0 - p if first else p)])
            continue
        order = np.argsort(-row, kind="stable")
        if rule == "multi_label":
            order = [j for j in order if chosen[j]]
        rows.append([(int(j), float(row[j])) for j in order])
    return rows
