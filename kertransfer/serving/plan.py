"""What an export is asked for, checked before anything is written.

`make_plan` checks that the model classifies fixed-size RGB images and
describes each head (class names, activation, decision threshold); the
other checks cover the format (and its converter), the version number, the
parity tolerance (`TOLERANCES` by default) and the sample images of the check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np

from kertransfer.errors import (
    IncompatibleInputError,
    InvalidArgumentError,
    InvalidTypeError,
    format_message,
    suggest,
)
from kertransfer.models.decisions import (
    DEFAULT_THRESHOLD,
    check_threshold,
    decision_rule,
    head_activation,
    name_count,
)
from kertransfer.serving import formats
from kertransfer.serving.formats import FORMATS, Head, Plan
from kertransfer.serving.runtime import head_names
from kertransfer.validation import check_int, check_number

__all__ = ["TOLERANCES", "check_format", "check_samples", "check_tolerance", "check_version",
           "make_plan"]

TOLERANCES = {"saved_model": 1e-5, "keras": 1e-5, "tflite": 1e-4, "onnx": 1e-4}


def check_format(fmt) -> str:
    """``fmt`` if it is a known format this backend writes and its converter is installed."""
    if fmt not in FORMATS:
        raise InvalidArgumentError(
            format_message(f"Unknown export format.{suggest(str(fmt), FORMATS)}",
                           expected=f"one of {', '.join(FORMATS)}", received={"format": fmt})
        )
    if fmt != "keras" and keras.backend.backend() != "tensorflow":
        raise InvalidArgumentError(
            format_message(f"format={fmt!r} is written by TensorFlow's converters, which need "
                           "the TensorFlow backend.",
                           fix="Run with KERAS_BACKEND=tensorflow (format='keras' works on "
                               "every backend).",
                           received={"format": fmt, "backend": keras.backend.backend()})
        )
    formats.require(fmt)
    return fmt


def _names_for(head: str | None, units: int, activation: str, given) -> list[str]:
    arg = "class_names" if head is None else f"class_names[{head!r}]"
    rule = decision_rule(activation, units)
    count = name_count(rule, units)
    if given is None:
        return [str(i) for i in range(count)]
    if isinstance(given, str) or not isinstance(given, Sequence) or len(given) != count:
        if rule == "binary":
            problem = (f"The head is one sigmoid unit, a binary classifier: {arg} takes two "
                       "names, the negative class first (index 0), then the positive one "
                       "(index 1, given when its probability is above the threshold).")
            expected = "2 names, e.g. ['no', 'yes']"
        else:
            kind = "sigmoid (multi-label) " if rule == "multi_label" else ""
            problem = f"{arg} must list one name per output of the {kind}head."
            expected = f"{units} names"
        raise InvalidArgumentError(format_message(problem, expected=expected,
                                                  received={arg: given}))
    return [str(c) for c in given]


def _thresholds(threshold, names: list, activations: dict) -> dict:
    """``{head: threshold}`` for every head (only sigmoid heads use theirs)."""
    if threshold is None:
        return {h: DEFAULT_THRESHOLD for h in names}
    if not isinstance(threshold, Mapping):
        value = check_threshold(threshold, "threshold")
        return {h: value for h in names}
    sigmoid = [h for h in names if h is not None and activations[h] == "sigmoid"]
    if names == [None] or set(threshold) - set(sigmoid):
        raise InvalidArgumentError(
            format_message("threshold names heads that are not sigmoid heads of the model "
                           "(a threshold decides only sigmoid heads; pass one number for a "
                           "model with one head).",
                           expected=f"keys among {sigmoid}" if sigmoid else "one number",
                           received={"threshold": dict(threshold)})
        )
    return {h: check_threshold(threshold[h], f"threshold[{h!r}]") if h in threshold
            else DEFAULT_THRESHOLD for h in names}


def make_plan(model, class_names=None, threshold=None) -> Plan:
    """Check that ``model`` classifies fixed-size RGB images; describe its heads.

    ``threshold``: one probability, or ``{head: probability}``, that a sigmoid
    head's class must exceed (default 0.5).
    """
    if not isinstance(model, keras.Model):
        raise InvalidTypeError(
            format_message("export needs a Keras model or the path of one.",
                           expected="a model from build_transfer_model, a keras.Model, a "
                                    ".keras file or a run folder",
                           received={"model": type(model).__name__})
        )
    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4 or shape[-1] != 3 or shape[1] is None \
            or shape[2] is None:
        raise IncompatibleInputError(
            format_message("export needs a model of fixed-size RGB images.",
                           expected="one input of shape (None, H, W, 3) with H and W set",
                           received={"model.input_shape": shape})
        )
    names = head_names(model)
    out_shapes = model.output_shape
    if names == [None]:
        out_shapes = {None: out_shapes if isinstance(out_shapes, tuple) else out_shapes[0]}
        given = {None: class_names}
    else:
        structure = getattr(model, "output", None)
        if isinstance(structure, Mapping):  # Keras lists output_shape by layer name
            out_shapes = {str(k): tuple(v.shape) for k, v in structure.items()}
        elif isinstance(out_shapes, Mapping):
            out_shapes = dict(out_shapes)
        else:
            out_shapes = dict(zip(names, out_shapes))
        if class_names is not None and not isinstance(class_names, Mapping):
            raise InvalidArgumentError(
                format_message("A model with several heads takes class_names per head.",
                               expected=f"a dict with keys {names}",
                               received={"class_names": class_names})
            )
        given = dict(class_names or {})
        unknown = set(given) - set(names)
        if unknown:
            raise InvalidArgumentError(
                format_message("class_names names heads the model does not have.",
                               expected=f"keys among {names}",
                               received={"class_names": sorted(unknown)})
            )
    activations = {head: head_activation(model, head) for head in names}
    thresholds = _thresholds(threshold, names, activations)
    heads = []
    for head in names:
        units = int(out_shapes[head][-1])
        heads.append(Head(head, _names_for(head, units, activations[head], given.get(head)),
                          activations[head], units, thresholds[head]))
    return Plan(model, int(shape[1]), int(shape[2]), heads)


def check_samples(plan: Plan, samples) -> np.ndarray:
    """The check's images as float32 (default: black, white and two noise images)."""
    if samples is None:
        rng = np.random.default_rng(0)
        noise = rng.integers(0, 256, (2, plan.height, plan.width, 3))
        flat = np.stack([np.zeros_like(noise[0]), np.full_like(noise[0], 255)])
        return np.concatenate([flat, noise]).astype("float32")
    x = np.asarray(samples, dtype="float32")
    if x.ndim != 4 or x.shape[1:] != (plan.height, plan.width, 3) or len(x) == 0:
        raise IncompatibleInputError(
            format_message("samples must be a batch of images of the model's input size.",
                           expected=f"an array [n, {plan.height}, {plan.width}, 3], n >= 1, "
                                    "values in 0-255",
                           received={"samples.shape": np.shape(samples)})
        )
    return x


def check_version(version) -> int | None:
    """``version`` as an ``int``, or refuse one that is not a positive integer (None is the
    next free one)."""
    return check_int(version, "version", minimum=1, allow_none=True,
                     fix="None takes the next free version.")


def check_tolerance(tolerance, fmt) -> float:
    """The parity tolerance: ``tolerance``, or the format's default (`TOLERANCES`)."""
    if tolerance is None:
        return TOLERANCES[fmt]
    return check_number(tolerance, "tolerance", minimum=0,
                        fix="It is the largest absolute difference allowed between the "
                            "export's outputs and the model's.")
