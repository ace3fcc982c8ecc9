"""One data protocol: every public kertransfer function that takes data goes through here.

Accepted forms (what ``keras.Model.fit`` takes, plus kertransfer's own):

- numpy images ``x`` alone ``[N, ...]`` (or any array with ``shape`` and
  ``__array__``: a JAX or TensorFlow tensor), where only images are needed;
- ``(x, y)`` arrays (``y`` may be ``{task: labels}``);
- a ``tf.data.Dataset`` of batches: ``x`` or ``(x, y)`` (or ``(x, y, weights)``);
- a ``keras.utils.PyDataset`` of such batches;
- a `kertransfer.data.DataBundle` or `kertransfer.data.ArrayData` (one split,
  ``"train"`` by default);
- a list of batches (``[x0, x1, ...]`` or ``[(x0, y0), ...]``) or a generator
  of batches (one pass), as earlier versions took.

Anything else is refused with an `InvalidTypeError` (or a `DataError` when the
form is right and its content is not) whose message names the argument and
ends ``Received: name=...``.

Functions:

- `as_batches` for streaming passes (BatchNorm statistics, features, a
  learning-rate test, training): a ``tf.data.Dataset`` for TensorFlow inputs
  and bundles, else a ``keras.utils.PyDataset`` (a generator for a generator),
  which ``fit``/``predict`` take and a ``for`` loop iterates. Nothing is
  materialised.
- `gather` runs a function over every batch and concatenates its outputs with
  the labels, in one pass (features of any size of data).
- `as_arrays` for algorithms that need every row in memory; it materialises
  only arrays and in-memory data unless asked to (``streams=True``).
- `as_training_data` / `as_validation_data` for functions that need splits.

TensorFlow is imported only when the data is TensorFlow's (a dataset, a
bundle), so arrays, ``PyDataset`` and ``ArrayData`` work under every backend.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import keras
import numpy as np

from kertransfer.data.bundle import DataBundle
from kertransfer.data.memory import ArrayData, from_arrays
from kertransfer.errors import DataError, InvalidArgumentError, InvalidTypeError, format_message
from kertransfer.validation import check_int

__all__ = ["FORMS", "Splits", "as_arrays", "as_batches", "as_training_data",
           "as_validation_data", "example_shape", "form_of", "gather", "iterate",
           "num_batches", "unaugmented_train"]

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


# -- batches ---------------------------------------------------------------------------------

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
        data: Any accepted form (see the module notes).
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


def gather(data: Any, argument: str = "data", fn: Callable | None = None, *,
           labels: bool | str = True, batch_size: int | None = None, split: str = "train"):
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

    Returns:
        ``(outputs, labels)``: ``fn``'s outputs concatenated (None without
        ``fn``) and the labels ``[N]`` (a dict per task; None without labels).

    Raises:
        DataError: If the data yields no batch.
    """
    form = form_of(data, argument)
    want = labels is True or (labels == "optional" and form != "images")
    batches = as_batches(data, argument, batch_size=batch_size, images_only=not want,
                         labels=labels is True, split=split)
    outs, ys, count = [], [], 0
    for batch in iterate(batches):
        count += 1
        x = _images_of(batch)
        if want and isinstance(batch, (tuple, list)) and len(batch) >= 2:
            ys.append(_numpy(batch[1]))
        if fn is not None:
            outs.append(_numpy(fn(_numpy(x))))
    if count == 0:
        raise DataError(format_message(f"{argument} yielded no batch.",
                                       expected="non-empty data",
                                       received={argument: _shown(data)}))
    if ys and len(ys) != count:
        raise DataError(format_message(
            f"{argument} yields some batches with labels and some without.",
            expected="(x, y) in every batch", received={argument: _shown(data)}))
    return (_concat(outs) if fn is not None else None), (_concat(ys) if ys else None)


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
    elif form in ("bundle", "array_data") and hasattr(data, "as_numpy"):
        x, y = data.as_numpy(split)
    elif streams:
        x, y = gather(data, argument, fn=lambda batch: batch, labels=labels, split=split)
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


# -- splits ----------------------------------------------------------------------------------

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


def split_arrays(data: Any, split: str = "train", argument: str = "data",
                 what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split of a `DataBundle` or `ArrayData`, or the ``(x, y)``
    arrays themselves (through `kertransfer.data.adapter.as_arrays`); anything
    else is refused naming ``argument``."""

    if form_of(data, argument) not in ("bundle", "array_data", "xy"):
        raise InvalidTypeError(format_message(
            f"{argument} must be a DataBundle, ArrayData or (x, y) arrays{what}.",
            received={argument: type(data).__name__}))
    x, y = as_arrays(data, argument, split=split)
    return np.asarray(x, "float32"), y
