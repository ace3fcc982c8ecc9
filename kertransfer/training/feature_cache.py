"""Feature caching: run the frozen backbone once, train the head on its outputs.

When the whole backbone is frozen and no augmentation runs, every epoch
recomputes the same backbone outputs. `train_head_on_features` runs the
model up to its pooling layer once, streaming the data (inference mode,
with a progress bar), into a `FeatureCache` on disk, and trains the model's
own head layers on the features read back a batch at a time; the head
weights live in the model, so it is ready to use (or to fine-tune)
afterwards. With the same seed, batch order and initial weights, the result
equals training through the frozen backbone, up to float rounding.

`FeatureCache` (`kertransfer.training.feature_store`) keys features by the
backbone name, a digest of its weights, the input size, the preprocessing,
the pooling and a fingerprint of the data; a change to any of these is a
different key, so stale features are never read.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

import numpy as np

from kertransfer import _log
from kertransfer._log import fit_verbose
from kertransfer.data.forms import form_of
from kertransfer.models.surgery import feature_predictor, head_on_features
from kertransfer.training.feature_store import FeatureBatches, FeatureCache, StoredFeatures
from kertransfer.training.run import build_training_state, compile_for_transfer
from kertransfer.validation import check_int

__all__ = ["FeatureBatches", "FeatureCache", "StoredFeatures", "compile_head", "feature_store",
           "task_labels", "train_head_on_features"]


def task_labels(data: Any, y: np.ndarray):
    """The labels ``data``'s splits yield for class labels ``y``: a dict per task
    for a bundle with tasks (`kertransfer.data.DataBundle.with_tasks`), else ``y``."""
    relabel = getattr(data, "task_labels", None)
    return relabel(y) if callable(relabel) and not isinstance(y, dict) else y


def compile_head(head, feats: np.ndarray, y: Any, batch_size: int, learning_rate: float,
                 optimizer: Any = "adam", loss_weights: dict[str, float] | None = None) -> None:
    """Compile a head on cached features, its training state built before ``fit``."""

    # A head step is tiny: run many per compiled call to cut the per-step overhead.
    steps = max(1, -(-len(feats) // batch_size))
    compile_for_transfer(head, learning_rate, optimizer, steps_per_execution=min(steps, 64),
                         loss_weights=loss_weights)
    build_training_state(head, (feats, y))


def train_head_on_features(model, data: Any, *, epochs: int = 10, learning_rate: float = 1e-3,
                           optimizer: Any = "adam", batch_size: int = 32,
                           validation_data: Any = None,
                           cache_dir: str | os.PathLike | None = None, shuffle: bool = True,
                           seed: int | None = None, callbacks=None, verbose: int = 1,
                           loss_weights: dict[str, float] | None = None,
                           feature_dtype: str = "float32", return_head: bool = False):
    """Train the head of ``model`` on cached backbone features.

    The backbone runs once over the data, streaming (`FeatureCache`); the
    model's head layers (dropout, dense) then train on its outputs, read back
    from disk a batch at a time. The weights trained are the model's own.

    Args:
        model: A model from ``build_transfer_model``.
        data: A ``DataBundle`` (its train split, unaugmented), ``(x, y)`` arrays,
            or a dataset of ``(images, labels)`` batches.
        epochs: Epochs of head training.
        learning_rate: Learning rate (when ``optimizer`` is a name).
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or an optimizer instance.
        batch_size: Batch size on features.
        validation_data: Validation data in the same forms (default: the bundle's val split).
        cache_dir: Keep features there (see `FeatureCache`), for later calls on
            the same model and data; default a temporary folder deleted at the
            end. Either way they stream from disk: memory holds one batch.
        feature_dtype: ``"float16"`` stores features at half the size.
        shuffle: Shuffle the features every epoch.
        seed: Seeds this call's shuffling of the features (None: Keras' own,
            unseeded shuffling). No global random state is reset.
        callbacks: Keras callbacks for the head's ``fit``.
        verbose: Progress output.
        loss_weights: ``{task: weight}`` for a multi-task model (its data a
            bundle from `kertransfer.data.DataBundle.with_tasks`).
        return_head: Also return the head model (its optimizer holds the state).

    Returns:
        The Keras history dict (and the head model with ``return_head``).
    """
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if validation_data is None and getattr(data, "val", None) is not None \
            and form_of(data, "data") in ("bundle", "array_data"):
        val_source, val_argument = data, "data"
    else:
        val_source, val_argument = validation_data, "validation_data"
    with feature_store(cache_dir, feature_dtype) as cache:
        if verbose:
            _log.print_msg("Computing backbone features (once)")
        predict = feature_predictor(model)  # compiled once, for both splits
        stored, hit = cache.features(model, data, function=predict, verbose=verbose)
        if verbose and hit:
            _log.print_msg(f"Read cached features of {stored.rows} examples from "
                           f"{cache.directory}")
        val_data = None
        if val_source is not None:
            held, _ = cache.features(model, val_source, argument=val_argument, split="val",
                                     function=predict, verbose=0)
            val_data = held.batches(batch_size, labels=task_labels(data, held.labels))
        y = task_labels(data, stored.labels)
        head = head_on_features(model, stored.row_shape)
        compile_head(head, stored.array(), y, batch_size, learning_rate, optimizer,
                     loss_weights)
        hist = head.fit(stored.batches(batch_size, labels=y, shuffle=shuffle, seed=seed),
                        epochs=epochs, validation_data=val_data, shuffle=False,
                        callbacks=list(callbacks or []), verbose=fit_verbose(verbose))
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return (history, head) if return_head else history


@contextlib.contextmanager
def feature_store(cache_dir: str | os.PathLike | None, dtype: str = "float32"):
    """A `FeatureCache` in ``cache_dir``, or in a temporary folder deleted afterwards."""
    if cache_dir is not None:
        yield FeatureCache(cache_dir, dtype=dtype)
        return
    with tempfile.TemporaryDirectory(prefix="kertransfer-features-") as tmp:
        yield FeatureCache(tmp, max_bytes=None, dtype=dtype)
