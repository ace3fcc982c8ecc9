"""Data as batches for a streaming pass: `as_batches`, `num_batches`, `iterate`.

`as_batches` serves BatchNorm statistics, features, a learning-rate test and
training: a ``tf.data.Dataset`` for TensorFlow inputs and bundles, else a
``keras.utils.PyDataset`` (a generator for a generator), which ``fit`` and
``predict`` take and a ``for`` loop iterates. Nothing is materialised, and
TensorFlow is imported only when the data is TensorFlow's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from kertransfer.data.forms import (
    LABELLED_FORMS,
    _check_images,
    _check_xy,
    _is_tf_dataset,
    _refuse,
    _shown,
    form_of,
)
from kertransfer.errors import DataError, InvalidArgumentError, format_message
from kertransfer.validation import check_int

__all__ = ["as_batches", "iterate", "num_batches"]


class _ArrayBatches(keras.utils.PyDataset):
    """Batches of in-memory arrays: ``x`` or ``(x, y)``; reshuffled every epoch when
    ``shuffle`` (by a generator of its own, seeded: no global state is read or set)."""

    def __init__(self, x, y=None, batch_size: int = 32, shuffle: bool = False,
                 seed: int | None = 0):
        super().__init__()
        self.x, self.y, self.batch_size, self.shuffle = x, y, int(batch_size), shuffle
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(x)) if shuffle else None

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        if self._order is not None:
            rows = self._order[rows]
        x = np.asarray(self.x[rows])
        if self.y is None:
            return x
        y = ({k: np.asarray(v)[rows] for k, v in self.y.items()} if isinstance(self.y, dict)
             else np.asarray(self.y)[rows])
        return x, y

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._rng.permutation(len(self.x))


class _Mapped(keras.utils.PyDataset):
    """Another PyDataset (or a list of batches) with ``fn`` applied to each batch."""

    def __init__(self, inner, fn: Callable):
        super().__init__()
        self.inner, self.fn = inner, fn

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.fn(self.inner[index])

    def on_epoch_end(self) -> None:
        end = getattr(self.inner, "on_epoch_end", None)
        if end is not None:
            end()


def _images_of(batch):
    if isinstance(batch, (tuple, list)):
        return batch[0]
    if isinstance(batch, dict) and "image" in batch:  # TFDS-style {"image", "label"}
        return batch["image"]
    return batch


def _labelled(argument: str, data: Any):
    def check(batch):
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise DataError(format_message(
                f"{argument} yields batches without labels, and labels are needed here.",
                expected=LABELLED_FORMS, received={argument: _shown(data)}))
        return batch
    return check


def _spec_is_labelled(spec) -> bool:
    return isinstance(spec, tuple) and len(spec) >= 2


def _bundle_batches(data, split: str, argument: str, batch_size: int | None, training: bool):
    """A split of a DataBundle: as it is (training), or unaugmented in source order."""
    ds = getattr(data, split, None)
    if ds is None:
        raise InvalidArgumentError(format_message(
            f"{argument} has no {split!r} split.",
            fix="Load the data with that split's fraction > 0.", received={argument: repr(data)}))
    unbatched = getattr(data, "_unbatched", None)
    if training or unbatched is None:
        return ds
    import tensorflow as tf

    clean = unbatched(split)
    tables = getattr(data, "task_tables", None)
    if tables:  # labels per task, as the bundle's splits yield them
        lookups = {k: None if t is None else tf.constant(t) for k, t in tables.items()}

        def relabel(x, y):
            y = tf.cast(y, tf.int32)
            return x, {k: y if t is None else tf.gather(t, y) for k, t in lookups.items()}

        clean = clean.map(relabel)
    return clean.batch(int(batch_size or data.batch_size)).prefetch(tf.data.AUTOTUNE)


def as_batches(data: Any, argument: str = "data", *, batch_size: int | None = None,
               images_only: bool = False, labels: bool = False, split: str = "train",
               training: bool = False, seed: int | None = 0):
    """``data`` as batches for a streaming pass (or for ``fit``/``predict``).

    Args:
        data: Any accepted form (see `kertransfer.data.adapter`).
        argument: The caller's argument name, for messages.
        batch_size: Batch size for arrays (default 32) and for a bundle's
            unaugmented split (default the bundle's). Batched data keeps its
            own batches.
        images_only: Yield the inputs ``x`` alone (labels dropped).
        labels: Refuse data without labels (arrays alone, image-only batches).
        split: The split of a `DataBundle` or `ArrayData`.
        training: The batches as ``fit`` trains on them: a bundle's or
            ArrayData's split as it is (shuffled, augmented), arrays reshuffled
            every pass with ``seed``. Otherwise (default) each example once, in
            a fixed order and unaugmented: for statistics and features.
        seed: Seed of the shuffling of arrays when ``training`` (its own generator).

    Returns:
        A ``tf.data.Dataset`` (TensorFlow inputs and bundles), a
        ``keras.utils.PyDataset``, or a generator (for a generator).

    Raises:
        InvalidTypeError: If ``data`` is not an accepted form, or has no
            labels and ``labels`` is set.
        DataError: If its content does not fit (empty, mismatched labels,
            batches without labels when labels are needed).
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1, allow_none=True)
    form = form_of(data, argument)
    if labels and form == "images":
        _refuse(argument, data, expected=LABELLED_FORMS,
                problem=f"{argument} must be labelled data: it holds inputs without labels, "
                        "and labels are needed here.",
                fix="Pass (x, y) with one label per input.")
    if form in ("bundle", "array_data", "splits") and split not in ("train", "val", "test"):
        raise InvalidArgumentError(format_message(
            f"Unknown split {split!r}.", expected="'train', 'val' or 'test'",
            received={"split": split}))
    if form == "images":
        _check_images(data, argument)
        return _ArrayBatches(data, None, batch_size or 32, shuffle=training, seed=seed)
    if form == "xy":
        x, y = _check_xy(data, argument)
        return _ArrayBatches(x, None if images_only else y, batch_size or 32,
                             shuffle=training, seed=seed)
    if form == "array_data":
        batches = getattr(data, split, None)
        if batches is None:
            return _bundle_batches(data, split, argument, batch_size, training)  # raises
        if not training and hasattr(batches, "x"):
            return _ArrayBatches(batches.x, None if images_only else batches.y,
                                 batch_size or data.batch_size)
        return _Mapped(batches, _images_of) if images_only else batches
    if form in ("bundle", "splits"):
        ds = _bundle_batches(data, split, argument, batch_size, training)
        if not images_only:
            return ds
        return ds.map(lambda x, *_: x) if _is_tf_dataset(ds) else as_batches(
            ds, argument, images_only=True)
    if form == "tf_dataset":
        spec = data.element_spec
        if labels and not _spec_is_labelled(spec):
            raise DataError(format_message(
                f"{argument} yields batches without labels, and labels are needed here.",
                expected=LABELLED_FORMS, received={argument: f"a dataset of {spec}"}))
        if images_only and isinstance(spec, (tuple, dict)):
            return data.map(_images_of_tf)
        return data
    if form == "py_dataset":
        if images_only:
            return _Mapped(data, _images_of)
        return _Mapped(data, _labelled(argument, data)) if labels else data
    if form == "list":
        fn = _images_of if images_only else _labelled(argument, data) if labels else None
        return _Mapped(data, fn or (lambda batch: batch))
    # a generator: one pass
    fn = _images_of if images_only else _labelled(argument, data) if labels else None
    return (fn(batch) if fn else batch for batch in data)


def _images_of_tf(*batch):
    if len(batch) == 1 and isinstance(batch[0], dict):
        return batch[0].get("image", batch[0])
    return batch[0]


def num_batches(batches: Any) -> int | None:
    """Batches per pass of what `as_batches` returns, or None when unknown or infinite."""
    if _is_tf_dataset(batches):
        n = int(batches.cardinality())
        return n if n >= 0 else None
    try:
        n = batches.num_batches if isinstance(batches, keras.utils.PyDataset) else len(batches)
    except (TypeError, NotImplementedError):
        return None
    return None if n is None else int(n)


def iterate(batches: Any) -> Iterator:
    """Iterate batches; TensorFlow tensors come as numpy under the other backends."""
    if _is_tf_dataset(batches) and keras.backend.backend() != "tensorflow":
        return batches.as_numpy_iterator()
    return iter(batches)
