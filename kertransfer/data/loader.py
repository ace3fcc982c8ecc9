"""``load()``: any data source to a `DataBundle` of tf.data pipelines."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kertransfer.data.arrays import arrays_source, check_arrays
from kertransfer.data.augment import build_augmentation, tf_data_safe
from kertransfer.data.bundle import SPLITS, DataBundle
from kertransfer.data.embedded import EMBEDDED_SOURCES, embedded_arrays
from kertransfer.data.fashion_mnist import FASHION_SOURCES, fashion_source
from kertransfer.data.fingerprint import array_digest
from kertransfer.data.folders import folder_source
from kertransfer.data.sources import SourceData, check_class_names
from kertransfer.data.splits import split_with_test_set, stratified_split, take_per_class
from kertransfer.data.tfds_source import TFDS_PREFIX, tfds_source
from kertransfer.errors import (
    DataError,
    InvalidArgumentError,
    InvalidTypeError,
    format_message,
    suggest,
)
from kertransfer.validation import check_fraction, check_int, is_int

__all__ = ["MEMORY_CACHE_BYTES", "SHUFFLE_BUFFER", "list_sources", "load"]

SHUFFLE_BUFFER = 2048
#: ``load(cache="auto")`` keeps a split's decoded images in memory up to this many bytes.
MEMORY_CACHE_BYTES = 1 << 30
_NAMED = {**EMBEDDED_SOURCES, **FASHION_SOURCES}
_SOURCES = (
    f"a named dataset ({', '.join(repr(n) for n in _NAMED)}), "
    "'tfds:NAME' or 'tfds:NAME/CONFIG' (e.g. 'tfds:mnist'), the path of a folder of "
    "class subfolders, or a tuple (x, y) of numpy arrays"
)


def list_sources() -> dict[str, str]:
    """Describe the data sources `load` accepts.

    Returns:
        ``{source: description}``: one entry per named dataset (usable as
        ``load(name)``: the embedded ones and Fashion-MNIST), then one per
        kind of source, keyed by its pattern.
    """
    sources = dict(_NAMED)
    sources["tfds:NAME[/CONFIG]"] = (
        "the train split of a TensorFlow Datasets image classification dataset "
        "(prepared beforehand when offline; pass data_dir=)"
    )
    sources["<folder path>"] = (
        "a folder with one subfolder of images (jpg, png, bmp, gif) per class"
    )
    sources["(x, y)"] = "numpy arrays: images [N, H, W(, C)] in 0..255 and integer labels [N]"
    return sources


def _check_image_size(image_size: Any) -> tuple[int, int]:
    if (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(is_int(v) and v > 0 for v in image_size)
    ):
        return int(image_size[0]), int(image_size[1])
    raise InvalidArgumentError(
        format_message(
            "`image_size` must be a (height, width) pair of positive integers.",
            expected="e.g. image_size=(224, 224)",
            received={"image_size": image_size},
        )
    )


def _check_fractions(validation_split: Any, test_split: Any) -> tuple[float, float]:
    fix = "E.g. 0.2 for 20% of the examples, or 0 for no such split."
    val = check_fraction(validation_split, "validation_split", fix=fix)
    test = check_fraction(test_split, "test_split", fix=fix)
    if val + test >= 1:
        raise InvalidArgumentError(
            format_message(
                "`validation_split` + `test_split` must be below 1 to leave training examples.",
                received={
                    "validation_split": validation_split,
                    "test_split": test_split,
                },
            )
        )
    return val, test


def _looks_like_path(text: str) -> bool:
    return any(sep in text for sep in ("/", "\\", os.sep)) or text.startswith((".", "~"))


def _read_source(
    source: Any,
    image_size: tuple[int, int],
    class_names: Sequence[str] | None,
    strict: bool,
    data_dir: Any,
    verbose: int,
) -> SourceData:
    if isinstance(source, tuple):
        if len(source) != 2:
            raise DataError(
                format_message(
                    "An array source must be a pair (x, y).",
                    expected="a tuple (images, labels)",
                    received={"len(source)": len(source)},
                )
            )
        x, y, names = check_arrays(source[0], source[1], class_names)
        return arrays_source(x, y, names, image_size, description=f"arrays x{tuple(x.shape)}")
    if isinstance(source, os.PathLike):
        return folder_source(source, image_size, class_names, strict=strict, verbose=verbose)
    if not isinstance(source, str):
        raise InvalidTypeError(
            format_message(
                f"`source` has an unsupported type {type(source).__name__}.",
                expected=_SOURCES,
                received={"source": source},
            )
        )
    if source in EMBEDDED_SOURCES:
        names = check_class_names(class_names, expected=10) or [str(i) for i in range(10)]
        x, y = embedded_arrays(source, image_size)
        x, y, names = check_arrays(x, y, names)
        return arrays_source(x, y, names, image_size, description=f"{source} (embedded)")
    if source in FASHION_SOURCES:
        return fashion_source(source, image_size, class_names, data_dir=data_dir, verbose=verbose)
    if source.lower().startswith(TFDS_PREFIX):
        return tfds_source(source, image_size, class_names, data_dir=data_dir)
    if os.path.exists(os.path.expanduser(source)) or _looks_like_path(source):
        return folder_source(source, image_size, class_names, strict=strict, verbose=verbose)
    hint = suggest(source, list(_NAMED))
    raise InvalidArgumentError(
        format_message(
            f"Unknown data source {source!r}; no folder of that name exists either."
            + (f" {hint}" if hint else ""),
            expected=_SOURCES,
            received={"source": source},
        )
    )


def _pipeline(
    data: SourceData,
    indices: np.ndarray,
    train: bool,
    batch_size: int,
    shuffle: bool,
    cache: bool,
    seed: int,
    augmentation: keras.layers.Layer | None,
) -> tf.data.Dataset:
    if train and shuffle:
        # Pre-permute so that even a capped shuffle buffer sees a random order.
        indices = np.random.default_rng([seed, 2]).permutation(indices)
    dataset = data.make_dataset(indices)
    if cache:
        dataset = dataset.cache()
    if train and shuffle:
        buffer = max(1, min(len(indices), SHUFFLE_BUFFER))
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if train and augmentation is not None:
        layer = tf_data_safe(augmentation)

        def augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            out = tf.cast(layer(images, training=True), tf.float32)
            return tf.clip_by_value(out, 0.0, 255.0), labels

        dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _split_indices(data: SourceData, validation_split: float, test_split: float,
                   samples_per_class: int | None, seed: int):
    """The stratified, seeded train/val/test indices of ``data`` (``samples_per_class``
    applied to the train split only); a `DataError` where a split ends up empty."""
    if data.test_only is not None:
        train, val, test = split_with_test_set(
            data.labels, data.test_only, validation_split, test_split, seed
        )
    else:
        train, val, test = stratified_split(data.labels, validation_split, test_split, seed)
    for name, fraction, held in (
        ("validation_split", validation_split, val),
        ("test_split", test_split, test),
    ):
        if fraction > 0 and len(held) == 0:
            raise DataError(
                format_message(
                    f"`{name}` leaves no examples: every class has a single example, "
                    "kept for training.",
                    expected="classes with at least 2 examples, or a fraction of 0",
                    received={name: fraction, "num_examples": len(data.labels)},
                )
            )
    if samples_per_class is not None:
        train, short = take_per_class(train, data.labels, samples_per_class, seed,
                                      len(data.class_names))
        if short:
            shown = {data.class_names[c]: n for c, n in list(short.items())[:10]}
            warnings.warn(
                f"{len(short)} class(es) have fewer than samples_per_class={samples_per_class} "
                f"training examples; all of theirs are kept: {shown}.",
                stacklevel=3,
            )
        if len(train) == 0:
            raise DataError(
                format_message(
                    "No training examples are left.",
                    received={"samples_per_class": samples_per_class},
                )
            )
    return train, val, test


def _reloadable(source, image_size, batch_size, validation_split, test_split, seed, augment,
                samples_per_class, class_names, strict, shuffle, cache, data_dir):
    """`load`'s arguments as plain values when the source can be read again, else None."""
    plain = augment is None or isinstance(augment, (bool, str)) or (
        isinstance(augment, dict) and all(isinstance(v, (bool, int, float, str, type(None)))
                                          for v in augment.values()))
    if not isinstance(source, (str, os.PathLike)) or not plain:
        return None
    path = os.path.expanduser(os.fspath(source))
    return {"source": os.path.abspath(path) if os.path.exists(path) else os.fspath(source),
            "image_size": list(image_size),
            "batch_size": batch_size, "validation_split": validation_split,
            "test_split": test_split, "seed": seed, "augment": augment,
            "samples_per_class": samples_per_class,
            "class_names": None if class_names is None else list(class_names),
            "strict": strict, "shuffle": shuffle, "cache": cache,
            "data_dir": None if data_dir is None else os.fspath(data_dir)}


def load(
    source: Any,
    image_size: Sequence[int] = (224, 224),
    batch_size: int = 32,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    seed: int = 0,
    augment: Any = None,
    samples_per_class: int | None = None,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
    shuffle: bool = True,
    cache: bool | str = "auto",
    data_dir: str | os.PathLike | None = None,
    verbose: int = 1,
) -> DataBundle:
    """Load an image classification source into train/val/test tf.data pipelines.

    Examples::

        data = kertransfer.data.load("digits_m", image_size=(32, 32),
                                     validation_split=0.2, augment=True)
        model.fit(data.train, validation_data=data.val)

    Args:
        source: ``"digits"`` or ``"digits_m"`` (embedded, offline);
            ``"fashion_mnist"`` (Debian's or Keras' files when present, else
            an embedded subset; ``"fashion_mnist_subset"`` for the subset
            always); ``"tfds:NAME"`` or ``"tfds:NAME/CONFIG"`` (the dataset's train
            split); a folder path (``str`` or ``pathlib.Path``) with one
            subfolder of images per class; or a tuple ``(x, y)`` of numpy
            arrays. See `list_sources`.
        image_size: ``(height, width)`` every image is resized to (bilinear).
        batch_size: Batch size of all three datasets.
        validation_split: Fraction of examples held out for validation.
        test_split: Fraction of examples held out for test. For the full
            Fashion-MNIST, test examples come only from its official test
            split (all 10,000 from ``test_split`` 1/7 up) and validation
            examples only from its training split.
        seed: Seed of the split, of ``samples_per_class``, of the train
            shuffle and of the augmentation (not of the embedded data's content).
        augment: Train-time augmentation: ``None``/``False``, ``True`` or
            ``"default"``, a dict such as ``{"flip": "horizontal", "zoom": 0.1}``,
            or a ``keras.layers.Layer``. See `build_augmentation`.
        samples_per_class: Keep only this many training examples per class
            (after val/test are held out, so they stay complete).
        class_names: Arrays: the class names (their count fixes the classes).
            Folders: the subfolders to use, in label order. TFDS/embedded:
            new names for the classes (same count).
        strict: Folders: raise on a corrupt image instead of skipping it.
        shuffle: Shuffle the train split: a seeded permutation, then a
            seeded shuffle buffer of up to ``SHUFFLE_BUFFER`` (2048) examples
            that reshuffles every epoch (a full shuffle up to that size).
        cache: Cache a split's decoded, resized images in memory after its
            first pass: ``"auto"`` when they take at most `MEMORY_CACHE_BYTES`
            (1 GiB as float32: 5,000 images at 224 px), True always, False
            never. Never for Fashion-MNIST, whose uint8 images are in memory
            and resized per batch. Larger data streams from its files every
            epoch, with memory bounded by the shuffle buffer.
        data_dir: TFDS data dir (``"tfds:"`` sources), or a folder holding
            Fashion-MNIST's four IDX files (``"fashion_mnist"``).
        verbose: Folders: show a progress bar while checking files, and a
            summary line. Fashion-MNIST: say which files were used.

    Returns:
        A `DataBundle`. Splits are stratified per class and seeded;
        ``val``/``test`` are ``None`` when their fraction is 0.

    Raises:
        InvalidArgumentError: On a bad argument value or an unknown source name.
        InvalidTypeError: On a source of an unsupported type.
        DataSourceNotFoundError: If a folder path does not exist, or a
            Fashion-MNIST ``data_dir`` lacks one of the files.
        DataError: If the source is malformed (empty classes, bad arrays, ...).
        LabelError: If array labels fall outside the classes.
        CorruptImageError: With ``strict=True``, on the first corrupt image.
        DataUnavailableError: If a TFDS dataset is not prepared and cannot be downloaded.
    """
    image_size = _check_image_size(image_size)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    validation_split, test_split = _check_fractions(validation_split, test_split)
    samples_per_class = check_int(samples_per_class, "samples_per_class", minimum=1,
                                  allow_none=True)
    seed = check_int(seed, "seed", minimum=0)
    if cache not in (True, False, "auto"):
        raise InvalidArgumentError(format_message(
            "`cache` must be True, False or 'auto'.", received={"cache": cache}))
    augmentation = build_augmentation(augment, seed=seed)

    data = _read_source(source, image_size, class_names, strict, data_dir, verbose)
    num_classes = len(data.class_names)
    train, val, test = _split_indices(data, validation_split, test_split, samples_per_class, seed)
    indices = {"train": train, "val": val, "test": test}
    fractions = {"train": 1.0, "val": validation_split, "test": test_split}
    datasets = {}
    pixels = image_size[0] * image_size[1] * 3 * 4
    for split in SPLITS:
        if fractions[split] == 0:
            datasets[split] = None
            continue
        datasets[split] = _pipeline(
            data,
            indices[split],
            train=split == "train",
            batch_size=batch_size,
            shuffle=shuffle,
            cache=data.cacheable and (cache is True or (
                cache == "auto" and len(indices[split]) * pixels <= MEMORY_CACHE_BYTES)),
            seed=seed,
            augmentation=augmentation,
        )

    def unbatched(split: str) -> tf.data.Dataset:
        return data.make_dataset(indices[split])

    return DataBundle(
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        class_names=list(data.class_names),
        counts={split: len(indices[split]) for split in SPLITS},
        image_size=image_size,
        batch_size=batch_size,
        source=data.description,
        skipped_files=list(data.skipped_files),
        seed=int(seed),
        class_counts={
            split: np.bincount(data.labels[indices[split]], minlength=num_classes).tolist()
            for split in SPLITS
        },
        augmentation=augmentation,
        _unbatched=unbatched,
        load_args=_reloadable(source, image_size, batch_size, validation_split, test_split,
                              seed, augment, samples_per_class, class_names, strict, shuffle,
                              cache, data_dir),
        fingerprints={split: array_digest([np.array([data.fingerprint]), indices[split],
                                           np.array(image_size)])
                      for split in SPLITS} if data.fingerprint else {},
    )
