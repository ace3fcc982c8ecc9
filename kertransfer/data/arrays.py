"""In-memory arrays ``(x, y)`` as a data source.

``x`` holds images shaped ``[N, H, W]``, ``[N, H, W, 1]``, ``[N, H, W, 3]`` or
``[N, H, W, 4]`` of any numeric dtype with values in ``0..255``; grayscale is
copied to 3 channels and RGBA drops its alpha channel. ``y`` holds integer
labels ``[N]`` (``[N, 1]`` is accepted too, as ``keras.datasets`` returns).
Images are converted and resized lazily, inside tf.data.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from kertransfer.data.fingerprint import array_digest
from kertransfer.data.images import to_model_image
from kertransfer.data.sources import SourceData, check_class_names
from kertransfer.errors import DataError, LabelError, format_message

__all__ = ["arrays_source", "check_arrays"]

_SHAPES = "x shaped [N, H, W], [N, H, W, 1], [N, H, W, 3] or [N, H, W, 4] and y shaped [N]"


def _shape_of(value: Any) -> Any:
    return getattr(value, "shape", type(value).__name__)


def _check_images(x: Any) -> np.ndarray:
    try:
        x = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise DataError(
            format_message(
                "The images `x` could not be read as one numpy array.",
                expected=_SHAPES,
                received={"x": type(x).__name__},
            )
        ) from err
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(
            format_message(
                f"The images `x` must be numeric; got dtype {x.dtype}.",
                expected="an integer or float array with values in 0..255",
                received={"x.dtype": str(x.dtype)},
            )
        )
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise DataError(
            format_message(
                "The images `x` have the wrong shape.",
                expected=_SHAPES,
                received={"x.shape": x.shape},
            )
        )
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise DataError(
            format_message(
                "The images `x` are empty.",
                expected=_SHAPES,
                received={"x.shape": x.shape},
            )
        )
    if np.issubdtype(x.dtype, np.floating):
        low, high = float(np.min(x)), float(np.max(x))
        if not np.isfinite([low, high]).all():
            raise DataError(
                format_message(
                    "The images `x` contain NaN or infinite values.",
                    expected="finite values in 0..255",
                    received={"x.min": low, "x.max": high},
                )
            )
        if 0 < high <= 1.0:
            warnings.warn(
                "The images `x` look scaled to 0..1 (max value "
                f"{high:g}); kertransfer expects raw pixel values in 0..255 and the model "
                "applies its own preprocessing. Multiply by 255 if they are 0..1 images.",
                stacklevel=5,
            )
        elif low < 0 or high > 255:
            warnings.warn(
                f"The images `x` have values in {low:g}..{high:g}, outside 0..255; "
                "kertransfer expects raw pixel values in 0..255.",
                stacklevel=5,
            )
    return x


def _check_labels(y: Any, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " For one-hot labels pass `y.argmax(axis=1)`." if y.ndim == 2 else ""
        raise DataError(
            format_message(
                f"The labels `y` must be one integer per image.{hint}",
                expected=_SHAPES,
                received={"y.shape": y.shape},
            )
        )
    if len(y) != n:
        raise DataError(
            format_message(
                f"`x` has {n} images but `y` has {len(y)} labels.",
                expected="one label per image",
                received={"x.shape[0]": n, "y.shape": y.shape},
            )
        )
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise LabelError(
        format_message(
            "The labels `y` must be integer class indices.",
            expected="integers in 0..num_classes-1 (map names to indices and pass `class_names=`)",
            received={"y.dtype": str(y.dtype), "y[:5]": y[:5].tolist()},
        )
    )


def check_arrays(
    x: Any, y: Any, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate images and labels given as arrays.

    Args:
        x: Images, see the module docstring for the allowed shapes.
        y: Integer labels, one per image.
        class_names: Optional names; their count fixes the number of classes.
            Without them the classes are ``"0"..str(max(y))``.

    Returns:
        ``(x, y, class_names)`` with ``x`` 4-D, ``y`` int64.

    Raises:
        DataError: On a wrong shape or dtype, empty arrays or mismatched lengths.
        LabelError: If labels are not integers or fall outside the classes.
    """
    x = _check_images(x)
    y = _check_labels(y, len(x))
    names = check_class_names(class_names)
    num_classes = len(names) if names is not None else int(y.max()) + 1
    bad = np.unique(y[(y < 0) | (y >= num_classes)])
    if bad.size:
        shown = bad[:10].tolist()
        more = " ..." if bad.size > 10 else ""
        if names is not None:
            problem = (
                f"Labels {shown}{more} fall outside the {num_classes} classes of `class_names`."
            )
        else:
            problem = f"Labels {shown}{more} are negative; class indices start at 0."
        raise LabelError(
            format_message(
                problem,
                expected=f"labels in 0..{num_classes - 1}",
                received={"bad_labels": shown, "num_classes": num_classes},
            )
        )
    if names is None:
        names = [str(i) for i in range(num_classes)]
    return x, y, names


def arrays_source(
    x: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    image_size: tuple[int, int],
    description: str = "arrays",
) -> SourceData:
    """Wrap validated arrays (see `check_arrays`) as a `SourceData`.

    Args:
        x: Images ``[N, H, W, C]``, ``C`` in 1, 3, 4.
        y: Integer labels ``[N]``.
        class_names: Name of each class.
        image_size: Target ``(height, width)``.
        description: Text naming the source.

    Returns:
        The source; its datasets resize images lazily.
    """

    def convert(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return to_model_image(image, image_size), label

    def make_dataset(indices: np.ndarray) -> tf.data.Dataset:
        images = x[indices]
        labels = y[indices].astype(np.int32)
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    return SourceData(
        labels=y,
        class_names=list(class_names),
        description=description,
        make_dataset=make_dataset,
        fingerprint=array_digest([x, y]),
    )
