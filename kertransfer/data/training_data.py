"""Data as training takes it, with splits: `as_training_data`, `as_validation_data`
and `unaugmented_train` (the training split for BatchNorm statistics)."""

from __future__ import annotations

from typing import Any

from kertransfer.data.batches import as_batches
from kertransfer.data.forms import Splits, _check_xy, _shown, form_of
from kertransfer.data.memory import from_arrays
from kertransfer.errors import InvalidTypeError, format_message

__all__ = ["as_training_data", "as_validation_data", "unaugmented_train"]


def as_training_data(data: Any, argument: str = "data") -> Any:
    """``data`` as something with splits (``.train``, ``.val``, ``.test``).

    A `DataBundle` or `ArrayData` passes as it is; ``(x, y)`` arrays become an
    `ArrayData` (every row for training); a ``tf.data.Dataset`` or
    ``keras.utils.PyDataset`` of ``(x, y)`` batches becomes a `Splits` with
    only ``train``. Anything else (arrays without labels, lists) is refused.
    """
    form = form_of(data, argument) if not isinstance(data, list) else "list"
    if form in ("bundle", "array_data", "splits"):
        return data
    if form == "xy" and not isinstance(data[1], dict):
        return from_arrays(data[0], data[1])  # its own checks and messages
    if form in ("tf_dataset", "py_dataset"):
        return Splits(as_batches(data, argument, labels=True))
    raise InvalidTypeError(format_message(
        f"{argument} must be a DataBundle, ArrayData or (x, y) arrays, or a dataset of "
        "(x, y) batches.",
        fix="kertransfer.data.load(...) for images, kertransfer.data.from_arrays(x, y, ...) "
            "for any other inputs.",
        received={argument: _shown(data)}))


def as_validation_data(data: Any, argument: str = "val") -> Any:
    """Validation data as ``fit``'s ``validation_data`` takes it, or None.

    A `DataBundle` or `ArrayData` gives its ``val`` split; ``(x, y)`` arrays,
    a dataset or a ``PyDataset`` of ``(x, y)`` batches are used as they are.
    """
    if data is None:
        return None
    form = form_of(data, argument)
    if form in ("bundle", "array_data", "splits"):
        return data.val
    if form == "xy":
        return _check_xy(data, argument)
    return as_batches(data, argument, labels=True)


def unaugmented_train(data: Any):
    """The training split without augmentation, as image batches (for BN statistics).

    Batches of at least 64 for a bundle or ArrayData (stable variance
    estimates); a `Splits` gives its batches as they are.
    """
    if isinstance(data, Splits):
        return as_batches(data.train, "data", images_only=True)
    size = max(int(getattr(data, "batch_size", 64) or 64), 64)
    return as_batches(data, "data", images_only=True, batch_size=size)
