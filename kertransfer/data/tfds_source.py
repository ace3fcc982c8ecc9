"""A TensorFlow Datasets dataset as a data source: ``"tfds:NAME"`` or ``"tfds:NAME/CONFIG"``.

The dataset's own ``"train"`` split is loaded with ``tfds.load(...,
download=True)`` with the image left encoded; one cheap pass reads the labels,
so `kertransfer.data.load` can carve validation and test sets out of it
with the same stratified, seeded split as every other source. Each split's
dataset then keeps its examples by position (``enumerate`` + ``filter``) and
only decodes those.

Images come from the ``"image"`` feature and labels from ``"label"`` (a
``ClassLabel``, whose names become the class names); datasets with other
keys fall back to their ``supervised_keys``.

Offline, a dataset must be prepared beforehand: run ``tfds build NAME`` on a
machine with network, copy its data dir over and pass ``data_dir=``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from kertransfer.data.fingerprint import array_digest
from kertransfer.data.images import to_model_image
from kertransfer.data.sources import SourceData, check_class_names
from kertransfer.errors import (
    DataError,
    DataUnavailableError,
    InvalidArgumentError,
    MissingDependencyError,
    format_message,
)

__all__ = ["TFDS_PREFIX", "tfds_source"]

TFDS_PREFIX = "tfds:"
_SPLIT = "train"


def _import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise MissingDependencyError(
            format_message(
                "TFDS sources need the `tensorflow-datasets` package.",
                fix="Install it with `pip install tensorflow-datasets`.",
                received={"source": "tfds:..."},
            )
        ) from err
    return tfds


def _first_lines(text: str, count: int = 2) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return " ".join(lines[:count])


def _load(tfds: Any, name: str, source: str, data_dir: str | None) -> tuple[tf.data.Dataset, Any]:
    try:
        return tfds.load(
            name,
            split=_SPLIT,
            as_supervised=False,
            with_info=True,
            data_dir=data_dir,
            download=True,
            shuffle_files=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
    except tfds.core.DatasetNotFoundError as err:
        hint = [line.strip() for line in str(err).splitlines() if "did you mean" in line.lower()]
        raise DataError(
            format_message(
                f"TensorFlow Datasets has no dataset named {name!r}."
                + (f" {hint[0]}" if hint else ""),
                expected="a name from `tfds.list_builders()`, as 'tfds:NAME' or 'tfds:NAME/CONFIG'",
                received={"source": source},
            )
        ) from err
    except Exception as err:  # download or prepare failed (offline, missing extras, ...)
        raise DataUnavailableError(
            format_message(
                f"The TFDS dataset {name!r} could not be downloaded or prepared "
                f"({type(err).__name__}: {_first_lines(err)}).",
                fix=(
                    "It must be prepared first: run `tfds build "
                    f"{name}` on a machine with network, copy its data dir here and pass "
                    "`data_dir=` (the folder that holds the dataset's folder)."
                ),
                received={"source": source, "data_dir": data_dir},
            )
        ) from err


def _feature_keys(info: Any, source: str) -> tuple[str, str]:
    keys = list(info.features.keys())
    if "image" in keys and "label" in keys:
        return "image", "label"
    supervised = getattr(info, "supervised_keys", None)
    if (
        isinstance(supervised, tuple)
        and len(supervised) == 2
        and all(isinstance(k, str) and k in keys for k in supervised)
    ):
        return supervised
    raise DataError(
        format_message(
            "The TFDS dataset has no 'image' and 'label' features.",
            expected="an image classification dataset with 'image' and 'label' features",
            received={"source": source, "features": keys},
        )
    )


def tfds_source(
    source: str,
    image_size: tuple[int, int],
    class_names: Sequence[str] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> SourceData:
    """Load the train split of a TFDS dataset as a source.

    Args:
        source: ``"tfds:NAME"`` or ``"tfds:NAME/CONFIG"`` (any ``tfds.load`` name).
        image_size: Target ``(height, width)``.
        class_names: Optional new names for the classes (same count).
        data_dir: TFDS data dir; default TFDS's own (``~/tensorflow_datasets``).

    Returns:
        The source.

    Raises:
        InvalidArgumentError: If the name after ``tfds:`` is empty.
        DataError: If TFDS does not know the dataset or it is not image classification.
        DataUnavailableError: If the dataset is not prepared and cannot be downloaded.
        MissingDependencyError: If ``tensorflow-datasets`` is not installed.
    """
    name = source[len(TFDS_PREFIX) :].strip()
    if not name:
        raise InvalidArgumentError(
            format_message(
                "The TFDS source has no dataset name.",
                expected="'tfds:NAME' or 'tfds:NAME/CONFIG', e.g. 'tfds:mnist'",
                received={"source": source},
            )
        )
    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
    tfds = _import_tfds()
    dataset, info = _load(tfds, name, source, data_dir)
    image_key, label_key = _feature_keys(info, source)
    names = getattr(info.features[label_key], "names", None)
    if not names:
        raise DataError(
            format_message(
                f"The TFDS label feature {label_key!r} is not a ClassLabel with names.",
                expected="an image classification dataset",
                received={"source": source},
            )
        )
    names = check_class_names(class_names, expected=len(names)) or list(names)
    image_feature = info.features[image_key]

    def label_only(example: dict) -> tf.Tensor:
        return example[label_key]

    labels = np.concatenate(
        [np.asarray(batch) for batch in dataset.map(label_only).batch(8192).as_numpy_iterator()]
        or [np.zeros(0, dtype=np.int64)]
    ).astype(np.int64)
    if len(labels) == 0:
        raise DataError(
            format_message(
                "The TFDS dataset's train split is empty.",
                received={"source": source, "data_dir": data_dir},
            )
        )

    def make_dataset(indices: np.ndarray) -> tf.data.Dataset:
        mask = np.zeros(len(labels), dtype=bool)
        mask[indices] = True
        keep = tf.constant(mask)

        def selected(position: tf.Tensor, example: dict) -> tf.Tensor:
            return tf.gather(keep, position)

        def decode(position: tf.Tensor, example: dict) -> tuple[tf.Tensor, tf.Tensor]:
            image = image_feature.decode_example(example[image_key])
            return to_model_image(image, image_size), tf.cast(example[label_key], tf.int32)

        chosen = dataset.enumerate().filter(selected)
        chosen = chosen.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        return chosen.apply(tf.data.experimental.assert_cardinality(len(indices)))

    return SourceData(
        labels=labels,
        class_names=names,
        description=f"{source} ({_SPLIT} split)",
        make_dataset=make_dataset,
        fingerprint=array_digest([np.array([str(getattr(info, "full_name", name)),
                                            str(getattr(info, "version", "")),
                                            str(data_dir)]), labels]),
    )
