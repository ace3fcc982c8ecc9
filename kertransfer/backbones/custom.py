"""A user's own ``keras.Model`` as a backbone: a graph of layers that freezing can cut.

`build_transfer_model(backbone=model)` takes any ``keras.Model``; what its
blocks are depends on how the model was written:

- **Functional** (``keras.Model(inputs, outputs)``, keras.applications,
  keras-hub backbones): used as it is; each top-level layer that owns weights
  opens a block (`kertransfer.backbones.blocks_from_model`). A model whose
  input size is not fixed is called on ``keras.Input(input_shape)`` inside a
  new functional model, of which it is the one block.
- **Sequential**: the same; one without an ``Input`` is built on
  ``input_shape`` first.
- **Subclassed** (a ``keras.Model`` subclass with its own ``call``): Keras
  cannot see the order in which ``call`` uses its layers, so kertransfer
  cannot cut it. It is called on ``keras.Input(input_shape)`` inside a
  functional model and is **one block**, named after the model: ``freeze="all"``
  and ``"none"`` (or 0 and 1 blocks) work, BatchNorm layers inside it follow
  the ``bn`` mode, feature caching and the head work as for any backbone. To
  freeze part of it, write it with the functional API (or expose its parts
  as a functional model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from kertransfer.errors import (
    IncompatibleInputError,
    InvalidArgumentError,
    InvalidTypeError,
    format_message,
)

__all__ = ["adapt_model", "is_subclassed"]


def _graph_inputs(model: keras.Model) -> list | None:
    """The model's symbolic inputs; None for a subclassed or an unbuilt Sequential model."""
    try:
        return list(model.inputs) or None
    except (AttributeError, ValueError):  # subclassed: no attribute; Sequential: not built
        return None


def is_subclassed(model: keras.Model) -> bool:
    """Whether ``model`` is a subclassed model (its own ``call``, no layer graph)."""
    return not isinstance(model, keras.Sequential) and _graph_inputs(model) is None


def _wrap(model: keras.Model, shape: tuple[int, ...]) -> keras.Model:
    """``model`` called on ``keras.Input(shape)``: a functional model of one block."""
    inputs = keras.Input(shape)
    try:
        outputs = model(inputs)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's call()
        raise InvalidTypeError(
            format_message(
                f"Calling the backbone on keras.Input({shape}) failed "
                f"({type(exc).__name__}: {exc}).",
                expected="a model whose call() works on symbolic Keras tensors "
                "(keras.ops and layers, no NumPy on the values)",
                received={"backbone": type(model).__name__},
            )
        ) from exc
    if not isinstance(outputs, keras.KerasTensor):
        raise InvalidTypeError(
            format_message(
                "The backbone must return one tensor (the features the head pools).",
                expected="a model whose call() returns a single tensor",
                fix="Return the feature map only, e.g. `return features`.",
                received={"backbone": type(model).__name__},
            )
        )
    return keras.Model(inputs, outputs, name=model.name)


def adapt_model(model: keras.Model, input_shape: Sequence[int] | None,
                blocks: Sequence[Any] | None = None) -> tuple[keras.Model, tuple[int, ...]]:
    """A functional backbone for a user's ``model`` and its input shape (see module doc).

    Args:
        model: A functional, Sequential or subclassed ``keras.Model``.
        input_shape: The model input's shape without the batch axis, or None
            for the model's own (needed when it has none).
        blocks: The ``blocks=`` override of `build_transfer_model`, if any.

    Returns:
        ``(network, shape)``: a functional model (``model`` itself when it is
        one with a fixed input size) and the input shape.

    Raises:
        InvalidArgumentError: The input shape is needed and missing, or
            ``blocks`` is given for a subclassed model.
        IncompatibleInputError: ``input_shape`` differs from the model's own.
        InvalidTypeError: A subclassed model cannot be called on a symbolic
            input, or returns more than one tensor.
    """
    subclassed = is_subclassed(model)
    if isinstance(model, keras.Sequential) and _graph_inputs(model) is None \
            and input_shape is not None:
        model.build((None, *input_shape))  # a Sequential model without an Input
    inputs = _graph_inputs(model)
    model_shape = tuple(model.input_shape[1:]) if inputs else None
    if input_shape is None and (model_shape is None or None in model_shape):
        what = ("A subclassed model has no input shape of its own"
                if subclassed else "The backbone's input size is not fixed")
        raise InvalidArgumentError(
            format_message(
                f"{what}, so input_shape is needed.",
                expected="input_shape=(height, width, channels)",
                received={"input_shape": input_shape},
            )
        )
    shape = tuple(input_shape) if input_shape is not None else model_shape
    if model_shape is not None and None not in model_shape and shape != model_shape:
        raise IncompatibleInputError(
            format_message(
                "input_shape differs from the backbone's own input shape.",
                expected=f"{model_shape} or None",
                received={"input_shape": shape},
            )
        )
    if subclassed and blocks:
        raise InvalidArgumentError(
            format_message(
                f"A subclassed backbone is one block ({model.name!r}): kertransfer cannot see "
                "the order in which its call() uses its layers, so blocks= cannot split it.",
                fix="Drop blocks=, or write the backbone with the functional API to freeze "
                "it by block.",
                received={"backbone": type(model).__name__},
            )
        )
    if subclassed or None in model_shape:
        return _wrap(model, shape), shape
    return model, shape
