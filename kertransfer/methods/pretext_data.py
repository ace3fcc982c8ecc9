"""The source data of pretraining, in the form ``fit`` reads: `pretrain_data`.

Arrays stay arrays (``fit`` batches and shuffles them, and no TensorFlow is
needed, as under JAX alone); a dataset name, a folder or ``(images, labels)``
arrays are loaded into a DataBundle; batches (a bundle, a dataset, a
``PyDataset``) stream, through `kertransfer.data.adapter`.
"""

from __future__ import annotations

import os

import numpy as np

from kertransfer.data import load
from kertransfer.data.batches import as_batches
from kertransfer.data.forms import form_of
from kertransfer.data.gathering import as_arrays, example_shape, gather
from kertransfer.errors import (
    DataError,
    InvalidArgumentError,
    InvalidTypeError,
    format_message,
)

__all__ = ["pretrain_data"]


def pretrain_data(data, task, input_shape, batch_size, seed):
    """``(training data, unaugmented image batches, num_classes, image shape)``.

    Args:
        data: The source, in any form `kertransfer.methods.pretrain` takes.
        task: The pretext task (only ``"supervised"`` reads labels).
        input_shape: The image shape to load a source at, or ``None`` (taken
            from ``(images, labels)`` arrays).
        batch_size: Images per batch of a loaded source.
        seed: Seed of a loaded source's shuffling.

    Returns:
        The training data (arrays, or batches that stream), batches of the
        unaugmented images for the BatchNorm recalibration, the number of
        classes (``None`` when unknown) and the shape of one example.
    """
    labelled = task == "supervised"
    data, form = _form(data, labelled)
    if form == "xy" and np.ndim(data[0]) in (2, 3):
        return _sequences(data, task)
    if form == "images":
        return _images(data, labelled)
    if form in ("tf_dataset", "py_dataset", "list", "iterator"):
        return _batches(data, form, labelled)
    bundle = data
    if form == "source" or form == "xy":
        bundle = _load(data, form, input_shape, batch_size, seed)
    train = as_batches(bundle, "data", images_only=not labelled, training=True)
    clean = as_batches(bundle, "data", images_only=True, batch_size=64)
    return train, clean, bundle.num_classes, example_shape(bundle, "data")


def _form(data, labelled):
    """``(data, form)``: an ArrayData becomes its training arrays, a path a ``"source"``."""
    if isinstance(data, (str, os.PathLike)):
        return data, "source"
    form = form_of(data, "data")
    if form == "array_data":  # ArrayData: its arrays
        x, y = data.as_numpy("train")
        if labelled or x.ndim != 4:
            return (x, y), "xy"
        return x, "images"
    return data, form


def _sequences(data, task):
    """Sequences [N, timesteps(, features)] with labels, for a sequence backbone."""
    if task != "supervised":
        raise InvalidArgumentError(format_message(
            f"task={task!r} works on images; sequences can be pretrained with "
            "task='supervised'.", received={"task": task}))
    x, y = np.asarray(data[0], "float32"), np.asarray(data[1]).astype("int32")
    if y.shape != (len(x),):
        raise DataError(format_message("labels must be one integer per sequence.",
                                       received={"labels": f"shape {y.shape}"}))
    clean = as_batches(x, "data", batch_size=64)
    return (x, y), clean, int(y.max()) + 1, tuple(x.shape[1:])


def _images(data, labelled):
    """An unlabelled images array, as float32 (``task="supervised"`` is refused)."""
    x = np.asarray(as_arrays(data, "data", labels=False))
    if x.ndim != 4:
        raise DataError(format_message(
            "Unlabelled images must be an array [N, height, width, channels].",
            received={"data": f"array of shape {x.shape}"}))
    if labelled:
        raise DataError(format_message(
            "task='supervised' needs labels.",
            expected="(images, labels), a dataset name or folder, or a DataBundle",
            received={"data": f"array of shape {x.shape}"}))
    x = x.astype("float32")
    return x, as_batches(x, "data", batch_size=64), None, tuple(x.shape[1:])


def _batches(data, form, labelled):
    """A ``tf.data`` dataset or ``PyDataset`` of batches (a generator is refused: it is read
    more than once)."""
    if form == "iterator":
        raise InvalidTypeError(format_message(
            "data is a generator, and pretraining passes over the data several times.",
            expected="a tf.data.Dataset or keras.utils.PyDataset of batches, or arrays",
            received={"data": type(data).__name__}))
    shape = example_shape(data, "data")
    if len(shape) != 3 or None in shape:
        raise DataError(format_message(
            "A dataset must yield batches of images of one known size.",
            expected="element shape (batch, height, width, channels)",
            received={"data": f"batches of shape {(None, *shape)}"}))
    train = as_batches(data, "data", labels=labelled, images_only=not labelled,
                       training=True)
    num = None
    if labelled:
        _, labels = gather(data, "data", labels=True)
        num = int(np.max(labels)) + 1
    return train, as_batches(data, "data", images_only=True), num, shape


def _load(data, form, input_shape, batch_size, seed):
    """A dataset name or folder, or ``(images, labels)`` arrays, as a DataBundle."""
    if input_shape is None and form == "xy" and np.ndim(data[0]) == 4:
        input_shape = np.shape(data[0])[1:]
    if input_shape is None:
        raise InvalidArgumentError(format_message(
            "input_shape is needed to load this data source.",
            expected="e.g. input_shape=(32, 32, 3)", received={"data": data}))
    return load(data, image_size=tuple(input_shape[:2]), batch_size=batch_size,
                validation_split=0.0, seed=seed, verbose=0)
