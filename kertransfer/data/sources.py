"""What every data source hands to `kertransfer.data.load`.

A source (embedded, folder, TFDS, arrays) is read into a `SourceData`:
one integer label per example (so splits can be drawn without touching
pixels) and a function that turns a set of example indices into an unbatched
``tf.data.Dataset`` of ``(image float32 [H, W, 3] in 0..255, label int32)``.
A source with an official test set (Fashion-MNIST) marks its examples, which
may then only be drawn into the test split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from kertransfer.errors import InvalidArgumentError, InvalidTypeError, format_message

__all__ = ["SourceData", "check_class_names"]


@dataclass(frozen=True)
class SourceData:
    """A data source read far enough to split it.

    Attributes:
        labels: Integer class label per example, shape ``[N]``.
        class_names: Name of each class, in label order.
        description: Short text naming the source, for summaries.
        make_dataset: Maps example indices to an unbatched dataset of
            ``(image, label)`` pairs for exactly those examples: in the order
            given, or for sources read sequentially (TFDS) in source order.
        skipped_files: Files left out because they could not be decoded.
        test_only: Bool mask ``[N]`` of the examples of an official test set,
            which may only be drawn into the test split (never train or
            validation), or ``None``.
        cacheable: Whether ``load(cache=True)`` may cache the converted
            float32 images. ``False`` for sources that hold uint8 pixels in
            memory and convert them per batch, where a float32 cache would
            only multiply memory.
        fingerprint: A short digest of the source's examples that changes
            when they do, read without loading them (files' paths, sizes and
            modification times; a TFDS dataset's name, version and sizes;
            arrays' bytes); see `kertransfer.data.fingerprint`.
    """

    labels: np.ndarray
    class_names: list[str]
    description: str
    make_dataset: Callable[[np.ndarray], tf.data.Dataset]
    skipped_files: list[str] = field(default_factory=list)
    test_only: np.ndarray | None = None
    cacheable: bool = True
    fingerprint: str = ""


def check_class_names(
    class_names: Sequence[str] | None, expected: int | None = None
) -> list[str] | None:
    """Validate a user's ``class_names`` argument.

    Args:
        class_names: A sequence of distinct names, or ``None``.
        expected: The number of classes the source has, when it is fixed.

    Returns:
        The names as a list of ``str``, or ``None`` when none were given.

    Raises:
        InvalidTypeError: If ``class_names`` is not a list or tuple.
        InvalidArgumentError: If it is empty, has duplicates, or has the wrong length.
    """
    if class_names is None:
        return None
    if isinstance(class_names, str) or not isinstance(class_names, (list, tuple)):
        raise InvalidTypeError(
            format_message(
                "`class_names` must be a list of class names.",
                expected="a list or tuple of strings, or None",
                received={"class_names": class_names},
            )
        )
    names = [str(name) for name in class_names]
    if not names:
        raise InvalidArgumentError(
            format_message(
                "`class_names` is empty.",
                expected="at least one class name, or None",
                received={"class_names": class_names},
            )
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidArgumentError(
            format_message(
                f"`class_names` has duplicate names: {duplicates}.",
                expected="distinct names",
                received={"class_names": class_names},
            )
        )
    if expected is not None and len(names) != expected:
        raise InvalidArgumentError(
            format_message(
                f"`class_names` has {len(names)} names but the source has {expected} classes.",
                expected=f"exactly {expected} names, or None to keep the source's own",
                received={"class_names": class_names},
            )
        )
    return names
