"""Inputs of any shape as in-memory data: time series, token ids, features.

`from_arrays` splits ``(x, y)`` arrays into stratified, seeded train/val/test
splits and returns an `ArrayData`, which `kertransfer.training.train`,
`kertransfer.fine_tune` (with cached features), `kertransfer.tune` and
`kertransfer.methods.fewshot` take wherever they take a `DataBundle`. Its splits are
``keras.utils.PyDataset`` batches, so it needs no TensorFlow: it works under
every Keras backend. The images of `kertransfer.data.load` are resized and
converted; these arrays are used as they are.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kertransfer.errors import (
    DataError,
    InvalidArgumentError,
    LabelError,
    format_message,
)
from kertransfer.validation import check_fraction, check_int

__all__ = ["ArrayData", "from_arrays"]

SPLITS = ("train", "val", "test")


class _Batches(keras.utils.PyDataset):
    """``(x, y)`` batches of arrays; reshuffled every epoch when ``shuffle``."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool,
                 seed: int):
        super().__init__()
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(x)) if shuffle else np.arange(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)  # ends plain iteration
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._rng.permutation(len(self.x))


@dataclasses.dataclass(repr=False, eq=False)
class ArrayData:
    """Train, validation and test splits of in-memory arrays, with their metadata.

    Each split yields batches ``(x, labels)``: ``x`` float32 as given
    (``[B, timesteps, features]``, ``[B, timesteps]`` token ids, ...), labels
    int32 ``[B]``. ``train`` is reshuffled every epoch with the seed; ``val``
    and ``test`` are in order, and ``None`` when their fraction is 0.

    Attributes:
        train: The training batches (a ``keras.utils.PyDataset``).
        val: The validation batches, or ``None``.
        test: The test batches, or ``None``.
        class_names: Name of each class, in label order.
        counts: Examples per split.
        input_shape: The shape of one example, the model's ``input_shape``.
        batch_size: Batch size of the splits.
        seed: Seed of the split and the shuffling.
        source: Text naming the source.
    """

    train: Any
    val: Any
    test: Any
    class_names: list[str]
    counts: dict[str, int]
    input_shape: tuple[int, ...]
    batch_size: int
    seed: int = 0
    source: str = "arrays"
    augmentation: Any = None
    tasks: Any = None
    task_tables: Any = None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def as_numpy(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """One split as ``(x, labels)`` arrays, in a fixed order.

        Raises:
            InvalidArgumentError: If ``split`` is unknown or there is no such split.
        """
        if split not in SPLITS:
            raise InvalidArgumentError(format_message(
                f"Unknown split {split!r}.", expected=f"one of {list(SPLITS)}",
                received={"split": split}))
        batches = getattr(self, split)
        if batches is None:
            argument = {"val": "validation_split", "test": "test_split"}.get(split, "split")
            raise InvalidArgumentError(format_message(
                f"This data has no {split!r} split.",
                fix=f"Call from_arrays with `{argument}` > 0 to get one.",
                received={"split": split}))
        return batches.x, batches.y

    def task_labels(self, labels: np.ndarray) -> np.ndarray:
        """The labels as the splits yield them (one task: unchanged)."""
        return labels

    def summary(self) -> str:
        """A few lines: classes, example shape, and each split's size."""
        names = ", ".join(self.class_names[:10]) + (", ..." if self.num_classes > 10 else "")
        lines = [f"ArrayData: {self.source}",
                 f"  classes:  {self.num_classes} ({names})",
                 f"  inputs:   {self.input_shape} float32, batch size {self.batch_size}"]
        for split in SPLITS:
            if getattr(self, split) is not None:
                extra = ", reshuffled every epoch" if split == "train" else ""
                lines.append(f"  {split + ':':<9} {self.counts[split]} examples{extra}")
        lines.append(f"  seed:     {self.seed}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"ArrayData(num_classes={self.num_classes}, input_shape={self.input_shape}, "
                f"batch_size={self.batch_size}, counts={self.counts})")


def from_arrays(x: Any, y: Any, *, validation_split: float = 0.0, test_split: float = 0.0,
                batch_size: int = 32, seed: int = 0,
                class_names: Sequence[str] | None = None) -> ArrayData:
    """In-memory inputs of any shape (series, token ids) as train/val/test splits.

    The split is stratified (each class keeps its share in every split) and
    seeded; at least one example of a class stays in training.

    Example::

        from kertransfer.data import from_arrays, waveforms

        x, y, names = waveforms("target", 30)
        data = from_arrays(x, y, validation_split=0.2, class_names=names)
        model = kt.build_transfer_model("gru", data.num_classes,
                                        input_shape=data.input_shape, weights="source.keras")
        kt.fine_tune(model, data, epochs=10)

    Args:
        x: Inputs ``[N, ...]``, any numeric dtype (kept as float32).
        y: Integer class labels ``[N]`` from 0.
        validation_split: Fraction held out for validation.
        test_split: Fraction held out for test.
        batch_size: Batch size of every split.
        seed: Seed of the split and of the training shuffle.
        class_names: A name per class (default ``"0"``, ``"1"``, ...).

    Returns:
        An `ArrayData`.

    Raises:
        DataError: If ``x`` is not a numeric array with one row per label.
        LabelError: If the labels are not integers from 0, or the names do not fit.
        InvalidArgumentError: If a fraction or the batch size is out of range.
    """
    try:
        x = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise DataError(format_message("x could not be read as one numeric array.",
                                       received={"x": type(x).__name__})) from err
    if x.ndim < 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(format_message(
            "x must be a numeric array of examples, [N, ...].",
            expected="e.g. [N, timesteps, features] series or [N, timesteps] token ids",
            received={"x": f"array of shape {x.shape}, dtype {x.dtype}"}))
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise LabelError(format_message(
            "y must hold one integer class label from 0 per row of x.",
            expected=f"shape ({len(x)},), integers >= 0",
            received={"y": f"shape {y.shape}, dtype {y.dtype}"}))
    if len(x) == 0:
        raise DataError(format_message("x holds no examples.", received={"x": x.shape}))
    val_frac = check_fraction(validation_split, "validation_split")
    test_frac = check_fraction(test_split, "test_split")
    if val_frac + test_frac >= 1:
        raise InvalidArgumentError(format_message(
            "validation_split + test_split must leave examples to train on.",
            received={"validation_split": validation_split, "test_split": test_split}))
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    num_classes = int(y.max()) + 1
    if class_names is None:
        class_names = [str(k) for k in range(num_classes)]
    class_names = [str(c) for c in class_names]
    if len(class_names) < num_classes:
        raise LabelError(format_message(
            f"class_names names {len(class_names)} classes, and the labels go to "
            f"{num_classes - 1}.", received={"class_names": class_names}))

    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for k in range(len(class_names)):
        rows = rng.permutation(np.flatnonzero(y == k))
        n_val = int(round(len(rows) * val_frac))
        n_test = int(round(len(rows) * test_frac))
        n_val = min(n_val, max(len(rows) - 1, 0))
        n_test = min(n_test, max(len(rows) - 1 - n_val, 0))
        parts["val"].append(rows[:n_val])
        parts["test"].append(rows[n_val:n_val + n_test])
        parts["train"].append(rows[n_val + n_test:])
    x = x.astype("float32")
    y = y.astype("int32")
    splits, counts = {}, {}
    for split in SPLITS:
        rows = np.sort(np.concatenate(parts[split]))
        counts[split] = len(rows)
        splits[split] = _Batches(x[rows], y[rows], batch_size, shuffle=split == "train",
                                 seed=seed) if len(rows) else None
    if splits["train"] is None:
        raise DataError(format_message("No example is left to train on.",
                                       received={"x": x.shape}))
    return ArrayData(splits["train"], splits["val"], splits["test"], class_names, counts,
                     tuple(int(d) for d in x.shape[1:]), batch_size, seed)
