"""Data in memory: `gather` runs a function over every batch and keeps its outputs;
`as_arrays`, `split_arrays` and `example_shape` read arrays and shapes.

`gather` keeps only the function's outputs (features of any size of data);
`as_arrays` is for algorithms that need every row in memory, and
materialises only arrays and in-memory data unless asked to
(``streams=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from kertransfer.data.batches import _images_of, as_batches, iterate, num_batches
from kertransfer.data.forms import _check_images, _check_xy, _shown, form_of
from kertransfer.errors import DataError, InvalidTypeError, format_message

__all__ = ["as_arrays", "each_batch", "example_shape", "gather", "split_arrays"]


def _numpy(value):
    if isinstance(value, dict):
        return {k: _numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_numpy(v) for v in value)
    return np.asarray(keras.ops.convert_to_numpy(value)) if not isinstance(value, np.ndarray) \
        else value


def _concat(parts: list):
    first = parts[0]
    if isinstance(first, dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_concat([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate(parts)


def each_batch(data: Any, argument: str = "data", *, labels: bool | str = True,
               batch_size: int | None = None, split: str = "train",
               verbose: int = 0) -> Iterator[tuple]:
    """Yield ``(x, y)`` numpy batches of ``data`` for one pass, unaugmented and in a
    fixed order where the data has one (``y`` None without labels; a dict per task).

    Args: as `gather`; ``verbose`` shows a Keras progress bar over the batches.

    Raises:
        DataError: If the data yields no batch, or labels in some batches only.
    """
    form = form_of(data, argument)
    want = labels is True or (labels == "optional" and form != "images")
    batches = as_batches(data, argument, batch_size=batch_size, images_only=not want,
                         labels=labels is True, split=split)
    count = labelled = 0
    bar = keras.utils.Progbar(num_batches(batches), unit_name="batch") if verbose else None
    for batch in iterate(batches):
        count += 1
        if bar is not None:
            bar.update(count)
        y = None
        if want and isinstance(batch, (tuple, list)) and len(batch) >= 2:
            labelled += 1
            y = _numpy(batch[1])
        if labelled and labelled != count:
            break
        yield _numpy(_images_of(batch)), y
    if count == 0:
        raise DataError(format_message(f"{argument} yielded no batch.",
                                       expected="non-empty data",
                                       received={argument: _shown(data)}))
    if labelled and labelled != count:
        raise DataError(format_message(
            f"{argument} yields some batches with labels and some without.",
            expected="(x, y) in every batch", received={argument: _shown(data)}))


def gather(data: Any, argument: str = "data", fn: Callable | None = None, *,
           labels: bool | str = True, batch_size: int | None = None, split: str = "train",
           verbose: int = 0):
    """Run ``fn`` over the inputs of every batch and gather its outputs with the labels.

    One pass, unaugmented and in a fixed order where the data has one; only
    ``fn``'s outputs (features, predictions) are kept in memory, so it works on
    data of any size.

    Args:
        data: Any accepted form.
        argument: The caller's argument name, for messages.
        fn: Numpy inputs ``[B, ...]`` to an array ``[B, ...]`` (or a tuple or
            dict of them). None keeps no outputs (a pass over the labels).
        labels: True: the data must have labels; False: labels are ignored;
            ``"optional"``: the labels when the data has them, else None.
        batch_size: See `as_batches`.
        split: The split of a `DataBundle` or `ArrayData`.
        verbose: A Keras progress bar over the batches.

    Returns:
        ``(outputs, labels)``: ``fn``'s outputs concatenated (None without
        ``fn``) and the labels ``[N]`` (a dict per task; None without labels).

    Raises:
        DataError: If the data yields no batch.
    """
    outs, ys = [], []
    for x, y in each_batch(data, argument, labels=labels, batch_size=batch_size, split=split,
                           verbose=verbose):
        if y is not None:
            ys.append(y)
        if fn is not None:
            outs.append(_numpy(fn(x)))
    return (_concat(outs) if fn is not None else None), (_concat(ys) if ys else None)


def materialise(data: Any, argument: str = "data", *, split: str = "train",
                labels: bool | str = True):
    """Every example of a bundle's split (`DataBundle.as_numpy`) or of a stream in
    memory, ``(x, y)``: the one place where data not given as arrays is loaded whole."""
    if hasattr(data, "as_numpy") and form_of(data, argument) in ("bundle", "array_data"):
        return data.as_numpy(split)
    return gather(data, argument, fn=lambda batch: batch, labels=labels, split=split)


def as_arrays(data: Any, argument: str = "data", *, split: str = "train",
              labels: bool | str = True, streams: bool = False):
    """``data`` as numpy arrays, for algorithms that need every row in memory.

    Arrays are used as they are; a `DataBundle` or `ArrayData` gives one
    split (`DataBundle.as_numpy`: unaugmented, in source order). A stream (a
    dataset, a ``PyDataset``, a list or generator of batches) is concatenated
    only with ``streams=True``: large data is meant to stream (see `gather`).

    Args:
        data: Any accepted form.
        argument: The caller's argument name, for messages.
        split: The split of a bundle.
        labels: True: return ``(x, y)`` and refuse data without labels;
            False: return ``x``; ``"optional"``: ``(x, y or None)``.
        streams: Concatenate the batches of a stream.

    Returns:
        ``(x, y)``, or ``x`` with ``labels=False``.
    """
    form = form_of(data, argument)
    if labels is True and form == "images":
        as_batches(data, argument, labels=True)  # raises, with the message of every caller
    if form == "images":
        x, y = np.asarray(_check_images(data, argument)), None
    elif form == "xy":
        x, y = _check_xy(data, argument)
        x = np.asarray(x)
        y = {k: np.asarray(v) for k, v in y.items()} if isinstance(y, dict) else np.asarray(y)
    elif form in ("bundle", "array_data") and hasattr(data, "as_numpy") or streams:
        x, y = materialise(data, argument, split=split, labels=labels)
    else:
        raise DataError(format_message(
            f"{argument} is a stream of batches, and this needs every example in memory.",
            expected="(x, y) arrays, a DataBundle or an ArrayData",
            fix="Pass the arrays themselves, or load the data with kertransfer.data.",
            received={argument: _shown(data)}))
    if labels is False:
        return x
    return x, y


def example_shape(data: Any, argument: str = "data") -> tuple:
    """The shape of one example (one image: ``(height, width, channels)``)."""
    form = form_of(data, argument)
    if form == "array_data" and getattr(data, "input_shape", None):
        return tuple(data.input_shape)
    if form == "bundle" and getattr(data, "image_size", None):
        return (*data.image_size, 3)
    if form == "tf_dataset":
        spec = data.element_spec
        spec = spec.get("image", spec) if isinstance(spec, dict) else \
            spec[0] if isinstance(spec, tuple) else spec
        return tuple(spec.shape[1:])
    if form in ("images", "xy"):
        x = data if form == "images" else data[0]
        return tuple(int(d) for d in _check_images(x, argument).shape[1:])
    batches = as_batches(data, argument, images_only=True)
    for batch in iterate(batches):
        return tuple(int(d) for d in np.shape(batch)[1:])
    raise DataError(format_message(f"{argument} yielded no batch.", expected="non-empty data",
                                   received={argument: _shown(data)}))


def split_arrays(data: Any, split: str = "train", argument: str = "data",
                 what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split of a `DataBundle` or `ArrayData`, or the ``(x, y)``
    arrays themselves (through `as_arrays`); anything
    else is refused naming ``argument``."""

    if form_of(data, argument) not in ("bundle", "array_data", "xy"):
        raise InvalidTypeError(format_message(
            f"{argument} must be a DataBundle, ArrayData or (x, y) arrays{what}.",
            received={argument: type(data).__name__}))
    x, y = as_arrays(data, argument, split=split)
    return np.asarray(x, "float32"), y
