"""Learning without forgetting (Li and Hoiem, 2016), and a second head for the new task.

LwF keeps a model good at its old task without the old data: on the new
task's images, the old head is trained to keep giving the outputs it gave
before fine-tuning (knowledge distillation at temperature 2), while a new
head learns the new labels. `learn_without_forgetting` runs the paper's
procedure:

1. record the old head's outputs (a frozen copy of the model before
   training, run on each batch of new images: the same numbers as a
   recorded table, and the right ones when augmentation changes the images);
2. warm up the new head alone (backbone and old head frozen);
3. train everything jointly with the new task's loss plus
   ``weight * T^2 * KL``-style distillation of the old head's temperature-2
   outputs to the recorded ones (the `LwF` term).

The same two-head model with other terms (none, `L2SP`, `EWC`) gives the
baselines the forgetting benchmark compares.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kertransfer._graphs import releases_graphs
from kertransfer.data.gathering import as_arrays
from kertransfer.errors import InvalidTypeError, format_message
from kertransfer.freezing import freeze
from kertransfer.freezing.compiled import mark_compiled_by_kertransfer
from kertransfer.freezing.protocol import is_transfer_model
from kertransfer.methods.terms import Term, _single, with_regularizers
from kertransfer.models.transfer_model import SharedBackboneModel
from kertransfer.training.recipe import continue_training, phase_optimizer
from kertransfer.validation import check_int, check_number

OLD, NEW = "old", "new"


def _logits(y, activation):
    return y if activation == "logits" else ops.log(ops.clip(y, 1e-7, 1.0))


def add_head(model, num_classes: int, *, name: str = NEW, old_name: str = OLD,
             dropout: float | None = None):
    """A model with ``model``'s output as head ``old_name`` and a new softmax head.

    Both heads read the features ``model``'s own head reads (the pooled
    backbone output of a `TransferModel`); the layers are shared, not copied.
    From a transfer model the result is a `kertransfer.models.SharedBackboneModel`
    (its backbone and blocks), so `kertransfer.freeze` and the unfreezing
    callbacks work on it.
    """
    if not isinstance(model, keras.Model):
        raise InvalidTypeError(format_message("add_head needs a Keras model.",
                                              received={"model": type(model).__name__}))
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    last = model.layers[-1]
    features = last.input
    rate = getattr(model, "dropout", 0.0) if dropout is None else dropout
    x = keras.layers.Dropout(rate, name=f"{name}_dropout")(features) if rate else features
    new = keras.layers.Dense(num_classes, activation="softmax", name=f"{name}_predictions",
                             dtype="float32")(x)
    inputs, outputs = _single(model.inputs), {old_name: model.outputs[0], name: new}
    activation = {old_name: getattr(model, "activation", "softmax"), name: "softmax"}
    if is_transfer_model(model):
        two = SharedBackboneModel.from_transfer_model(model, inputs, outputs,
                                                      name=f"{model.name}_two_heads",
                                                      activation=activation)
    else:
        two = keras.Model(inputs, outputs, name=f"{model.name}_two_heads")
        two.activation = activation
    two.old_layer, two.new_layer = last, two.get_layer(f"{name}_predictions")
    return two


class LwF(Term):
    """Distil the old head's temperature-softened outputs to those of the model before training.

    ``weight * T^2 * mean_batch( -sum_k p_k log q_k )`` with ``p`` the recorded
    (teacher) and ``q`` the current old-head probabilities, both softened at
    temperature ``T`` (2 in the paper). The teacher is a frozen copy of the
    model taken when the term is attached.

    Args:
        temperature: Distillation temperature.
        weight: Weight of the old task (lambda_o in the paper).
        old: Name of the old head in the model's outputs.
    """

    name = "lwf"

    def __init__(self, temperature: float = 2.0, weight: float = 1.0, old: str = OLD):
        self.temperature = check_number(temperature, "temperature", minimum=0,
                                        exclusive_minimum=True)
        self.weight = check_number(weight, "weight", minimum=0,
                                   fix="The weight of the old task's distillation loss.")
        self.old = old
        self.teacher = None

    def attach(self, model) -> None:
        old = model.outputs[0] if not isinstance(model.output, dict) else model.output[self.old]
        teacher = keras.Model(_single(model.inputs), old)
        copy = keras.models.clone_model(teacher)  # new variables: a snapshot, not a reference
        copy.set_weights(teacher.get_weights())
        copy.trainable = False
        self.teacher = copy
        activation = getattr(model, "activation", "softmax")
        self.activation = activation.get(self.old, "softmax") if isinstance(activation, dict) \
            else activation

    def __call__(self, model, x, y, y_pred):
        if x is None:
            return ops.zeros(())
        t = self.temperature
        current = y_pred[self.old] if isinstance(y_pred, dict) else y_pred
        recorded = ops.stop_gradient(self.teacher(x, training=False))
        p = ops.softmax(_logits(ops.cast(recorded, "float32"), self.activation) / t, axis=-1)
        log_q = ops.log_softmax(_logits(ops.cast(current, "float32"), self.activation) / t,
                                axis=-1)
        return self.weight * t * t * ops.mean(-ops.sum(p * log_q, axis=-1))


@releases_graphs
def fit_two_heads(two, data, *, warmup_epochs: int, epochs: int, terms=(),
                  learning_rate: float = 1e-3, fine_tune_learning_rate: float | None = None,
                  optimizer: Any = "adam", batch_size: int = 32, verbose: int = 0,
                  new: str = NEW, old: str = OLD):
    """Warm up the new head alone, then train jointly with ``terms`` (the LwF procedure).

    ``data`` is the new task's labelled data in any form that holds every row
    in memory: ``(images, new_labels)`` arrays, a DataBundle or an ArrayData
    (its training split). The old head gets no loss of
    its own: only the terms act on it (none for plain fine-tuning).
    ``optimizer`` is ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9, as in the
    EWC and LwF papers) or a Keras optimizer instance; one optimizer serves
    both phases, so the joint phase goes on from the warm-up's moments. With
    Adam, a quadratic penalty like EWC's acts weakly: Adam
    moves every weight by about the learning rate whatever its gradient's
    size, so a weight whose penalty gradient is small next to the task's
    still moves at full speed.
    """
    import warnings

    import numpy as np


    x, y = as_arrays(data, "data")
    # Keras wants a target per output: the old head's is a placeholder with no loss.
    targets = {new: y, old: np.zeros(len(y), "int32")}
    losses = {new: "sparse_categorical_crossentropy", old: None}
    history = {}
    # One optimizer for both phases: the joint phase goes on from the warm-up's state.
    freeze(two, "all", recompile=False)
    two.old_layer.trainable = False
    two.compile(phase_optimizer(optimizer, learning_rate), loss=losses,
                metrics={new: ["accuracy"]})
    mark_compiled_by_kertransfer(two)
    if warmup_epochs:
        h = two.fit(x, targets, epochs=warmup_epochs, batch_size=batch_size, verbose=verbose)
        history["warmup"] = h.history
    with warnings.catch_warnings():  # the optimizer is rebuilt in place just below
        warnings.filterwarnings("ignore", message=".*compiled before its trainable layers")
        freeze(two, "none", recompile=False)
    # With no term the old head gets no gradient: leave it frozen.
    two.old_layer.trainable = bool(terms)
    if terms:
        with_regularizers(two, list(terms))
    continue_training(two, fine_tune_learning_rate or learning_rate)
    with warnings.catch_warnings():  # a term that leaves the old head alone (EWC) is fine
        warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
        h = two.fit(x, targets, epochs=epochs, batch_size=batch_size, verbose=verbose)
    history["joint"] = h.history
    return history


def learn_without_forgetting(model, data, num_classes: int, *, warmup_epochs: int = 5,
                             epochs: int = 20, temperature: float = 2.0, weight: float = 1.0,
                             learning_rate: float = 1e-3,
                             fine_tune_learning_rate: float | None = None,
                             optimizer: Any = "adam", batch_size: int = 32, verbose: int = 0):
    """LwF: a new head for ``data``'s labels, the old head kept by distillation.

    Args:
        model: The source model (its head is the old task's).
        data: The new task's labelled data: ``(images, labels)`` arrays, a DataBundle or
            an ArrayData (its training split, loaded into memory whole).
        num_classes: Classes of the new task.
        warmup_epochs: Epochs of the new head alone.
        epochs: Epochs of joint training.
        temperature: Distillation temperature (2 in the paper).
        weight: Weight of the old task's distillation loss.
        learning_rate: Rate of the warm-up (and of joint training unless
            ``fine_tune_learning_rate`` is given).
        fine_tune_learning_rate: Rate of joint training.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9) or a Keras
            optimizer instance.
        batch_size: Batch size.
        verbose: Passed to ``fit``.

    Returns:
        The two-head model (outputs ``{"old": ..., "new": ...}``).
    """
    two = add_head(model, num_classes)
    # The old head does not change during the warm-up (backbone and old head
    # frozen, BatchNorm in inference mode), so the teacher taken when joint
    # training starts is the model before training.
    fit_two_heads(two, data, warmup_epochs=warmup_epochs, epochs=epochs,
                  terms=[LwF(temperature=temperature, weight=weight)],
                  learning_rate=learning_rate, fine_tune_learning_rate=fine_tune_learning_rate,
                  optimizer=optimizer, batch_size=batch_size, verbose=verbose)
    return two
