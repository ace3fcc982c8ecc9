"""Unsupervised domain adaptation: AdaBN, DANN and Deep CORAL.

Labels exist on the source domain only; the target's images come without
labels. ``adapt(model, source=..., target=..., method=...)`` trains ``model``
(in place; it is also returned) on batches made of a source half and a target
half:

- ``"adabn"`` (Li et al., 2016): no training; the BatchNorm statistics are
  replaced with the target's (`adabn`, a BatchNorm recalibration on target
  images).
- ``"dann"`` (Ganin and Lempitsky, 2015): a domain classifier on the
  features, behind a gradient reversal layer whose factor follows
  ``lambda_p = 2 / (1 + exp(-10 p)) - 1`` as training progress ``p`` goes
  from 0 to 1; the learning rate anneals as ``lr / (1 + 10 p) ** 0.75``.
- ``"coral"`` (Sun and Saenko, 2016): the classification loss plus
  ``weight * 1/(4 d^2) * ||C_S - C_T||_F^2`` on the covariances of the
  source and target features.

The classification loss is computed on the source half only. The features
are the pooled backbone output (the layer named ``pool`` of a
`TransferModel`), or the input of the last layer for other models.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import keras
import numpy as np
from keras import ops

from kertransfer._choices import ADAPTATION_METHODS
from kertransfer._graphs import releases_graphs
from kertransfer._log import fit_verbose
from kertransfer.data.batches import as_batches, iterate, num_batches
from kertransfer.errors import InvalidArgumentError, InvalidTypeError, format_message
from kertransfer.methods.terms import _single
from kertransfer.training import recalibrate_batchnorm
from kertransfer.training.batchnorm import batchnorm_layers
from kertransfer.training.optimizers import make_optimizer
from kertransfer.training.results import RunResult
from kertransfer.validation import check_choice, check_int, check_number

METHODS = ADAPTATION_METHODS


def dann_lambda(progress, gamma: float = 10.0):
    """DANN's reversal factor ``2 / (1 + exp(-gamma p)) - 1`` at progress ``p`` in [0, 1]."""
    return 2.0 / (1.0 + ops.exp(-gamma * progress)) - 1.0


@keras.saving.register_keras_serializable(package="kertransfer")
class GradientReversal(keras.layers.Layer):
    """Identity forward; multiplies gradients by ``-factor`` backward (Ganin and Lempitsky).

    Written as ``stop_gradient((1 + f) x) - f x``, so it needs no custom
    gradient and works on every backend.

    Args:
        factor: The reversal factor (a number, or a scalar tensor at call time
            through ``call(x, factor=...)``).
    """

    def __init__(self, factor: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def call(self, x, factor=None):
        f = ops.cast(self.factor if factor is None else factor, x.dtype)
        return ops.stop_gradient(x * (1.0 + f)) - f * x

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def coral_loss(source_features, target_features):
    """Deep CORAL's ``1/(4 d^2) * ||C_S - C_T||_F^2`` between two feature batches."""
    return _coral(source_features, target_features, None, None)


def _covariance(f, w):
    """Unbiased covariance of the rows of ``f`` weighted 0/1 by ``w`` (all rows if None)."""
    if w is None:
        n = ops.cast(ops.shape(f)[0], f.dtype)
        mean = ops.mean(f, axis=0, keepdims=True)
        centred = f - mean
        return ops.matmul(ops.transpose(centred), centred) / ops.maximum(n - 1.0, 1.0)
    w = ops.reshape(ops.cast(w, f.dtype), (-1, 1))
    n = ops.sum(w)
    mean = ops.sum(f * w, axis=0, keepdims=True) / ops.maximum(n, 1.0)
    centred = (f - mean) * w
    return ops.matmul(ops.transpose(centred), centred) / ops.maximum(n - 1.0, 1.0)


def _coral(fs, ft, ws, wt):
    d = ops.cast(ops.shape(fs)[-1], fs.dtype)
    diff = _covariance(fs, ws) - _covariance(ft, wt)
    return ops.sum(ops.square(diff)) / (4.0 * d * d)


def adabn(model, target, *, steps: int | None = None, batch_size: int | None = None,
          verbose: int = 0) -> int:
    """AdaBN: replace every BatchNorm layer's statistics with the target domain's.

    A BatchNorm recalibration (`kertransfer.training.recalibrate_batchnorm`)
    on target images: each layer's moving mean and variance become the
    average of its batch means and variances over the target batches (with
    one batch of all target images, exactly their mean and variance).
    ``target`` is any form kertransfer reads (see `kertransfer.data.adapter`:
    numpy images, ``(x, y)`` arrays, a dataset or ``PyDataset`` of batches,
    a DataBundle or ArrayData, whose train split is read unaugmented); labels
    are ignored. ``batch_size`` batches arrays (default 32). Returns the
    number of batches used.

    AdaBN assumes each BatchNorm layer holds the *source* domain's
    statistics. A layer that stayed frozen (``bn="frozen"``, the usual
    setting for fine-tuning pretrained weights) holds the pretraining data's
    (ImageNet's), and the layers above were trained against those; replacing
    them with the target's broke a model here (MobileNet v1 from ImageNet,
    digits -> digits_m: 0.517 -> 0.103, chance). So a `UserWarning` names
    such layers; train with ``bn="trainable"`` before adapting.
    """
    import warnings


    frozen = [bn.name for bn in batchnorm_layers(model, "all") if not bn.trainable]
    if frozen:
        shown = ", ".join(frozen[:3]) + (", ..." if len(frozen) > 3 else "")
        warnings.warn(
            f"adabn replaces the statistics of {len(frozen)} BatchNorm layer(s) that are "
            f"frozen ({shown}): they hold the pretraining data's statistics, not the source "
            "domain's, and the layers above were trained against them, so the model can "
            "fall to chance. Train the source model with bn='trainable' before AdaBN.",
            UserWarning, stacklevel=2)

    batches = as_batches(target, "target", images_only=True, batch_size=batch_size)
    return recalibrate_batchnorm(model, batches, steps=steps, verbose=verbose)


def _feature_tensor(model):
    try:
        return model.get_layer("pool").output
    except ValueError:
        return model.layers[-1].input


class _Adapter(keras.Model):
    """Trains a classifier on [source; target] batches with a domain term."""

    def __init__(self, classifier, method, total_steps, weight, gamma, domain_units, logits,
                 seed=None):
        super().__init__(name=f"{method}_adapter")
        self.net = keras.Model(_single(classifier.inputs), {"pred": classifier.outputs[0],
                                                   "features": _feature_tensor(classifier)})
        self.method, self.total_steps = method, float(max(total_steps, 1))
        self.weight, self.gamma, self.logits = float(weight), float(gamma), logits
        if method == "dann":
            self.reverse = GradientReversal()
            # ``seed`` seeds only this classifier's initialisation (no global state).
            seeds = [None] * 3 if seed is None else [int(seed) + i for i in range(3)]
            self.domain = keras.Sequential(
                [keras.layers.Dense(units, activation=act,
                                    kernel_initializer=keras.initializers.GlorotUniform(s))
                 for units, act, s in ((domain_units, "relu", seeds[0]),
                                       (domain_units, "relu", seeds[1]), (1, None, seeds[2]))],
                name="domain_classifier")
        self.step = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                    name="adapt_step", dtype="float32")

    def progress(self):
        return ops.minimum(ops.cast(self.step, "float32") / self.total_steps, 1.0)

    def call(self, x, training=False):
        out = self.net(x, training=training)
        result = {"pred": out["pred"], "features": out["features"]}
        if training:
            self.step.assign_add(1.0)
        if self.method == "dann":
            factor = dann_lambda(self.progress(), self.gamma)
            result["domain"] = self.domain(self.reverse(out["features"], factor=factor))
        return result

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        domain = ops.cast(y["domain"], "float32")
        source = 1.0 - domain
        pred = ops.cast(y_pred["pred"], "float32")
        ce = keras.losses.sparse_categorical_crossentropy(y["label"], pred,
                                                          from_logits=self.logits)
        loss = ops.sum(ce * source) / ops.maximum(ops.sum(source), 1.0)
        features = ops.cast(y_pred["features"], "float32")
        if self.method == "dann":
            logit = ops.reshape(ops.cast(y_pred["domain"], "float32"), (-1,))
            bce = keras.losses.binary_crossentropy(ops.reshape(domain, (-1, 1)),
                                                   ops.reshape(logit, (-1, 1)),
                                                   from_logits=True)
            loss = loss + self.weight * ops.mean(bce)
        elif self.method == "coral":
            loss = loss + self.weight * _coral(features, features, source, domain)
        return loss


def _mixed(source, target):
    """Batches of [source half; target half] with labels and domain flags, endlessly.

    ``source`` yields ``(images, labels)`` batches, ``target`` image batches
    (cycled); both are what `kertransfer.data.adapter.as_batches` returns, so
    any form of data works, under every backend.
    """

    def targets():
        while True:
            count = 0
            for batch in iterate(target):
                count += 1
                yield np.asarray(batch, "float32")
            if count == 0:
                raise InvalidArgumentError(format_message(
                    "The target data yielded no batch.", expected="non-empty target images",
                    received={"target": type(target).__name__}))

    stream = targets()
    while True:
        for batch in iterate(source):
            xs, ys = np.asarray(batch[0], "float32"), np.asarray(batch[1]).astype("int32")
            xt = next(stream)
            x = np.concatenate([xs, xt], axis=0)
            label = np.concatenate([ys.reshape(-1), np.zeros(len(xt), "int32")])
            domain = np.concatenate([np.zeros(len(xs), "float32"),
                                     np.ones(len(xt), "float32")])
            yield x, {"label": label, "domain": domain}
        for data in (source, target):
            end = getattr(data, "on_epoch_end", None)
            if end is not None:
                end()


@dataclasses.dataclass
class AdaptResult(RunResult):
    """What `adapt` returns: a `kertransfer.training.RunResult` with the ``method``."""

    method: str = ""


@releases_graphs
def adapt(model, *, source, target, method: str = "dann", epochs: int = 20,
          learning_rate: float = 1e-3, weight: float = 1.0, gamma: float = 10.0,
          domain_units: int = 64, optimizer: Any = "adam", verbose: int = 0,
          seed: int | None = None):
    """Adapt ``model`` from a labelled ``source`` to an unlabelled ``target`` domain.

    Args:
        model: A classifier from `kertransfer.build_transfer_model` (or any
            Keras classifier; its features are the input of its last layer).
        source: Labelled source data, in any labelled form kertransfer reads
            (see `kertransfer.data.adapter`): ``(x, y)`` arrays (batches of
            32, reshuffled every epoch), a finite ``tf.data`` dataset or
            ``keras.utils.PyDataset`` of ``(images, labels)`` batches, or a
            DataBundle or ArrayData (its training split).
        target: Target images in any form (labels are ignored): numpy images,
            ``(x, y)`` arrays, a dataset or ``PyDataset`` of batches, or a
            DataBundle or ArrayData (its training split). It is cycled.
        method: ``"adabn"``, ``"dann"`` or ``"coral"``.
        epochs: Passes over the source data.
        learning_rate: Initial rate (DANN anneals it).
        weight: Weight of the domain term (CORAL's lambda; DANN's domain
            loss).
        gamma: DANN's schedule constant (10 in the paper).
        domain_units: Width of the DANN domain classifier's two hidden layers.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9, as in the
            paper) or a Keras optimizer instance (its rate is set to
            ``learning_rate``, DANN's annealed schedule for ``"dann"``).
        verbose: Passed to ``fit``.
        seed: Seed of the domain classifier's initialisation (None: unseeded).
            No global random state is reset.

    Returns:
        An `AdaptResult` (a `kertransfer.training.RunResult`): ``model``,
        adapted in place, ``method``, ``seconds`` and ``history``, the
        per-epoch loss of the training methods.
    """
    if not isinstance(model, keras.Model):
        raise InvalidTypeError(format_message("adapt needs a Keras model.",
                                              received={"model": type(model).__name__}))
    check_choice(method, "method", METHODS, what="adaptation method")
    epochs = check_int(epochs, "epochs", minimum=1)
    weight = check_number(weight, "weight", minimum=0)
    gamma = check_number(gamma, "gamma", minimum=0)
    domain_units = check_int(domain_units, "domain_units", minimum=1)
    start = time.perf_counter()
    if method == "adabn":
        adabn(model, target)
        return AdaptResult(model=model, stages=[(0, "adabn")],
                           seconds=time.perf_counter() - start, method=method)

    src = as_batches(source, "source", labels=True, training=True)
    tgt = as_batches(target, "target", images_only=True, training=True)
    steps = num_batches(src) or 0
    if steps <= 0:
        raise InvalidArgumentError(
            format_message("The source data must be finite, of a known number of batches.",
                           expected="(x, y) arrays, a DataBundle or ArrayData, or a finite "
                                    "dataset or PyDataset of (x, y) batches",
                           received={"source": type(source).__name__}))
    logits = getattr(model, "activation", "softmax") == "logits"
    adapter = _Adapter(model, method, steps * epochs, weight, gamma, domain_units, logits, seed)
    lr = learning_rate
    if method == "dann":
        lr = _DannRate(learning_rate, steps * epochs)
    adapter.compile(optimizer=make_optimizer(optimizer, lr))
    hist = adapter.fit(_mixed(src, tgt), epochs=epochs, steps_per_epoch=steps,
                       verbose=fit_verbose(verbose))
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return AdaptResult(model=model, history=history, stages=[(0, method)],
                       seconds=time.perf_counter() - start, method=method)


@keras.saving.register_keras_serializable(package="kertransfer")
class _DannRate(keras.optimizers.schedules.LearningRateSchedule):
    """DANN's annealing ``lr / (1 + 10 p) ** 0.75``."""

    def __init__(self, initial: float, total_steps: int):
        self.initial, self.total_steps = float(initial), int(total_steps)

    def __call__(self, step):
        p = ops.minimum(ops.cast(step, "float32") / float(self.total_steps), 1.0)
        return self.initial / ops.power(1.0 + 10.0 * p, 0.75)

    def get_config(self):
        return {"initial": self.initial, "total_steps": self.total_steps}
