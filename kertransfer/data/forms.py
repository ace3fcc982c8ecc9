"""What form data is in: `form_of` names it, and the checks of its content.

Every form the data protocol accepts (see `kertransfer.data.adapter`) is
recognised here, `Splits` (batches given for training, without held-out
splits) among them; anything else is refused with an `InvalidTypeError` (or a
`DataError` when the form is right and its content is not) whose message
names the argument and ends ``Received: name=...``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import keras
import numpy as np

from kertransfer.data.bundle import DataBundle
from kertransfer.data.memory import ArrayData
from kertransfer.errors import DataError, InvalidTypeError, format_message

__all__ = ["FORMS", "LABELLED_FORMS", "Splits", "form_of"]

FORMS = ("numpy images x, (x, y) arrays, a tf.data.Dataset of batches, a "
         "keras.utils.PyDataset, or a kertransfer DataBundle or ArrayData")
LABELLED_FORMS = ("(x, y) arrays, a tf.data.Dataset of (x, y) batches, a "
                  "keras.utils.PyDataset of (x, y) batches, or a kertransfer DataBundle "
                  "or ArrayData")
_FIX = ("kertransfer.data.load(...) reads images from a folder or a dataset name, "
        "kertransfer.data.from_arrays(x, y) splits arrays of any shape.")



# -- what the data is ------------------------------------------------------------------------

def _shown(data: Any) -> str:
    """What a message shows of a refused value: a string itself, else its type."""
    return data if isinstance(data, str) else type(data).__name__


def _refuse(argument: str, data: Any, expected: str = FORMS, problem: str | None = None,
            fix: str | None = _FIX, error: type = InvalidTypeError) -> NoReturn:
    raise error(format_message(
        problem or f"{argument} is a {type(data).__name__}, which kertransfer does not read "
                   "as data.",
        expected=expected, fix=fix, received={argument: _shown(data)}))


def _is_tf_dataset(data: Any) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (hasattr(value, "shape") and
                                             hasattr(value, "__array__") and
                                             not isinstance(value, (str, bytes)))


def _is_labels(value: Any) -> bool:
    return _is_array(value) or (isinstance(value, dict) and value and
                                all(_is_array(v) for v in value.values()))


def _is_batch(item: Any) -> bool:
    if _is_array(item):
        return True
    return isinstance(item, (tuple, list)) and 1 <= len(item) <= 3 and _is_array(item[0])


def _has_splits(data: Any) -> bool:
    return hasattr(data, "train") and hasattr(data, "class_names")


def form_of(data: Any, argument: str = "data") -> str:
    """The form of ``data``, or an `InvalidTypeError` naming ``argument``.

    Returns:
        ``"images"`` (an array alone), ``"xy"``, ``"tf_dataset"``,
        ``"py_dataset"``, ``"bundle"`` (a `DataBundle`), ``"array_data"``,
        ``"splits"`` (a `Splits`), ``"list"`` (of batches) or ``"iterator"``.
    """

    if isinstance(data, DataBundle):
        return "bundle"
    if isinstance(data, ArrayData):
        return "array_data"
    if isinstance(data, Splits):
        return "splits"
    if _has_splits(data):  # a bundle-like object of the user's, with as_numpy or not
        return "bundle" if not hasattr(data, "input_shape") else "array_data"
    if isinstance(data, keras.utils.PyDataset):
        return "py_dataset"
    if _is_tf_dataset(data):
        return "tf_dataset"
    if _is_array(data):
        return "images"
    if isinstance(data, tuple):
        if len(data) == 2 and _is_array(data[0]) and _is_labels(data[1]):
            return "xy"
        _refuse(argument, data, problem=f"{argument} is a tuple, and only (x, y) arrays are "
                "read as data.", expected="a tuple of two arrays (inputs, labels)")
    if isinstance(data, list):
        if all(_is_batch(item) for item in data):
            return "list"
        _refuse(argument, data, problem=f"{argument} is a list, and a list is read as a list of "
                "batches (arrays, or (x, y) pairs of arrays).",
                fix="Pass (x, y) as a tuple of numpy arrays, or np.asarray(...) the images. "
                    + _FIX)
    if isinstance(data, Iterator):
        return "iterator"
    _refuse(argument, data)


def _check_images(x: Any, argument: str) -> np.ndarray | Any:
    shape = tuple(getattr(x, "shape", ()))
    dtype = np.dtype(getattr(x, "dtype", "float32")) if isinstance(x, np.ndarray) else None
    if len(shape) < 2 or shape[0] == 0:
        raise DataError(format_message(
            f"{argument} must hold examples, an array [N, ...] with N > 0.",
            expected="e.g. images [N, height, width, channels]",
            received={argument: f"array of shape {shape}"}))
    numeric = dtype is None or np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)
    if not numeric:
        raise DataError(format_message(
            f"{argument} must be numeric.", expected="an integer or float array",
            received={argument: f"array of dtype {dtype}"}))
    return x


def _check_xy(data: tuple, argument: str) -> tuple:
    x, y = data
    _check_images(x, argument)
    rows = [len(v) for v in (y.values() if isinstance(y, dict) else [y])]
    if any(n != len(x) for n in rows):
        raise DataError(format_message(
            f"{argument} has {len(x)} inputs and {rows[0] if len(set(rows)) == 1 else rows} "
            "labels.", expected="one label per input", received={argument: "(x, y)"}))
    return x, y



@dataclasses.dataclass(repr=False, eq=False)
class Splits:
    """Batches with no held-out splits (a dataset or ``PyDataset`` given for training).

    Attributes:
        train: The batches, as given.
        val: Validation batches, or None.
        test: None.
    """

    train: Any
    val: Any = None
    test: Any = None
    class_names: Any = None
    augmentation: Any = None
    tasks: Any = None
    task_tables: Any = None
    source: str = "batches"

    def __repr__(self) -> str:
        return f"Splits(train={type(self.train).__name__}, val={type(self.val).__name__})"
