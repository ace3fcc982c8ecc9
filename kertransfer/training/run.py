"""Training a transfer model on a data bundle and saving the run."""

from __future__ import annotations

import os
import time
from typing import Any

import keras

from kertransfer._graphs import releases_graphs
from kertransfer._log import fit_verbose, print_msg
from kertransfer.data.training_data import as_training_data, unaugmented_train
from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.freezing.compiled import compiled_by_kertransfer, mark_compiled_by_kertransfer
from kertransfer.training.batchnorm import batchnorm_layers, recalibrate_batchnorm
from kertransfer.training.optimizers import make_optimizer
from kertransfer.training.results import TrainResult
from kertransfer.training.run_folder import data_class_names, save_run
from kertransfer.training.validation import RecalibratedValidation
from kertransfer.validation import check_int, is_bool


def _loss_for_activation(activation: str) -> keras.losses.Loss:
    if activation == "sigmoid":
        return keras.losses.BinaryCrossentropy()
    return keras.losses.SparseCategoricalCrossentropy(from_logits=activation == "logits")


def _metric_for_activation(activation: str, metrics):
    if activation == "sigmoid":
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    return list(metrics)


def loss_for(model):
    """The loss that matches a transfer model's output activation (a dict per head)."""
    activation = getattr(model, "activation", "softmax")
    if isinstance(activation, dict):
        return {head: _loss_for_activation(act) for head, act in activation.items()}
    return _loss_for_activation(activation)


def build_training_state(model, data: Any) -> None:
    """Create a compiled model's optimizer, loss and metric variables before ``fit``.

    Under TensorFlow, Keras otherwise creates them while tracing the first
    train step, and a ``tf.function`` that creates variables is traced twice:
    building them first halves the tracing, which dominates short runs (a
    search trial, a few epochs on cached features). ``data`` gives the batch
    structure: a ``tf.data.Dataset`` or ``(x, y)`` arrays. Does nothing under
    other backends (their trainers build this state first already) or where
    Keras has no such step.
    """
    if keras.backend.backend() != "tensorflow":
        return
    build = getattr(model, "_symbolic_build", None)
    if build is None or getattr(model, "optimizer", None) is None:
        return
    spec = getattr(data, "element_spec", None)
    if spec is not None:
        batch = spec
    elif isinstance(data, tuple) and len(data) == 2:
        batch = (data[0][:1], keras.tree.map_structure(lambda a: a[:1], data[1]))
    else:
        return
    try:
        build(data_batch=batch)
    except (TypeError, ValueError, AttributeError, RuntimeError):
        return  # fit builds it itself, tracing twice


def compile_for_transfer(model, learning_rate: float = 1e-3, optimizer: str | Any = "adam",
                         metrics=("accuracy",), steps_per_execution: int = 1,
                         loss_weights: dict[str, float] | None = None) -> None:
    """Compile ``model`` with the loss matching its head(s) and an optimizer.

    Args:
        model: A model from ``build_transfer_model``.
        learning_rate: Learning rate, when ``optimizer`` is a name.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or a Keras optimizer.
        metrics: Metrics to track (of every head, for a multi-task model).
        steps_per_execution: Training steps per compiled call (more cuts the
            per-step overhead of tiny models, such as a head on cached features).
        loss_weights: ``{task: weight}`` of a multi-task model's losses (1 for
            a task left out); the loss is their weighted sum.
    """
    steps_per_execution = check_int(steps_per_execution, "steps_per_execution", minimum=1)
    if isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer, learning_rate)
    activation = getattr(model, "activation", "softmax")
    kwargs = {}
    if isinstance(activation, dict):
        weights = dict(loss_weights or {})
        unknown = sorted(set(weights) - set(activation))
        if unknown:
            raise InvalidArgumentError(format_message(
                "loss_weights names heads the model does not have.",
                expected=f"keys among {sorted(activation)}", received={"loss_weights": weights}))
        metrics = {head: _metric_for_activation(act, metrics) for head, act in activation.items()}
        kwargs["loss_weights"] = {head: float(weights.get(head, 1.0)) for head in activation}
    else:
        if loss_weights:
            raise InvalidArgumentError(format_message(
                "loss_weights needs a model with several heads.",
                received={"loss_weights": loss_weights}))
        metrics = _metric_for_activation(activation, metrics)
    model.compile(optimizer=optimizer, loss=loss_for(model), metrics=metrics,
                  steps_per_execution=steps_per_execution, **kwargs)
    mark_compiled_by_kertransfer(model)


def evaluate_splits(model, data, splits=("val", "test")) -> dict[str, float]:
    """Evaluate on the bundle's splits that exist; ``{"val_accuracy": ...}``."""
    out: dict[str, float] = {}
    for split in splits:
        ds = getattr(data, split, None)
        if ds is None:
            continue
        args = ds[:2] if isinstance(ds, tuple) else (ds,)  # (x, y) arrays, or batches
        values = model.evaluate(*args, verbose=0, return_dict=True)
        for key, value in values.items():
            out[f"{split}_{key}"] = float(value)
    return out


@releases_graphs
def train(model, data, *, epochs: int = 10, learning_rate: float = 1e-3,
          optimizer: str | Any = "adam", callbacks=None, recalibrate_bn: str | bool = "auto",
          out: str | os.PathLike | None = None, config: dict | None = None,
          verbose: int | str = "auto", compile: bool | str = "auto",
          validate_each_epoch: bool = True,
          loss_weights: dict[str, float] | None = None) -> TrainResult:
    """Fit ``model`` on ``data`` (a `kertransfer.data.DataBundle`), evaluate, save.

    Args:
        model: A model from ``build_transfer_model``.
        data: A `kertransfer.data.DataBundle` or `kertransfer.data.ArrayData`
            (``train`` and optionally ``val``/``test``), or ``(x, y)`` arrays
            of any input shape (all for training).
        epochs: Training epochs.
        learning_rate: Learning rate (when compiling here).
        optimizer: Optimizer name or instance (when compiling here).
        callbacks: Extra Keras callbacks.
        recalibrate_bn: After training, recompute the moving statistics of
            BatchNorm layers that trained (see `recalibrate_batchnorm`).
            ``"auto"`` does it when any BatchNorm layer was trainable.
        out: A run folder to write (``model.keras``, ``config.json``,
            ``history.json``, ``learning_curve.png``; see
            `kertransfer.training.run_folder`); written atomically. Its
            ``config.json`` keeps the data's ``class_names`` (unless
            ``config`` gives them), which ``kertransfer export`` uses.
        config: Extra entries for ``config.json``.
        verbose: Keras progress output: 0, 1 (progress bars), 2 (a line per
            epoch) or ``"auto"`` (bars on a terminal, a line per epoch elsewhere,
            such as captured logs).
        compile: ``"auto"`` compiles here (the loss of the head, ``optimizer``
            at ``learning_rate``) unless you compiled the model yourself, whose
            settings are kept (a line says so; ``learning_rate`` and
            ``optimizer`` are then not used). ``True`` compiles here always,
            ``False`` never.
        validate_each_epoch: Evaluate on ``data.val`` after every epoch (the
            final evaluation happens either way). While BatchNorm layers
            train, each validation runs after their statistics were
            recalibrated on un-augmented training data
            (`kertransfer.training.validation.RecalibratedValidation`; lagging
            moving averages would score near chance on little data), unless
            ``recalibrate_bn`` is False.
        loss_weights: ``{task: weight}`` for a multi-task model (when
            compiling here); its data gives ``{task: labels}`` (see
            `kertransfer.data.DataBundle.with_tasks`).

    Returns:
        A `TrainResult`.
    """
    epochs = check_int(epochs, "epochs", minimum=1)
    data = as_training_data(data)
    if not (is_bool(compile) or (isinstance(compile, str) and compile == "auto")):
        raise InvalidArgumentError(format_message(
            "compile must be True, False or 'auto'.", received={"compile": compile}))
    compile = compile if isinstance(compile, str) else bool(compile)
    if compile == "auto":
        compile = not getattr(model, "compiled", False) or compiled_by_kertransfer(model)
        if not compile and verbose:
            print_msg("train: keeping the compile settings you gave the model (its optimizer "
                      "and loss); pass compile=True to compile with learning_rate and "
                      "optimizer instead.")
    if compile:
        compile_for_transfer(model, learning_rate, optimizer, loss_weights=loss_weights)
    start = time.perf_counter()
    bn_trained = bool(batchnorm_layers(model, "trainable"))
    val = data.val if validate_each_epoch else None
    build_training_state(model, data.train)
    clean = unaugmented_train(data)
    callbacks = list(callbacks or [])
    if val is not None and recalibrate_bn is not False:
        # Validation while BatchNorm trains sees recalibrated statistics, not lagging ones.
        callbacks.insert(0, RecalibratedValidation(clean))
    # The bundle's train split is shuffled already (seeded, every epoch).
    hist = model.fit(data.train, validation_data=val, epochs=epochs, shuffle=False,
                     callbacks=callbacks, verbose=fit_verbose(verbose))
    # Unfreezing callbacks can make BatchNorm layers trainable during fit.
    bn_trained = bn_trained or bool(batchnorm_layers(model, "trainable"))
    if recalibrate_bn is True or (recalibrate_bn == "auto" and bn_trained):
        recalibrate_batchnorm(model, clean, layers="trainable", verbose=int(bool(verbose)))
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    metrics = evaluate_splits(model, data)
    result = TrainResult(model, history, metrics, seconds=seconds)
    if out is not None:
        run_config = dict(config or {})
        run_config.setdefault("epochs", epochs)
        run_config.setdefault("learning_rate", learning_rate)
        run_config["metrics"] = metrics
        run_config["seconds"] = round(seconds, 2)
        if run_config.get("class_names") is None:  # for kertransfer export and predict
            run_config["class_names"] = data_class_names(model, data)
        result.out = save_run(model, out, run_config, history)
    return result
