"""Data sources for transfer learning, all loaded into one `DataBundle`.

Sources: the embedded ``"digits"`` and ``"digits_m"`` datasets (offline),
``"fashion_mnist"`` (Debian's or Keras' files, else an embedded subset),
``"tfds:NAME"`` (TensorFlow Datasets), a folder of class subfolders, or
``(x, y)`` numpy arrays. Each becomes stratified, seeded train/val/test
``tf.data`` pipelines of raw RGB images (float32, 0..255) and int32 labels.
``waveforms`` generates an embedded time-series source and target (arrays,
for the sequence backbones), and ``from_arrays`` splits inputs of any shape
(series, token ids) into an `ArrayData` that training, fine-tuning and
search take like a bundle.

Example::

    from kertransfer import data

    bundle = data.load("digits_m", image_size=(32, 32), validation_split=0.2, augment=True)
    print(bundle.summary())

The names are imported on first use, so ``import kertransfer`` does not
import TensorFlow (a JAX-only machine can use the rest of the toolkit).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kertransfer.errors import MissingDependencyError, format_message

if TYPE_CHECKING:
    from kertransfer.data.augment import build_augmentation
    from kertransfer.data.bundle import DataBundle
    from kertransfer.data.loader import list_sources, load
    from kertransfer.data.memory import ArrayData, from_arrays
    from kertransfer.data.shapes import quadrant_shapes
    from kertransfer.data.waveforms import waveforms

__all__ = ["ArrayData", "DataBundle", "build_augmentation", "from_arrays", "list_sources", "load",
           "quadrant_shapes", "waveforms"]

_HOMES = {
    "ArrayData": "kertransfer.data.memory",
    "DataBundle": "kertransfer.data.bundle",
    "from_arrays": "kertransfer.data.memory",
    "build_augmentation": "kertransfer.data.augment",
    "list_sources": "kertransfer.data.loader",
    "load": "kertransfer.data.loader",
    "quadrant_shapes": "kertransfer.data.shapes",
    "waveforms": "kertransfer.data.waveforms",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(_HOMES[name])
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
            raise MissingDependencyError(
                format_message(
                    f"`kertransfer.data.{name}` needs TensorFlow (tf.data pipelines).",
                    fix="Install it with `pip install tensorflow`.",
                    received={"missing_module": err.name},
                )
            ) from err
        raise
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
