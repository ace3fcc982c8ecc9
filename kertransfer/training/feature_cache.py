"""Feature caching: run the frozen backbone once, train the head on its outputs.

When the whole backbone is frozen and no augmentation runs, every epoch
recomputes the same backbone outputs. `compute_features` runs the model up to
its pooling layer once (inference mode, with a progress bar) and
`train_head_on_features` trains the model's own head layers on the result;
the head weights live in the model, so it is ready to use (or to fine-tune)
afterwards. With the same seed, batch order and initial weights, the result
equals training through the frozen backbone, up to float rounding.

`FeatureCache` keeps features on disk, keyed by the backbone name, a digest of
its weights, the input size, the preprocessing mode and a fingerprint of the
images and labels; a change to any of these is a different key, so stale
features are never read. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
from typing import Any

import keras
import numpy as np

from kertransfer import _log
from kertransfer._fs import usual_mode
from kertransfer._log import fit_verbose
from kertransfer.data.gathering import as_arrays
from kertransfer.models.surgery import compute_features, head_on_features
from kertransfer.training.run import build_training_state, compile_for_transfer
from kertransfer.validation import check_int


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


def array_digest(arrays) -> str:
    """A short digest of the shapes, dtypes and bytes of ``arrays``."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def feature_key(model, x: np.ndarray, y: np.ndarray, weights_digest: str | None = None) -> str:
    """A key that changes when anything that changes ``model``'s features on ``(x, y)`` does:
    backbone name, weights digest (``weights_digest``, default the backbone's), input size,
    preprocessing, pooling, compute dtype and a fingerprint of the data."""
    parts = [
        getattr(model, "backbone_name", "custom"),
        weights_digest or array_digest(model.backbone.get_weights()),
        "x".join(str(d) for d in model.input_shape[1:]),
        getattr(model, "preprocessing", "none"),
        getattr(model, "pooling", "none"),
        model.backbone.compute_dtype,
        array_digest([x, y]),
    ]
    return "-".join(parts)


class FeatureCache:
    """Backbone features on disk, keyed so that stale features are never read.

    Args:
        directory: Folder for the ``.npz`` files.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory)

    def key(self, model, x: np.ndarray, y: np.ndarray) -> str:
        """The cache key of ``model``'s features on ``(x, y)``."""
        return feature_key(model, x, y)

    def path(self, key: str) -> pathlib.Path:
        return self.directory / f"{key}.npz"

    def load_or_compute(self, model, x, y, batch_size: int = 64, verbose: int = 1):
        """Return ``(features, hit)``: from disk when the key matches, else computed and saved."""
        key = self.key(model, x, y)
        path = self.path(key)
        if path.is_file():
            with np.load(path) as f:
                return f["features"], True
        feats = compute_features(model, x, batch_size=batch_size, verbose=verbose)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=self.directory)
        usual_mode(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, features=feats)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return feats, False


class FeatureBatches(keras.utils.PyDataset):
    """Batches of cached features in an order drawn from a seeded generator each epoch.

    Labels may be an array or a dict of arrays (one per head).
    """

    def __init__(self, features: np.ndarray, labels: Any, batch_size: int, seed: int):
        super().__init__()
        self.features, self.labels = features, labels
        self.batch_size = int(batch_size)
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(features))

    def __len__(self) -> int:
        return -(-len(self.features) // self.batch_size)

    def __getitem__(self, index: int):
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        labels = keras.tree.map_structure(lambda a: np.asarray(a)[rows], self.labels)
        return self.features[rows], labels

    def on_epoch_end(self) -> None:
        self._order = self._rng.permutation(len(self.features))


def train_head_on_features(model, data: Any, *, epochs: int = 10, learning_rate: float = 1e-3,
                           optimizer: Any = "adam", batch_size: int = 32,
                           validation_data: Any = None,
                           cache_dir: str | os.PathLike | None = None, shuffle: bool = True,
                           seed: int | None = None, callbacks=None, verbose: int = 1,
                           loss_weights: dict[str, float] | None = None,
                           return_head: bool = False):
    """Train the head of ``model`` on cached backbone features.

    The backbone runs once over the data; the model's head layers (dropout,
    dense) then train on its outputs. The weights trained are the model's own.

    Args:
        model: A model from ``build_transfer_model``.
        data: A ``DataBundle`` (its train split, unaugmented), ``(x, y)`` arrays,
            or a dataset of ``(images, labels)`` batches.
        epochs: Epochs of head training.
        learning_rate: Learning rate (when ``optimizer`` is a name).
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or an optimizer instance.
        batch_size: Batch size on features.
        validation_data: Validation data in the same forms (default: the bundle's val split).
        cache_dir: Keep features on disk there (see `FeatureCache`).
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
    x, y = as_arrays(data, "data", streams=True)
    if validation_data is None and getattr(data, "val", None) is not None \
            and hasattr(data, "as_numpy"):
        validation_data = as_arrays(data, "data", split="val")
    cache = FeatureCache(cache_dir) if cache_dir is not None else None
    if verbose:
        _log.print_msg(f"Computing backbone features for {len(x)} images (once)")
    if cache is not None:
        feats, hit = cache.load_or_compute(model, x, y, verbose=verbose)
        if verbose and hit:
            _log.print_msg(f"Read cached features from {cache.directory}")
    else:
        feats = compute_features(model, x, verbose=verbose)
    val_data = None
    if validation_data is not None:
        vx, vy = as_arrays(validation_data, "validation_data", split="val", streams=True)
        val_data = (compute_features(model, vx, verbose=0), task_labels(data, vy))
    y = task_labels(data, y)
    head = head_on_features(model, feats.shape[1:])
    compile_head(head, feats, y, batch_size, learning_rate, optimizer, loss_weights)
    if shuffle and seed is not None:
        # Seeded: this call's own order, no global random state reset.
        fit_data = (FeatureBatches(feats, y, batch_size, seed=seed),)
        fit_kwargs = {"shuffle": False}
    else:
        fit_data = (feats, y)
        fit_kwargs = {"batch_size": batch_size, "shuffle": shuffle}
    hist = head.fit(*fit_data, epochs=epochs, validation_data=val_data,
                    callbacks=list(callbacks or []), verbose=fit_verbose(verbose),
                    **fit_kwargs)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return (history, head) if return_head else history
