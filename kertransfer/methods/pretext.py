"""Pretraining a backbone on a source task: supervised, self-supervised or unsupervised.

``pretrain(backbone, data, task=...)`` trains a backbone on a source task and
saves it where `kertransfer.build_transfer_model` loads it
(``weights="runs/pretrain/backbone.keras"``). Tasks:

- ``"supervised"``: classify the source's labels.
- ``"rotation"`` (Gidaris, Singh and Komodakis, 2018): each image is shown
  at 0, 90, 180 and 270 degrees and the network predicts which (4 classes).
- ``"simclr"`` (Chen et al., 2020): two random augmentations ("views") of
  each image go through the backbone and a projection MLP; the NT-Xent loss
  with a temperature pulls a view towards its twin and away from the other
  ``2N - 2`` views of the batch.
- ``"autoencoder"``: a decoder reconstructs the input (scaled to [0, 1])
  from the pooled backbone features; the loss is the mean squared error.

Every task but ``"supervised"`` ignores labels, so unlabelled images are
enough. The pretext transformations (rotations, views) are made inside the
model with ``keras.ops`` and Keras layers, so pretraining runs under
TensorFlow and JAX. BatchNorm statistics are recomputed on the unaugmented
images at the end (a BatchNorm recalibration).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any

import keras
import numpy as np
from keras import ops

from kertransfer._choices import PRETEXT_TASKS
from kertransfer._log import fit_verbose, print_msg
from kertransfer._seeds import seeded
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
from kertransfer.models import build_transfer_model
from kertransfer.training import recalibrate_batchnorm
from kertransfer.training.optimizers import make_optimizer
from kertransfer.training.results import RunResult
from kertransfer.training.run_folder import BACKBONE_FILE, save_run
from kertransfer.validation import check_choice, check_int, check_number

TASKS = PRETEXT_TASKS


def rotate_batch(images):
    """Each image at 0, 90, 180 and 270 degrees (counter-clockwise), with labels 0-3.

    Returns:
        ``(rotated, labels)``: ``rotated[k * B + i]`` is image ``i`` turned
        ``k * 90`` degrees (``np.rot90(image, k)``), and ``labels[k * B + i]``
        is ``k``. The images must be square.
    """
    turned = [images]
    for _ in range(3):
        turned.append(ops.flip(ops.transpose(turned[-1], (0, 2, 1, 3)), axis=1))
    n = ops.shape(images)[0]
    labels = ops.repeat(ops.arange(4, dtype="int32"), n)
    return ops.concatenate(turned, axis=0), labels


def nt_xent(z1, z2, temperature: float = 0.5):
    """SimCLR's NT-Xent loss for positive pairs ``(z1[i], z2[i])``.

    The ``2N`` projections are L2-normalised; for each one the positive is
    its twin and the negatives are the other ``2N - 2``; the loss is the mean
    cross-entropy of ``cos / temperature`` over the ``2N`` anchors.
    """
    z = ops.concatenate([z1, z2], axis=0)
    z = z / ops.maximum(ops.norm(z, axis=1, keepdims=True), 1e-12)
    n2 = ops.shape(z)[0]
    n = n2 // 2
    sim = ops.matmul(z, ops.transpose(z)) / temperature
    sim = sim - 1e9 * ops.eye(n2, dtype=sim.dtype)  # an anchor is not its own negative
    positives = ops.concatenate([ops.arange(n, n2), ops.arange(0, n)])
    ce = keras.losses.sparse_categorical_crossentropy(positives, sim, from_logits=True)
    return ops.mean(ce)


def simclr_augmentation(image_size, seed: int | None = 0) -> keras.layers.Layer:
    """SimCLR's view-making augmentation for small images (crop/zoom, colour, blur).

    Random resized crops (zoom in up to 40% and shift), colour jitter,
    random grayscale and contrast, as in the paper's recipe, with the
    strengths scaled for 32-pixel images; a ``keras.layers.Pipeline`` that
    runs inside the model under every backend. Images stay in 0-255.
    """
    del image_size  # the layers adapt to any size
    layers = keras.layers
    return layers.Pipeline([
        layers.RandomZoom((-0.4, 0.0), fill_mode="reflect", seed=seed),
        layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=None if seed is None
                                 else seed + 1),
        layers.RandomColorJitter(value_range=(0, 255), brightness_factor=0.4,
                                 contrast_factor=0.4, saturation_factor=(0.2, 0.8),
                                 hue_factor=0.1, seed=None if seed is None else seed + 2),
        layers.RandomGrayscale(0.2, seed=None if seed is None else seed + 3),
    ], name="simclr_views")


def _decoder(image_shape, name="decoder") -> keras.Sequential:
    """Pooled features -> an image in [0, 1] of ``image_shape`` (upsampling convolutions)."""
    h, w, c = (int(v) for v in image_shape)
    h0, w0 = max(h // 8, 1), max(w // 8, 1)
    layers = keras.layers
    return keras.Sequential([
        layers.Dense(h0 * w0 * 64, activation="relu"),
        layers.Reshape((h0, w0, 64)),
        layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu"),
        layers.Resizing(h, w),
        layers.Conv2D(c, 3, padding="same", activation="sigmoid"),
    ], name=name)


class PretextModel(keras.Model):
    """A feature extractor trained through a pretext task's head and loss.

    Args:
        features: Images (0-255) -> pooled features (a model sharing the
            backbone's layers).
        task: One of `TASKS`.
        num_classes: Classes of the ``"supervised"`` task.
        augment: The view-making layer of ``"simclr"``.
        projection_dim: Output width of SimCLR's projection MLP.
        temperature: NT-Xent temperature.
    """

    def __init__(self, features, task: str, *, num_classes: int | None = None,
                 augment=None, projection_dim: int = 64, temperature: float = 0.5,
                 image_shape=None, **kwargs):
        super().__init__(name=f"{task}_pretext", **kwargs)
        self.features, self.task = features, task
        self.temperature = float(temperature)
        width = int(features.outputs[0].shape[-1])
        if task in ("supervised", "rotation"):
            units = 4 if task == "rotation" else int(num_classes)
            self.head = keras.layers.Dense(units, name=f"{task}_head")
            self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        elif task == "simclr":
            self.augment = augment
            self.projector = keras.Sequential([keras.layers.Dense(width, activation="relu"),
                                               keras.layers.Dense(int(projection_dim))],
                                              name="projection")
            self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
                name="pair_accuracy")
        else:
            self.decoder = _decoder(image_shape)
            self.accuracy_tracker = None

    def views(self, images, training=True):
        """Two augmented views of each image: ``(view1, view2)``."""
        return (self.augment(images, training=training),
                self.augment(images, training=training))

    def call(self, x, training=False):
        x = ops.cast(x, "float32")
        if self.task == "supervised":
            return {"logits": self.head(self.features(x, training=training))}
        if self.task == "rotation":
            turned, labels = rotate_batch(x)
            return {"logits": self.head(self.features(turned, training=training)),
                    "labels": labels}
        if self.task == "simclr":
            v1, v2 = self.views(x, training=True)
            z = self.projector(self.features(ops.concatenate([v1, v2], axis=0),
                                             training=training))
            return {"z": z}
        return {"reconstruction": self.decoder(self.features(x, training=training)),
                "target": x / 255.0}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.task in ("supervised", "rotation"):
            labels = y if self.task == "supervised" else y_pred["labels"]
            logits = ops.cast(y_pred["logits"], "float32")
            self.accuracy_tracker.update_state(labels, logits)
            return ops.mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
        if self.task == "simclr":
            z = ops.cast(y_pred["z"], "float32")
            n = ops.shape(z)[0] // 2
            z1, z2 = z[:n], z[n:]
            # How often a view's nearest other view is its twin.
            zn = z / ops.maximum(ops.norm(z, axis=1, keepdims=True), 1e-12)
            sim = ops.matmul(zn, ops.transpose(zn)) - 2.0 * ops.eye(2 * n, dtype=z.dtype)
            twins = ops.concatenate([ops.arange(n, 2 * n), ops.arange(0, n)])
            self.accuracy_tracker.update_state(twins, sim)
            return nt_xent(z1, z2, self.temperature)
        rec = ops.cast(y_pred["reconstruction"], "float32")
        return ops.mean(ops.square(rec - ops.cast(y_pred["target"], "float32")))


@dataclasses.dataclass
class PretrainResult(RunResult):
    """What `pretrain` returns: a `kertransfer.training.RunResult`.

    Attributes (beside ``model``, the pretrained headless backbone, and the
    other `RunResult` fields; ``out`` is the run folder when one was written):
        pretext: The `PretextModel` it was trained in.
        task: The pretext task.
        path: The saved backbone (``out/backbone.keras``), when ``out`` was given:
            pass it as ``build_transfer_model(..., weights=path)``.
    """

    pretext: Any = None
    task: str = ""
    path: pathlib.Path | None = None

    @property
    def backbone(self) -> Any:
        """The pretrained headless backbone (``model``)."""
        return self.model


def _check(task, epochs, batch_size, learning_rate, temperature, projection_dim):
    """The arguments as Python numbers (numpy scalars become ``int``/``float``)."""
    check_choice(task, "task", TASKS, what="pretraining task")
    epochs, batch_size, projection_dim = (
        check_int(value, arg, minimum=1) for arg, value in
        (("epochs", epochs), ("batch_size", batch_size), ("projection_dim", projection_dim)))
    learning_rate, temperature = (
        check_number(value, arg, minimum=0, exclusive_minimum=True) for arg, value in
        (("learning_rate", learning_rate), ("temperature", temperature)))
    return epochs, batch_size, learning_rate, temperature, projection_dim


def _dataset(data, task, input_shape, batch_size, seed):
    """``(training data, unaugmented image batches, num_classes, image shape)``.

    Arrays stay arrays (``fit`` batches and shuffles them, and no TensorFlow
    is needed, as under JAX alone); a dataset name, a folder or ``(images,
    labels)`` arrays are loaded into a DataBundle; batches (a bundle, a
    dataset, a ``PyDataset``) stream, through `kertransfer.data.adapter`.
    """

    labelled = task == "supervised"
    if isinstance(data, (str, os.PathLike)):
        form = "source"
    else:
        form = form_of(data, "data")
    if form == "array_data":  # ArrayData: its arrays
        x, y = data.as_numpy("train")
        data = (x, y) if labelled or x.ndim != 4 else x
        form = "xy" if labelled or x.ndim != 4 else "images"
    if form == "xy" and np.ndim(data[0]) in (2, 3):
        # Sequences [N, timesteps(, features)] with labels, for a sequence backbone.
        if not labelled:
            raise InvalidArgumentError(format_message(
                f"task={task!r} works on images; sequences can be pretrained with "
                "task='supervised'.", received={"task": task}))
        x, y = np.asarray(data[0], "float32"), np.asarray(data[1]).astype("int32")
        if y.shape != (len(x),):
            raise DataError(format_message("labels must be one integer per sequence.",
                                           received={"labels": f"shape {y.shape}"}))
        clean = as_batches(x, "data", batch_size=64)
        return (x, y), clean, int(y.max()) + 1, tuple(x.shape[1:])
    if form == "images":
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
    if form in ("tf_dataset", "py_dataset", "list", "iterator"):
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
    bundle = data
    if form == "source" or form == "xy":

        if input_shape is None and form == "xy" and np.ndim(data[0]) == 4:
            input_shape = np.shape(data[0])[1:]
        if input_shape is None:
            raise InvalidArgumentError(format_message(
                "input_shape is needed to load this data source.",
                expected="e.g. input_shape=(32, 32, 3)", received={"data": data}))
        bundle = load(data, image_size=tuple(input_shape[:2]), batch_size=batch_size,
                      validation_split=0.0, seed=seed, verbose=0)
    train = as_batches(bundle, "data", images_only=not labelled, training=True)
    clean = as_batches(bundle, "data", images_only=True, batch_size=64)
    return train, clean, bundle.num_classes, example_shape(bundle, "data")


def pretrain(backbone, data, *, task: str = "simclr", input_shape=None, weights=None,
             epochs: int = 10, batch_size: int = 64, learning_rate: float = 1e-3,
             out=None, temperature: float = 0.5, projection_dim: int = 64, augment=None,
             optimizer: Any = None, seed: int | None = 0,
             verbose: int | str = "auto") -> PretrainResult:
    """Pretrain ``backbone`` on a source task and save it for `build_transfer_model`.

    Args:
        backbone: A registry name (``"mobilenet_v3_small"``) or a headless
            ``keras.Model``.
        data: The source: a dataset name or folder, ``(images, labels)``
            arrays, an images array (unlabelled), a ``tf.data`` dataset or
            ``keras.utils.PyDataset`` of image batches or ``(images, labels)``
            batches, or a DataBundle or ArrayData (its training split); see
            `kertransfer.data.adapter`. Labels are ignored except for
            ``task="supervised"``. For a sequence backbone (``"gru"``, ...),
            ``(sequences, labels)`` arrays with ``task="supervised"``.
        task: ``"supervised"``, ``"rotation"``, ``"simclr"`` or
            ``"autoencoder"``.
        input_shape: ``(height, width, 3)``; taken from the data when it
            carries a size (arrays, datasets, bundles).
        weights: Starting weights of the backbone (default: random).
        epochs: Passes over the data.
        batch_size: Images per batch (SimCLR sees twice as many views).
        learning_rate: The optimizer's rate.
        out: A folder to write ``backbone.keras``, ``config.json``,
            ``history.json`` and ``learning_curve.png`` to (atomically).
        temperature: NT-Xent temperature (``"simclr"``).
        projection_dim: Width of SimCLR's projection output.
        augment: SimCLR's view-making layer (default `simclr_augmentation`).
        optimizer: ``"adam"`` (the default), ``"adamw"``, ``"sgd"`` or a Keras
            optimizer instance (its rate set to ``learning_rate``).
        seed: Seed of what the call creates and draws: initialisation,
            shuffling and augmentation (None: unseeded). The caller's random
            state is left as it was.
        verbose: Passed to ``fit``: 0, 1, 2 or ``"auto"`` (progress bars on a
            terminal, a line per epoch elsewhere); a closing line unless 0.

    Returns:
        A `PretrainResult`; ``result.path`` goes to
        ``build_transfer_model(..., weights=result.path)``.
    """

    epochs, batch_size, learning_rate, temperature, projection_dim = _check(
        task, epochs, batch_size, learning_rate, temperature, projection_dim)
    optimizer = make_optimizer("adam" if optimizer is None else optimizer, learning_rate)
    with seeded(seed):  # what this call creates and draws; the caller's state is kept
        train, clean, num_classes, shape = _dataset(data, task, input_shape, batch_size, seed)
        compared = 2 if len(shape) == 3 else len(shape)  # images: height and width
        if input_shape is not None and tuple(input_shape)[:compared] != tuple(shape)[:compared]:
            raise InvalidArgumentError(format_message(
                "input_shape does not match the data's shape.",
                expected=f"input_shape={shape} (or leave it out)",
                received={"input_shape": tuple(input_shape)}))
        if task == "rotation" and shape[0] != shape[1]:
            raise InvalidArgumentError(format_message(
                "Rotation pretraining needs square images (a turned image must keep its shape).",
                expected="height == width", received={"input_shape": shape}))
        if task == "supervised" and (num_classes or 0) < 2:
            raise DataError(format_message("task='supervised' needs at least two classes.",
                                           received={"num_classes": num_classes}))
        if augment is not None and not isinstance(augment, keras.layers.Layer):
            raise InvalidTypeError(format_message("augment must be a Keras layer.",
                                                  received={"augment": type(augment).__name__}))
        base = build_transfer_model(backbone, 2, input_shape=shape, weights=weights,
                                    freeze="none", bn="trainable", dropout=0.0)
        features = keras.Model(base.inputs, base.get_layer("pool").output, name="features")
        if task == "simclr" and augment is None:
            augment = simclr_augmentation(shape[:2], seed=seed)
        pretext = PretextModel(features, task, num_classes=num_classes, augment=augment,
                               projection_dim=projection_dim, temperature=temperature,
                               image_shape=shape)
        pretext.compile(optimizer=optimizer)
        start = time.perf_counter()
        if isinstance(train, (np.ndarray, tuple)):
            x, y = train if isinstance(train, tuple) else (train, None)
            history = pretext.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True,
                                  verbose=fit_verbose(verbose)).history
        else:
            history = pretext.fit(train, epochs=epochs, shuffle=False,  # their own order
                                  verbose=fit_verbose(verbose)).history
    seconds = time.perf_counter() - start
    recalibrate_batchnorm(base, clean)  # statistics of unaugmented images, not of views
    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    path = run = None
    if out is not None:
        config = {"task": task, "backbone": getattr(base, "backbone_name", "custom"),
                  "input_shape": list(shape), "epochs": epochs, "batch_size": batch_size,
                  "learning_rate": learning_rate, "seed": seed, "seconds": round(seconds, 1),
                  "weights": None if weights is None else str(weights)}
        if task == "simclr":
            config.update(temperature=temperature, projection_dim=projection_dim)
        if task == "supervised":
            config["num_classes"] = num_classes
        run = save_run(base.backbone, out, config, history, model_file=BACKBONE_FILE)
        path = run / BACKBONE_FILE
    if verbose:
        last = ", ".join(f"{k} {v[-1]:.4f}" for k, v in history.items())
        print_msg(f"Pretrained ({task}, {epochs} epochs, {seconds:.0f}s): {last}"
              + (f"; backbone saved to {path}" if path else ""))
    return PretrainResult(model=base.backbone, history=history,
                          stages=[(0, f"pretrain ({task})")], seconds=seconds, out=run,
                          pretext=pretext, task=task, path=path)
