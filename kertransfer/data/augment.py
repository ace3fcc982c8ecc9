"""Data augmentation built from Keras preprocessing layers.

The result is applied to batches of the train split inside tf.data only.
Keras 3 preprocessing layers run there under every backend (they switch to
TensorFlow inside a tf.data graph), but a ``keras.Sequential`` does not
under JAX or PyTorch, so the layers are chained in a ``keras.layers.Pipeline``
(a plain Layer that applies its layers in order). A user's ``keras.Sequential``
is run as a Pipeline of its layers for the same reason. A user's own layer
must itself be tf.data-safe under a non-TensorFlow backend.
"""

from __future__ import annotations

from typing import Any

import keras

from kertransfer.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    format_message,
    suggest,
)
from kertransfer.validation import check_fraction

__all__ = [
    "AUGMENTATION_KEYS",
    "DEFAULT_AUGMENTATION",
    "build_augmentation",
    "tf_data_safe",
]

DEFAULT_AUGMENTATION: dict[str, Any] = {
    "flip": "horizontal",
    "rotation": 0.1,
    "zoom": 0.1,
    "contrast": 0.1,
}
AUGMENTATION_KEYS = tuple(DEFAULT_AUGMENTATION)
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")
_SPEC = (
    "None/False (no augmentation), True or 'default', a dict with keys "
    f"{list(AUGMENTATION_KEYS)}, or a keras.layers.Layer"
)


def _layers_from_dict(spec: dict, seed: int | None) -> list[keras.layers.Layer]:
    unknown = [key for key in spec if key not in AUGMENTATION_KEYS]
    if unknown:
        hint = suggest(str(unknown[0]), AUGMENTATION_KEYS)
        raise InvalidArgumentError(
            format_message(
                f"Unknown augmentation key(s) {unknown}." + (f" {hint}" if hint else ""),
                expected=f"keys among {list(AUGMENTATION_KEYS)}",
                received={"augment": spec},
            )
        )

    def next_seed(offset: int) -> int | None:
        return None if seed is None else int(seed) + offset

    layers: list[keras.layers.Layer] = []
    flip = spec.get("flip")
    if flip is True:
        flip = "horizontal"
    if flip not in (None, False):
        if flip not in FLIP_MODES:
            raise InvalidArgumentError(
                format_message(
                    "Augmentation 'flip' has an unknown mode.",
                    expected=f"one of {list(FLIP_MODES)}, True (horizontal) or None",
                    received={"augment": spec},
                )
            )
        layers.append(keras.layers.RandomFlip(flip, seed=next_seed(0)))
    makers = {
        "rotation": lambda f, s: keras.layers.RandomRotation(f, seed=s),
        "zoom": lambda f, s: keras.layers.RandomZoom(f, seed=s),
        "contrast": lambda f, s: keras.layers.RandomContrast(f, value_range=(0, 255), seed=s),
    }
    for offset, (key, make) in enumerate(makers.items(), start=1):
        value = spec.get(key)
        if value is None:
            continue
        factor = check_fraction(
            value, f"augment[{key!r}]",
            fix=f"E.g. {{{key!r}: {DEFAULT_AUGMENTATION[key]}}} (0 or None turns it off).")
        if factor > 0:
            layers.append(make(factor, next_seed(offset)))
    return layers


def build_augmentation(spec: Any, seed: int | None = 0) -> keras.layers.Layer | None:
    """Build the train-time augmentation that ``spec`` describes.

    Args:
        spec: ``None`` or ``False`` for none; ``True`` or ``"default"`` for
            RandomFlip("horizontal"), RandomRotation(0.1), RandomZoom(0.1) and
            RandomContrast(0.1); a dict picking some of them, e.g.
            ``{"flip": "horizontal", "rotation": 0.2}`` (keys ``flip``,
            ``rotation``, ``zoom``, ``contrast``); or a ``keras.layers.Layer``,
            returned as-is.
        seed: Seed of the random layers (each layer gets ``seed + i``).

    Returns:
        A ``keras.layers.Pipeline`` of preprocessing layers (works in tf.data
        under any backend), the given layer, or ``None`` for no augmentation.
        Images in and out are float batches ``[B, H, W, 3]`` in 0..255.

    Raises:
        InvalidArgumentError: On an unknown string, dict key or value.
        InvalidTypeError: On any other type.
    """
    if spec is None or spec is False:
        return None
    if isinstance(spec, keras.layers.Layer):
        return spec
    if spec is True:
        spec = "default"
    if isinstance(spec, str):
        if spec.lower() != "default":
            hint = suggest(spec, ["default"])
            raise InvalidArgumentError(
                format_message(
                    f"Unknown augmentation {spec!r}." + (f" {hint}" if hint else ""),
                    expected=_SPEC,
                    received={"augment": spec},
                )
            )
        spec = DEFAULT_AUGMENTATION
    if not isinstance(spec, dict):
        raise InvalidTypeError(
            format_message(
                "`augment` has an unsupported type.",
                expected=_SPEC,
                received={"augment": spec},
            )
        )
    layers = _layers_from_dict(spec, seed)
    if not layers:
        return None
    return keras.layers.Pipeline(layers, name="augmentation")


def tf_data_safe(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Return a layer that can be called inside tf.data under any Keras backend.

    A ``keras.Sequential`` fails inside tf.data under JAX or PyTorch; its
    layers are re-chained in a ``keras.layers.Pipeline`` (the same layer
    objects, so the same weights and seeds). Other layers are returned as-is.

    Args:
        layer: An augmentation layer.

    Returns:
        A layer to call in ``Dataset.map``.
    """
    if isinstance(layer, keras.Sequential) and keras.backend.backend() != "tensorflow":
        return keras.layers.Pipeline(list(layer.layers))
    return layer
