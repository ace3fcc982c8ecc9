"""Episodic meta-training of a backbone: prototypical networks (Snell et al. 2017).

A backbone is trained on N-way K-shot episodes drawn from base classes, so
that its features separate classes by distance to their prototypes: each
episode's support images give one prototype per class (the mean of their
L2-normalised features) and the query images are classified by a softmax of
their negative squared distances to the prototypes, times a learned scale
(as in Chen et al. 2021's Meta-Baseline, which starts meta-training from a
pretrained network, as this does from ImageNet weights). The loss is the
query cross-entropy. The classifier that `kertransfer.methods.fewshot.PrototypeClassifier`
uses on novel classes is the one trained here.

Episodes come from arrays by random access, or from streamed data
(``tf.data``, ``PyDataset``, a DataBundle) through a bounded pool of
``pool_per_class`` images per class that each new batch refreshes, so a
stream is never read into memory whole.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import keras
import numpy as np
from keras import ops

from kertransfer._graphs import releases_graphs
from kertransfer._log import fit_verbose, print_msg
from kertransfer._seeds import seeded
from kertransfer.data.batches import as_batches, iterate
from kertransfer.data.forms import form_of
from kertransfer.errors import DataError, InvalidArgumentError, InvalidTypeError, format_message
from kertransfer.methods.fewshot.classifiers import evaluate_episodes
from kertransfer.training.optimizers import make_optimizer
from kertransfer.validation import check_int, check_number

__all__ = ["EpisodeLogits", "MetaTrainResult", "meta_train"]


class EpisodeLogits(keras.layers.Layer):
    """Query logits of one episode: ``[1, ways * queries, ways]``.

    Its input is one episode, ``[1, ways * (shots + queries), *image_shape]``:
    the support images class by class (``shots`` each), then the queries
    class by class (``queries`` each). ``features`` maps images to feature
    vectors; the logits are ``-scale * ||q - p||²`` on L2-normalised
    features, ``scale`` a trained weight.
    """

    def __init__(self, features: keras.Model, ways: int, shots: int, queries: int,
                 scale: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.features = features
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        self.initial_scale = float(scale)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(),
                                     initializer=keras.initializers.Constant(self.initial_scale))

    def call(self, episode, training=None):
        images = ops.reshape(episode, (-1, *episode.shape[2:]))
        f = ops.cast(self.features(images, training=training), "float32")
        f = f / ops.maximum(ops.norm(f, axis=-1, keepdims=True), 1e-12)
        n_support = self.ways * self.shots
        support = ops.reshape(f[:n_support], (self.ways, self.shots, -1))
        prototypes = ops.mean(support, axis=1)
        query = f[n_support:]
        d = ops.sum(ops.square(query[:, None, :] - prototypes[None]), axis=-1)
        return ops.expand_dims(-self.scale * d, 0)


class _ArrayPool:
    """Episode images from arrays: every image of a class is a candidate."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}

    def refresh(self, rng):
        pass

    def classes(self, need):
        return [c for c, idx in self.by_class.items() if len(idx) >= need]

    def draw(self, c, k, rng):
        return self.x[rng.choice(self.by_class[c], k, replace=False)]


def _check_classes(pool, need: int, ways: int, argument: str = "data") -> None:
    """A `DataError` unless ``ways`` classes of the pool have ``need`` images each."""
    usable = len(pool.classes(need))
    if usable < ways:
        raise DataError(format_message(
            f"Only {usable} classes of {argument} have {need} images (shots + queries).",
            expected=f"at least {ways} such classes",
            received={"ways": ways, "shots + queries": need}))


class _StreamPool:
    """Episode images from a stream: up to ``size`` images per class, refreshed batch by
    batch (each new image replaces a random one of its class once the class is full, or
    once the stream has been read whole: an image is never pooled twice), restarting the
    stream at its end."""

    def __init__(self, data, argument, size, need, ways, rng):
        self.data, self.argument, self.size = data, argument, int(size)
        self.pool: dict[Any, list] = {}
        self._it = None
        self._seen_all = False  # after one whole pass, new images only replace pooled ones
        while len(self.classes(need)) < ways:
            if not self._read(rng):
                _check_classes(self, need, ways, argument)

    def _read(self, rng) -> bool:
        """Add one batch to the pool; False at the end of a pass (the stream restarts)."""
        if self._it is None:
            self._it = iter(iterate(self.data))
        try:
            batch = next(self._it)
        except StopIteration:
            self._it, self._seen_all = None, True
            return False
        xb, yb = np.asarray(batch[0]), np.asarray(batch[1]).reshape(-1)
        for image, label in zip(xb, yb):
            items = self.pool.setdefault(label.item(), [])
            if len(items) < self.size and not self._seen_all:
                items.append(image)
            elif items:
                items[rng.integers(len(items))] = image
        return True

    def refresh(self, rng):
        self._read(rng)

    def classes(self, need):
        return [c for c, items in self.pool.items() if len(items) >= need]

    def draw(self, c, k, rng):
        items = self.pool[c]
        return np.stack([items[i] for i in rng.choice(len(items), k, replace=False)])


class _Episodes(keras.utils.PyDataset):
    """``(episode [1, N, ...], query labels [1, ways * queries])`` per step."""

    def __init__(self, pool, ways, shots, queries, steps, seed):
        super().__init__()
        self.pool, self.ways, self.shots, self.queries = pool, ways, shots, queries
        self.steps = steps
        self.rng = np.random.default_rng(seed)
        self.labels = np.repeat(np.arange(ways), queries)[None].astype("int32")

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        self.pool.refresh(self.rng)
        usable = self.pool.classes(self.shots + self.queries)
        chosen = self.rng.choice(len(usable), self.ways, replace=False)
        support, query = [], []
        for i in chosen:
            images = self.pool.draw(usable[i], self.shots + self.queries, self.rng)
            support.append(images[:self.shots])
            query.append(images[self.shots:])
        episode = np.concatenate(support + query).astype("float32")
        return episode[None], self.labels


@dataclasses.dataclass
class MetaTrainResult:
    """What `meta_train` returns.

    Attributes:
        model: The model whose feature part was meta-trained (in place).
        history: ``{metric: [value per epoch]}``: the episodes' query ``loss``
            and ``accuracy``, and ``val_accuracy`` (mean episode accuracy on
            ``validation_data``) when given.
        best_epoch: The epoch (from 1) whose weights the model holds: the best
            ``val_accuracy`` with ``validation_data``, else the last.
        scale: The learned distance scale.
        seconds: Wall time of the training.
    """

    model: Any
    history: dict
    best_epoch: int
    scale: float
    seconds: float

    def __str__(self) -> str:
        last = ", ".join(f"{k} {v[self.best_epoch - 1]:.4f}" for k, v in self.history.items())
        epochs = len(self.history.get("loss", []))
        return f"Meta-trained {epochs} epochs (epoch {self.best_epoch} kept): {last}"


class _Validation(keras.callbacks.Callback):
    """Mean prototype accuracy on held-out classes after each epoch; keeps the best weights."""

    def __init__(self, features, data, ways, shots, queries, episodes, seed, restore):
        super().__init__()
        self.features, self.data = features, data
        self.kwargs = dict(ways=ways, shots=shots, queries=queries, episodes=episodes,
                           seed=seed, classifier="prototype")
        self.restore = restore
        self.best, self.best_epoch, self.best_weights = -1.0, 0, None

    def on_epoch_end(self, epoch, logs=None):
        acc = evaluate_episodes(self.features, self.data, **self.kwargs).mean
        if logs is not None:
            logs["val_accuracy"] = acc
        if acc > self.best:
            self.best, self.best_epoch = acc, epoch + 1
            if self.restore:
                self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.restore and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def _features_of(model) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise InvalidTypeError(format_message(
            "meta_train trains a Keras model's features.",
            expected="a model from build_transfer_model (or any keras.Model from images to "
                     "features)", received={"model": type(model).__name__}))
    try:
        features = keras.Model(model.inputs, model.get_layer("pool").output, name="features")
    except ValueError:
        features = model
    if not features.trainable_weights:
        raise InvalidArgumentError(format_message(
            "The model's feature part has nothing to train: every layer below the head is "
            "frozen.", fix="Unfreeze it first (kertransfer.freeze(model, 'none'), or "
                           "build_transfer_model(..., freeze='none')).",
            received={"model": model.name}))
    return features


@releases_graphs
def meta_train(model, data, labels=None, *, ways: int = 5, shots: int = 5, queries: int = 15,
               episodes: int = 1000, episodes_per_epoch: int = 100,
               learning_rate: float = 1e-4, optimizer: Any = None, scale: float = 10.0,
               validation_data=None, validation_episodes: int = 100,
               restore_best: bool = True, pool_per_class: int = 64, seed: int | None = 0,
               verbose: int | str = "auto") -> MetaTrainResult:
    """Meta-train ``model``'s features on N-way K-shot episodes of base classes.

    The model (from `kertransfer.build_transfer_model`, its layers up to
    ``"pool"``; or any model from raw images to features) is trained in
    place, with the layers that are trainable now: build it with
    ``freeze="none"`` (or freeze part of it) first. BatchNorm layers keep the
    mode they have (``bn="frozen"``, the default for pretrained backbones,
    keeps their ImageNet statistics: episodes are small batches).

    Examples::

        model = kt.build_transfer_model("mobilenet", 5, input_shape=(96, 96, 3),
                                        weights="imagenet", freeze="none")
        kt.methods.fewshot.meta_train(model, (base_x, base_y), ways=5, shots=5,
                              validation_data=(val_x, val_y))
        kt.methods.fewshot.evaluate_episodes(model, novel_x, novel_y, shots=1)

    Args:
        model: The model to train.
        data: Labelled images of the base classes: ``(x, y)`` arrays (or
            images with ``labels=``), or labelled batches in any form
            kertransfer reads (a ``tf.data.Dataset``, ``PyDataset``, DataBundle,
            ArrayData), streamed through a pool of ``pool_per_class`` images
            per class.
        labels: The labels when ``data`` is an images array.
        ways, shots, queries: The training episodes' shape (the query count is
            per class). Training with more shots than testing is common.
        episodes: Training episodes in all (one optimizer step each).
        episodes_per_epoch: Episodes between progress lines and validations.
        learning_rate: The optimizer's rate.
        optimizer: ``"adam"`` (default), ``"adamw"``, ``"sgd"`` or an instance.
        scale: Starting value of the learned distance scale.
        validation_data: Labelled images of other classes than ``data``'s
            (validation classes, never the test ones), scored after each
            epoch by `kertransfer.methods.fewshot.evaluate_episodes` (prototype
            classifier, the training ``ways`` and ``shots``).
        validation_episodes: Episodes per validation.
        restore_best: With ``validation_data``, end with the weights of the
            epoch of best validation accuracy.
        pool_per_class: Images kept per class when ``data`` streams.
        seed: Seed of the episode draws (None: unseeded).
        verbose: Keras' ``fit`` verbosity, and a closing line when > 0.

    Returns:
        A `MetaTrainResult`.
    """
    ways = check_int(ways, "ways", minimum=2)
    shots = check_int(shots, "shots", minimum=1)
    queries = check_int(queries, "queries", minimum=1)
    episodes = check_int(episodes, "episodes", minimum=1)
    per_epoch = min(check_int(episodes_per_epoch, "episodes_per_epoch", minimum=1), episodes)
    validation_episodes = check_int(validation_episodes, "validation_episodes", minimum=1)
    pool_per_class = check_int(pool_per_class, "pool_per_class", minimum=shots + queries)
    for name, value in (("learning_rate", learning_rate), ("scale", scale)):
        check_number(value, name, minimum=0, exclusive_minimum=True)
    features = _features_of(model)
    rng = np.random.default_rng(seed)
    need = shots + queries
    form = form_of(data, "data")
    if labels is not None and form != "images":
        raise InvalidArgumentError(format_message(
            "labels= goes with an images array; this data carries its own labels.",
            fix="Pass (x, y), or images with labels=.", received={"labels": type(labels).__name__}))
    if form == "images":
        if labels is None:
            as_batches(data, "data", labels=True)  # refuses images without labels
        x, y = np.asarray(data), np.asarray(labels).reshape(-1)
    elif form == "xy":
        x, y = np.asarray(data[0]), np.asarray(data[1]).reshape(-1)
    else:
        x = y = None
    if x is not None:
        if len(x) != len(y):
            raise DataError(format_message(
                "data needs one label per image.", expected=f"{len(x)} labels",
                received={"labels": f"{len(y)} labels"}))
        pool = _ArrayPool(x, y)
        _check_classes(pool, need, ways)
    else:
        pool = _StreamPool(as_batches(data, "data", labels=True, training=True, seed=seed),
                           "data", pool_per_class, need, ways, rng)
    image_shape = tuple(features.input_shape[1:])
    with seeded(seed):
        layer = EpisodeLogits(features, ways, shots, queries, scale=scale, name="episode_logits")
        inputs = keras.Input((ways * need, *image_shape), name="episode")
        net = keras.Model(inputs, layer(inputs), name="prototypical")
    net.compile(optimizer=make_optimizer("adam" if optimizer is None else optimizer,
                                         learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    epochs = math.ceil(episodes / per_epoch)
    callbacks = []
    if validation_data is not None:
        validation = _Validation(features, validation_data, ways, shots, queries,
                                 validation_episodes, seed, restore_best)
        callbacks.append(validation)
    start = time.perf_counter()
    stream = _Episodes(pool, ways, shots, queries, per_epoch, rng.integers(2**31))
    history = net.fit(stream, epochs=epochs, callbacks=callbacks, verbose=fit_verbose(verbose),
                      shuffle=False).history
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    best = validation.best_epoch if validation_data is not None and restore_best else epochs
    result = MetaTrainResult(model=model, history=history, best_epoch=best,
                             scale=float(ops.convert_to_numpy(layer.scale)), seconds=seconds)
    if verbose:
        print_msg(f"{result} ({seconds:.0f}s)")
    return result
