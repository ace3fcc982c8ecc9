"""The two phases of a transfer search's trial: `TwoPhaseTrial`, the ``fit`` of
`kertransfer.tuning.TransferHyperModel`.

Phase 1 trains the head (on shared cached backbone features when the data has
no augmentation), phase 2 the top blocks (on the cached output of the frozen
bottom when it fits the memory budget, else through the whole model), on one
epoch timeline that KerasTuner's checkpoint callbacks see whole.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
from collections.abc import Sequence

import keras
import numpy as np

from kertransfer.data.batches import as_batches
from kertransfer.data.fingerprint import array_digest
from kertransfer.data.forms import form_of
from kertransfer.errors import InvalidArgumentError, InvalidTypeError, format_message
from kertransfer.freezing.apply import apply_policy
from kertransfer.freezing.policies import FreezeBlocks
from kertransfer.freezing.protocol import block_context
from kertransfer.models.surgery import head_on_features, split_at_block
from kertransfer.training.feature_cache import compile_head
from kertransfer.training.recipe import adopt_head_state, unfreeze_top
from kertransfer.training.run import build_training_state
from kertransfer.training.run_folder import TRIAL_HISTORY_FILE
from kertransfer.tuning.features import _Split


class _Relay(keras.callbacks.Callback):
    """Forward the head's epochs to the tuner's callbacks, with the full model."""

    def __init__(self, callbacks: Sequence, model):
        super().__init__()
        self.targets = list(callbacks)
        self.full_model = model

    def on_epoch_end(self, epoch, logs=None):
        for cb in self.targets:
            cb.set_model(self.full_model)
            cb.on_epoch_end(epoch, logs)


def _is_checkpoint(cb) -> bool:
    return type(cb).__name__ == "SaveBestEpoch"


def _extend(history: dict, new: dict) -> None:
    for key, vals in new.items():
        history.setdefault(key, []).extend(float(v) for v in vals)


class TwoPhaseTrial:
    """The trial of a transfer hypermodel: ``fit`` runs phase 1 and phase 2.

    A mixin of `kertransfer.tuning.TransferHyperModel`, which provides
    ``declare``, ``epochs``, ``batch_size``, ``cache_features``, ``features``,
    ``partial_cache_mb``, ``loss_weights``, ``tasks`` and the ``_optimizer`` and
    ``_compile`` rules the two phases share with ``build``.
    """

    def fit(self, hp, model, data=None, *args, validation_data=None, epochs: int | None = None,
            initial_epoch: int = 0, callbacks=None, verbose: int = 1, **kwargs):
        """Run the trial's two phases on epochs ``[initial_epoch, epochs)``.

        ``data`` is a `kertransfer.data.DataBundle` (its ``val`` split is the
        validation data) or ``(x, y)`` arrays with ``validation_data=(x, y)``.
        Returns a ``keras.callbacks.History`` over both phases.
        """
        if data is None and args:
            data, args = args[0], args[1:]
        v = self.declare(hp)
        epochs = int(epochs or self.epochs)
        head_epochs = min(int(v["head_epochs"]), epochs)
        callbacks = list(callbacks or [])
        train, val, train_args, val_data, augmented = self._unpack(data, validation_data)
        history: dict[str, list[float]] = {}
        head = None
        use_cache = self.cache_features and not augmented
        fit_data = train_args[0][0] if len(train_args[0]) == 1 else train_args[0]
        phase1_end = epochs if (use_cache and int(v["unfreeze_top"]) == 0) else head_epochs

        if initial_epoch < phase1_end:
            if use_cache:
                head, h = self._fit_head(model, v, train, val, callbacks, initial_epoch,
                                         phase1_end, verbose)
            else:
                apply_policy(model, "all", v["bn"])
                with self._scope():
                    self._compile(model, float(v["head_learning_rate"]),
                                  self._optimizer(v, float(v["head_learning_rate"])))
                    build_training_state(model, fit_data)
                h = model.fit(*train_args[0], **train_args[1], validation_data=val_data,
                              epochs=phase1_end, initial_epoch=initial_epoch,
                              callbacks=callbacks, verbose=verbose).history
            _extend(history, h)

        start = max(initial_epoch, phase1_end)
        if epochs > start:
            h = None
            if use_cache:
                h = self._fit_top(model, v, head, train, val, callbacks, start, epochs, verbose)
            if h is None:
                with self._scope():
                    self._unfreeze(model, v, head)
                    build_training_state(model, fit_data)
                h = model.fit(*train_args[0], **train_args[1], validation_data=val_data,
                              epochs=epochs, initial_epoch=start, callbacks=callbacks,
                              verbose=verbose).history
            _extend(history, h)
        self._write_curves(callbacks, history, v)
        out = keras.callbacks.History()
        out.history = history
        out.set_model(model)
        return out

    def _unpack(self, data, validation_data):
        """``(train, val or None, (fit args, fit kwargs), fit validation data, augmented)``;
        ``train`` and ``val`` as `_Split`: a bundle's splits and datasets of batches
        stream (features are computed in one pass and read back from disk), arrays
        stay arrays."""
        if not isinstance(data, tuple) and not hasattr(data, "as_numpy") \
                and form_of(data, "data") in ("tf_dataset", "py_dataset"):
            return self._unpack_stream(data, validation_data)
        if hasattr(data, "as_numpy") and hasattr(data, "train"):
            train = _Split.of_bundle(data, "train")
            val = _Split.of_bundle(data, "val") if getattr(data, "val", None) is not None \
                else None
            self.check_data(data)
            augmented = getattr(data, "augmentation", None) is not None
            # The bundle's train split is shuffled already (seeded, every epoch).
            return train, val, ((data.train,), {"shuffle": False}), data.val, augmented
        if isinstance(data, tuple) and len(data) == 2:
            train = _Split.of(np.asarray(data[0], dtype="float32"), data[1])
            self._check_labels(train.labels, "data")
            fit_kwargs = {"batch_size": self.batch_size, "shuffle": True}
            val, val_fit = self._validation(validation_data)
            return train, val, ((train.x, train.labels), fit_kwargs), val_fit, False
        raise InvalidTypeError(
            format_message("A transfer search needs a DataBundle or (x, y) arrays.",
                           expected="kertransfer.data.load(...) or a tuple (images, labels)",
                           received={"data": type(data).__name__})
        )

    def _unpack_stream(self, data, validation_data):
        """`_unpack` of a dataset of ``(x, y)`` batches, and validation data in any form."""
        batches = as_batches(data, "data", labels=True)
        val, val_fit = self._validation(validation_data)
        return _Split(batches, "train", None), val, ((batches,), {}), val_fit, False

    def _validation(self, validation_data):
        """``(val as a _Split, what fit takes as validation_data)``, both None without it:
        ``(x, y)`` arrays stay arrays, any other form streams."""
        if validation_data is None:
            return None, None
        if isinstance(validation_data, tuple) and len(validation_data) == 2:
            val = _Split.of(np.asarray(validation_data[0], dtype="float32"), validation_data[1])
            self._check_labels(val.labels, "validation_data")
            return val, (val.x, val.labels)
        batches = as_batches(validation_data, "validation_data", labels=True, split="val")
        return _Split(batches, "val", None), batches

    def check_data(self, data, validation_data=None) -> None:
        """Raise before a search starts when the labels do not fit the heads."""
        if hasattr(data, "as_numpy") and hasattr(data, "train"):
            tasks = getattr(data, "tasks", None)
            self._check_labels(dict.fromkeys(tasks) if tasks else np.zeros(0), "data")
            return
        if isinstance(data, tuple) and len(data) == 2:
            self._check_labels(data[1], "data")
        if isinstance(validation_data, tuple) and len(validation_data) == 2:
            self._check_labels(validation_data[1], "validation_data")

    def _check_labels(self, labels, argument: str) -> None:
        """Labels must be a dict of the tasks for a multi-task hypermodel, else one array."""
        tasks = self.tasks
        if tasks is None and isinstance(labels, dict):
            raise InvalidArgumentError(format_message(
                f"{argument} has labels per task, and this hypermodel has one head.",
                fix="Give TransferHyperModel num_classes={task: classes, ...}.",
                received={argument: f"labels for {sorted(labels)}"}))
        if tasks is not None and (not isinstance(labels, dict) or set(labels) != set(tasks)):
            got = sorted(labels) if isinstance(labels, dict) else "one label per image"
            raise InvalidArgumentError(format_message(
                f"{argument} needs one label per task for the heads {tasks}.",
                fix="Use data.with_tasks({...}) on a DataBundle, or (x, {task: labels}).",
                received={argument: got}))

    def _scope(self):
        strategy = self.distribution_strategy
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    def _fit_head(self, model, v, train, val, callbacks, initial_epoch, end, verbose):
        with self._scope():
            feats, labels = self.features.get(model, train)
            if train.labels is None:  # read by the feature pass
                self._check_labels(labels, "data")
            val_data = None
            if val is not None:
                held, held_labels = self.features.get(model, val)
                val_data = held.batches(self.batch_size, labels=held_labels)
            head = head_on_features(model, feats.row_shape)
            rate = float(v["head_learning_rate"])
            compile_head(head, feats.array(), labels, self.batch_size, rate,
                         self._optimizer(v, rate, model=model), self.loss_weights)
        # The tuner's checkpoint must see the full model, whose head is this head.
        relay = _Relay([cb for cb in callbacks if _is_checkpoint(cb)], model)
        hist = head.fit(feats.batches(self.batch_size, labels=labels, shuffle=True),
                        epochs=end, initial_epoch=initial_epoch, validation_data=val_data,
                        shuffle=False, callbacks=[relay], verbose=verbose)
        return head, hist.history

    def _unfreeze(self, model, v, head) -> None:
        """Phase 2 through the whole model: the compiled optimizer goes on, rebuilt in place."""
        if head is not None:
            adopt_head_state(model, head)  # phase 1 trained the head as its own model
        unfreeze_top(model, int(v["unfreeze_top"]), v["bn"], float(v["fine_tune_learning_rate"]))

    def _fit_top(self, model, v, head, train, val, callbacks, start, epochs, verbose):
        """Phase 2 on the cached output of the frozen bottom blocks; None when it cannot."""
        k = int(v["unfreeze_top"])
        num_blocks = len(block_context(model).block_names)
        if self.partial_cache_mb == 0 or not 0 < k < num_blocks:
            return None
        apply_policy(model, FreezeBlocks(num_blocks - k), v["bn"])
        with self._scope():
            split = split_at_block(model, num_blocks - k)
        if split is None:
            return None
        bottom, top = split
        if any(layer.trainable and layer.weights for layer in top.bottom_layers):
            return None  # not frozen below the cut: its output changes as it trains
        if train.rows is None or (val is not None and val.rows is None):
            return None  # a stream of unknown length: no budget to check it against
        rows = train.rows + (val.rows if val is not None else 0)
        budget = self.partial_cache_mb * 2**20
        if rows * math.prod(bottom.output.shape[1:]) * 4 > budget:
            return None
        digest = array_digest([w for layer in top.bottom_layers for w in layer.get_weights()])
        args = (model, num_blocks - k, bottom, digest)
        feats, labels = self.features.get_partial(*args, train, budget)
        val_data = self.features.get_partial(*args, val, budget) if val is not None else None
        with self._scope():
            lr = float(v["fine_tune_learning_rate"])
            # The blocks of the whole model bind a discriminative optimizer, whichever part trains.
            self._compile(top, lr, self._optimizer(v, lr, model=model))
            adopt_head_state(top, head, lr)
            build_training_state(top, (feats, labels))
        relay = _Relay([cb for cb in callbacks if _is_checkpoint(cb)], model)
        others = [cb for cb in callbacks if not _is_checkpoint(cb)]
        hist = top.fit(feats, labels, batch_size=self.batch_size, epochs=epochs,
                       initial_epoch=start,
                       validation_data=val_data, shuffle=True, callbacks=[relay, *others],
                       verbose=verbose)
        return hist.history

    def _write_curves(self, callbacks, history, values) -> None:
        """Per-epoch curves in the trial folder (KerasTuner keeps only the best epoch)."""
        for cb in callbacks:
            tuner, trial = getattr(cb, "tuner", None), getattr(cb, "trial", None)
            if tuner is None or trial is None or not hasattr(tuner, "get_trial_dir"):
                continue
            path = pathlib.Path(tuner.get_trial_dir(trial.trial_id)) / TRIAL_HISTORY_FILE
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps({"history": history, "values": values}, default=str))
            os.replace(tmp, path)
            return
