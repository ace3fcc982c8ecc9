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

`PretextModel` and its tasks' pieces live in `kertransfer.methods.pretext_model`,
the reading of the source in `kertransfer.methods.pretext_data`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import keras
import numpy as np

from kertransfer._choices import PRETEXT_TASKS
from kertransfer._graphs import releases_graphs
from kertransfer._log import fit_verbose, print_msg
from kertransfer._seeds import seeded
from kertransfer.errors import (
    DataError,
    InvalidArgumentError,
    InvalidTypeError,
    format_message,
)
from kertransfer.methods.pretext_data import pretrain_data
from kertransfer.methods.pretext_model import (
    PretextModel,
    nt_xent,
    rotate_batch,
    simclr_augmentation,
)
from kertransfer.models import build_transfer_model
from kertransfer.training import recalibrate_batchnorm
from kertransfer.training.optimizers import make_optimizer
from kertransfer.training.results import RunResult
from kertransfer.training.run_folder import BACKBONE_FILE, save_run
from kertransfer.validation import check_choice, check_int, check_number

__all__ = ["TASKS", "PretextModel", "PretrainResult", "nt_xent", "pretrain", "rotate_batch",
           "simclr_augmentation"]

TASKS = PRETEXT_TASKS


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


def _check_against_data(task, input_shape, shape, num_classes, augment):
    """Refuse an ``input_shape``, a task or an ``augment`` that the data cannot take."""
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


def _fit(pretext, train, epochs, batch_size, verbose):
    """``pretext.fit`` on arrays (batched and shuffled by ``fit``) or on batches (in order)."""
    if isinstance(train, (np.ndarray, tuple)):
        x, y = train if isinstance(train, tuple) else (train, None)
        return pretext.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True,
                           verbose=fit_verbose(verbose)).history
    return pretext.fit(train, epochs=epochs, shuffle=False,  # their own order
                       verbose=fit_verbose(verbose)).history


def _run_config(base, task, shape, num_classes, *, epochs, batch_size, learning_rate, seed,
                seconds, weights, temperature, projection_dim):
    """The ``config.json`` of a pretraining run folder."""
    config = {"task": task, "backbone": getattr(base, "backbone_name", "custom"),
              "input_shape": list(shape), "epochs": epochs, "batch_size": batch_size,
              "learning_rate": learning_rate, "seed": seed, "seconds": round(seconds, 1),
              "weights": None if weights is None else str(weights)}
    if task == "simclr":
        config.update(temperature=temperature, projection_dim=projection_dim)
    if task == "supervised":
        config["num_classes"] = num_classes
    return config


@releases_graphs
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
        train, clean, num_classes, shape = pretrain_data(data, task, input_shape, batch_size,
                                                         seed)
        _check_against_data(task, input_shape, shape, num_classes, augment)
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
        history = _fit(pretext, train, epochs, batch_size, verbose)
    seconds = time.perf_counter() - start
    recalibrate_batchnorm(base, clean)  # statistics of unaugmented images, not of views
    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    path = run = None
    if out is not None:
        config = _run_config(base, task, shape, num_classes, epochs=epochs,
                             batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                             seconds=seconds, weights=weights, temperature=temperature,
                             projection_dim=projection_dim)
        run = save_run(base.backbone, out, config, history, model_file=BACKBONE_FILE)
        path = run / BACKBONE_FILE
    if verbose:
        last = ", ".join(f"{k} {v[-1]:.4f}" for k, v in history.items())
        print_msg(f"Pretrained ({task}, {epochs} epochs, {seconds:.0f}s): {last}"
              + (f"; backbone saved to {path}" if path else ""))
    return PretrainResult(model=base.backbone, history=history,
                          stages=[(0, f"pretrain ({task})")], seconds=seconds, out=run,
                          pretext=pretext, task=task, path=path)
