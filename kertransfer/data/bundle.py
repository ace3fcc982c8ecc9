"""The `DataBundle`: what `kertransfer.data.load` returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kertransfer.errors import InvalidArgumentError, format_message

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

__all__ = ["SPLITS", "DataBundle"]

SPLITS = ("train", "val", "test")


@dataclass(repr=False, eq=False)
class DataBundle:
    """Train, validation and test datasets of one source, with their metadata.

    Each dataset yields batches ``(images, labels)``: images float32
    ``[B, H, W, 3]`` of raw RGB values in 0..255 (the model carries its own
    preprocessing), labels int32 ``[B]``. ``train`` is shuffled with the seed
    (reshuffled every epoch) and augmented; ``val`` and ``test`` are neither,
    and are ``None`` when their split fraction is 0.

    Attributes:
        train: The training dataset.
        val: The validation dataset, or ``None``.
        test: The test dataset, or ``None``.
        class_names: Name of each class, in label order.
        counts: Number of examples per split, ``{"train": n, "val": n, "test": n}``.
        image_size: ``(height, width)`` of the images.
        batch_size: Batch size of the datasets.
        source: Text naming the source.
        skipped_files: Corrupt image files that were left out.
        seed: Seed of the split, shuffling and augmentation.
        class_counts: Examples per class in each split, ``{"train": [n0, n1, ...], ...}``.
        augmentation: The layer applied to train batches, or ``None``.
        tasks: ``{task: classes}`` when the labels are per task (see
            `with_tasks`), else ``None``.
        task_tables: ``{task: lookup table or None}`` behind ``tasks``
            (see `task_labels`), else ``None``.
        fingerprints: ``{split: digest}`` of each split's examples, known
            without reading them (see `kertransfer.data.fingerprint`); they
            key feature caches.
        load_args: The arguments of `kertransfer.data.load` that give this
            bundle again (and ``tasks`` of `with_tasks`), for a source that
            can be read again (a name, a folder, TFDS) with settings that are
            plain values; else ``None``. Search child processes reload the
            data with them instead of receiving its pixels.
    """

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    test: tf.data.Dataset | None
    class_names: list[str]
    counts: dict[str, int]
    image_size: tuple[int, int]
    batch_size: int
    source: str
    skipped_files: list[str] = field(default_factory=list)
    seed: int = 0
    class_counts: dict[str, list[int]] = field(default_factory=dict)
    augmentation: keras.layers.Layer | None = None
    _unbatched: Callable[[str], tf.data.Dataset] | None = None
    tasks: dict[str, int] | None = None
    task_tables: dict[str, np.ndarray | None] | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    load_args: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def as_numpy(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """Return one split as numpy arrays, unaugmented and in source order.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            ``(x, y)``: float32 images ``[N, H, W, 3]`` in 0..255 and int32 labels ``[N]``.

        Raises:
            InvalidArgumentError: If ``split`` is unknown or the bundle has no such split.
        """
        if split not in SPLITS:
            raise InvalidArgumentError(
                format_message(
                    f"Unknown split {split!r}.",
                    expected=f"one of {list(SPLITS)}",
                    received={"split": split},
                )
            )
        if getattr(self, split) is None or self._unbatched is None:
            argument = {"val": "validation_split", "test": "test_split"}.get(split, "split")
            raise InvalidArgumentError(
                format_message(
                    f"This bundle has no {split!r} split.",
                    fix=f"Load the data with `{argument}` > 0 to get one.",
                    received={"split": split},
                )
            )
        height, width = self.image_size
        images = [np.zeros((0, height, width, 3), np.float32)]
        labels = [np.zeros((0,), np.int32)]
        for x, y in self._unbatched(split).batch(512).as_numpy_iterator():
            images.append(x)
            labels.append(y)
        return np.concatenate(images), np.concatenate(labels)

    def with_tasks(self, tasks: Mapping[str, Any]) -> DataBundle:
        """This data with one label per task, for a multi-task model.

        Args:
            tasks: ``{task: rule}``. A rule is ``None`` (the bundle's own
                labels) or a lookup table with one entry per class: the
                label that class has in the task. For digits,
                ``{"digit": None, "parity": [k % 2 for k in range(10)]}``.

        Returns:
            A bundle whose splits yield ``(images, {task: labels})``; its
            ``tasks`` is ``{task: classes}``, which ``build_transfer_model``
            takes as ``num_classes``. `as_numpy` still returns the original
            labels.
        """
        import dataclasses

        import tensorflow as tf

        if not isinstance(tasks, Mapping) or not tasks:
            raise InvalidArgumentError(format_message(
                "tasks must be a non-empty mapping {task: None or lookup table}.",
                expected='e.g. {"digit": None, "parity": [k % 2 for k in range(10)]}',
                received={"tasks": tasks}))
        tables, sizes, lookups = {}, {}, {}
        for name, rule in tasks.items():
            if rule is None:
                tables[name], sizes[name], lookups[name] = None, self.num_classes, None
                continue
            table = np.asarray(rule)
            ok = table.ndim == 1 and len(table) == self.num_classes and \
                np.issubdtype(table.dtype, np.integer) and table.min() >= 0
            if not ok:
                raise InvalidArgumentError(format_message(
                    f"Task {name!r} needs one non-negative integer label per class.",
                    expected=f"None, or a sequence of {self.num_classes} integers "
                             f"(classes {self.class_names[:3]}...)",
                    received={name: rule}))
            lookups[name] = table.astype("int32")
            tables[name] = tf.constant(lookups[name])
            sizes[name] = int(table.max()) + 1

        def relabel(x, y):
            y = tf.cast(y, tf.int32)
            return x, {name: y if table is None else tf.gather(table, y)
                       for name, table in tables.items()}

        def mapped(ds):
            return None if ds is None else ds.map(relabel)

        load_args = None if self.load_args is None else {
            **self.load_args, "tasks": {k: None if t is None else t.tolist()
                                        for k, t in lookups.items()}}
        return dataclasses.replace(self, train=mapped(self.train), val=mapped(self.val),
                                   test=mapped(self.test), tasks=sizes, task_tables=lookups,
                                   load_args=load_args)

    def task_labels(self, labels: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """The per-task labels of class labels ``labels`` (from `as_numpy`).

        Returns ``labels`` unchanged when the bundle has no tasks, else
        ``{task: labels}`` as its splits yield them.
        """
        if not self.task_tables:
            return labels
        labels = np.asarray(labels, dtype="int32")
        return {name: labels if table is None else table[labels]
                for name, table in self.task_tables.items()}

    def summary(self) -> str:
        """Return a short human-readable description of the bundle.

        Returns:
            A few lines: source, classes, image size, and each split's size.
        """
        height, width = self.image_size
        names = ", ".join(self.class_names[:10]) + (", ..." if self.num_classes > 10 else "")
        lines = [
            f"DataBundle: {self.source}",
            f"  classes:  {self.num_classes} ({names})",
            f"  images:   {height}x{width}x3 float32 RGB in 0..255, batch size {self.batch_size}",
        ]
        for split in SPLITS:
            if getattr(self, split) is None:
                continue
            per_class = self.class_counts.get(split) or []
            spread = ""
            if per_class:
                low, high = min(per_class), max(per_class)
                spread = f", {low}{'' if low == high else f'-{high}'} per class"
            extra = ""
            if split == "train":
                extra = ", shuffled" + (
                    f", augmented ({_layer_names(self.augmentation)})" if self.augmentation else ""
                )
            lines.append(f"  {split + ':':<9} {self.counts[split]} examples{spread}{extra}")
        if self.skipped_files:
            lines.append(f"  skipped:  {len(self.skipped_files)} corrupt file(s)")
        if self.tasks:
            lines.append("  tasks:    " + ", ".join(f"{k} ({n} classes)"
                                                    for k, n in self.tasks.items()))
        lines.append(f"  seed:     {self.seed}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"DataBundle(source={self.source!r}, num_classes={self.num_classes}, "
            f"image_size={tuple(self.image_size)}, batch_size={self.batch_size}, "
            f"counts={self.counts})"
        )


def _layer_names(layer: keras.layers.Layer) -> str:
    inner = getattr(layer, "layers", None)
    if inner:
        return ", ".join(type(item).__name__ for item in inner)
    return type(layer).__name__
