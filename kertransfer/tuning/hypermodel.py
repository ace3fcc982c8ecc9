"""`TransferHyperModel`: a KerasTuner hypermodel whose trials are two-phase transfer runs.

A trial builds a model with `build_transfer_model` (backbone frozen), then
``fit`` runs the two phases of `kertransfer.fine_tune` on one epoch timeline
``[0, epochs)``:

1. epochs ``[0, head_epochs)``: the head trains on the frozen backbone. When
   the data has no augmentation it trains on cached backbone features, and
   every trial on the same backbone, weights, input size and data reuses the
   same features (`SharedFeatures`): a search computes each backbone's
   features once, not once per trial.
2. epochs ``[head_epochs, epochs)``: the top ``unfreeze_top`` blocks become
   trainable (with the trial's BatchNorm mode) and training goes on at
   ``fine_tune_learning_rate`` (optionally with discriminative rates), the head's
   optimizer state carried over. ``unfreeze_top=0`` keeps training the head on
   cached features. When the data has no augmentation, the blocks below the
   cut are frozen and in inference mode, so their output is the same every
   epoch: phase 2 trains the top blocks and the head on that output, computed
   once per cut and shared by the trials that cut there (within a memory
   budget, ``partial_cache_mb``). Otherwise, and where a skip connection spans
   the cut, phase 2 runs through the whole model.

Hyperband continues trials: KerasTuner loads the parent's best weights and
asks for epochs ``[initial_epoch, epochs)``; phase 1 is not repeated once
``initial_epoch >= head_epochs``. The tuner's checkpoint callback sees every
epoch of both phases (phase 1 is relayed to it with the full model), so the
best model it restores is the model that scored best, in either phase.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import keras_tuner

from kertransfer.backbones import get_backbone_spec
from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.models import build_transfer_model
from kertransfer.models.build import check_heads
from kertransfer.training.optimizers import check_optimizer
from kertransfer.training.recipe import phase_optimizer
from kertransfer.training.run import compile_for_transfer
from kertransfer.tuning.features import SharedFeatures
from kertransfer.tuning.phases import TwoPhaseTrial
from kertransfer.tuning.space import KNOBS, declare, parse_space
from kertransfer.validation import check_int


class TransferHyperModel(TwoPhaseTrial, keras_tuner.HyperModel):
    """A KerasTuner hypermodel for transfer learning: two-phase trials, cached features.

    Args:
        backbones: A registry name or a list of them (searched as ``backbone``).
        num_classes: Number of classes, or ``{task: classes}`` for a model
            with one head per task (its data from
            `kertransfer.data.DataBundle.with_tasks`, or arrays with a label
            dict; the objective then names a task, ``"val_<task>_accuracy"``).
        activation: The output activation (``"softmax"`` by default), or
            ``{task: activation}``; as in `kertransfer.build_transfer_model`.
        loss_weights: ``{task: weight}`` of a multi-task model's losses.
        input_shape: ``(height, width, 3)`` of the model input.
        weights: ``"imagenet"``, a weights file, None, or a mapping
            ``{backbone: weights}``.
        space: Changes to the search space, ``{knob: spec}``; see
            `kertransfer.tuning.space` (fixed value, ``(low, high)``, list, None).
            Knobs: ``unfreeze_top``, ``head_learning_rate``, ``fine_tune_learning_rate``,
            ``dropout``, and the optional ``bn``, ``head_units``, ``head_epochs``, ``decay``.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or a Keras optimizer instance (each
            trial trains with a copy of it, its rates set by the trial).
        epochs: Epochs per trial (phase 1 and 2 together) when the tuner does
            not set them (Hyperband does).
        batch_size: Batch size for array data and for the cached-feature head.
        cache_features: Train phase 1 on shared cached features when possible.
        cache_dir: Keep those features on disk there (`kt.tune` uses a folder in
            the search directory).
        mixed_precision: Build the models under the ``mixed_float16`` policy
            (float16 compute, float32 variables and outputs): faster on GPUs
            with tensor cores, slower on CPUs.
        partial_cache_mb: Memory for phase 2's cached outputs of the frozen
            bottom part of the backbone (MiB; 0 turns that cache off). A trial
            whose outputs do not fit trains through the whole model.
        name: Hypermodel name.

    Examples:
        >>> import kertransfer as kt
        >>> hm = kt.TransferHyperModel("mobilenet_v3_small", num_classes=5,
        ...                            input_shape=(32, 32, 3), weights=None,
        ...                            space={"dropout": 0.3, "bn": ["frozen", "trainable"]})
        >>> sorted(hm.searched())
        ['bn', 'fine_tune_learning_rate', 'head_learning_rate', 'mobilenet_v3_small/unfreeze_top']
    """

    def __init__(self, backbones: str | Sequence[str], num_classes: int | dict[str, int], *,
                 activation: str | dict[str, str] = "softmax",
                 loss_weights: dict[str, float] | None = None,
                 input_shape: Sequence[int] = (224, 224, 3), weights: Any = "imagenet",
                 space: dict | None = None, optimizer: Any = "adam", epochs: int = 10,
                 batch_size: int = 32, cache_features: bool = True,
                 cache_dir: str | os.PathLike | None = None, mixed_precision: bool = False,
                 partial_cache_mb: int = 2048, name: str | None = None):
        super().__init__(name=name, tunable=True)
        names = [backbones] if isinstance(backbones, str) else list(backbones or [])
        if not names or not all(isinstance(b, str) for b in names):
            raise InvalidArgumentError(
                format_message("backbones must be a registry name or a non-empty list of them.",
                               received={"backbones": backbones})
            )
        specs = [get_backbone_spec(b) for b in names]  # unknown names raise here
        self.specs = {spec.name: spec for spec in specs}
        self.backbones = [spec.name for spec in specs]
        num_classes, _ = check_heads(num_classes, activation)
        if loss_weights:
            _check_loss_weights(num_classes, loss_weights)
        epochs = check_int(epochs, "epochs", minimum=1)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        partial_cache_mb = check_int(partial_cache_mb, "partial_cache_mb", minimum=0,
                                     fix="Memory in MiB for phase 2's partial cache; 0 turns "
                                         "it off.")
        check_optimizer(optimizer)  # unknown names raise here
        if isinstance(weights, dict):
            missing = [b for b in self.backbones if b not in weights]
            if missing:
                raise InvalidArgumentError(
                    format_message("weights, as a mapping, needs an entry per backbone.",
                                   expected=f"keys {self.backbones}",
                                   received={"weights": weights})
                )
        self.num_classes = num_classes
        self.activation = dict(activation) if isinstance(activation, dict) else activation
        self.loss_weights = dict(loss_weights) if loss_weights else None
        self.input_shape = tuple(int(d) for d in input_shape)
        self.weights = weights
        self.space_spec = dict(space or {})
        self.decls = parse_space(space)
        self.optimizer = optimizer
        self.epochs = epochs
        self.batch_size = batch_size
        self.cache_features = cache_features
        self.mixed_precision = bool(mixed_precision)
        self.partial_cache_mb = partial_cache_mb
        # Set by `tune(distribution_strategy=...)`: models, heads and optimizers a trial
        # creates in ``fit`` are created in its scope, like the model ``build`` returns.
        self.distribution_strategy = None
        self.features = SharedFeatures(cache_dir)
        self._num_blocks = {b: self._count_blocks(b) for b in self.backbones}
        self._check_unfreeze()

    # -- the space ----------------------------------------------------------------------------

    def _count_blocks(self, backbone: str) -> int:
        return len(self.specs[backbone].blocks)

    def _check_unfreeze(self) -> None:
        d = self.decls["unfreeze_top"]
        values = [d.value] if d.kind == "fixed" else list(d.values) if d.kind == "choice" else []
        for b, n in self._num_blocks.items():
            too_deep = [v for v in values if v > n]
            if too_deep:
                raise InvalidArgumentError(
                    format_message(f"unfreeze_top asks for {too_deep[0]} blocks but {b} has {n}.",
                                   expected=f"0 to {n} for {b}",
                                   received={"space['unfreeze_top']": self.space_spec.get(
                                       "unfreeze_top", d.value)})
                )

    def unfreeze_name(self, backbone: str) -> str:
        """The name of ``backbone``'s unfreeze-depth knob (one per backbone)."""
        return f"{backbone}/unfreeze_top"

    def declare(self, hp) -> dict[str, Any]:
        """Declare every knob on ``hp`` and return the trial's values, by knob name."""
        values = {}
        values["backbone"] = (hp.Fixed("backbone", self.backbones[0]) if len(self.backbones) == 1
                              else hp.Choice("backbone", self.backbones))
        for b in self.backbones:
            with hp.conditional_scope("backbone", [b]):
                v = declare(hp, self.unfreeze_name(b), self.decls["unfreeze_top"],
                            high=self._num_blocks[b])
                if b == values["backbone"]:
                    values["unfreeze_top"] = v
        for name in KNOBS:
            if name != "unfreeze_top":
                values[name] = declare(hp, name, self.decls[name])
        return values

    def searched(self) -> list[str]:
        """Names of the knobs searched (not fixed) with this space."""
        hp = keras_tuner.HyperParameters()
        self.declare(hp)
        return [p.name for p in hp.space if type(p).__name__ != "Fixed"]

    # -- configuration (for child processes) ---------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """A JSON-able description from which `from_config` rebuilds this hypermodel."""
        def encode(spec):
            if isinstance(spec, tuple):
                return {"range": list(spec)}
            if isinstance(spec, list):
                return {"choices": spec}
            return {"fixed": spec}

        weights = self.weights
        if isinstance(weights, dict):
            weights = {k: None if v is None else str(v) for k, v in weights.items()}
        elif weights is not None:
            weights = str(weights)
        return {
            "backbones": self.backbones, "num_classes": self.num_classes,
            "activation": self.activation, "loss_weights": self.loss_weights,
            "input_shape": list(self.input_shape), "weights": weights,
            "space": {k: encode(v) for k, v in self.space_spec.items()},
            "optimizer": self.optimizer if isinstance(self.optimizer, str)
            else keras.saving.serialize_keras_object(self.optimizer),
            "epochs": self.epochs, "batch_size": self.batch_size,
            "cache_features": self.cache_features, "mixed_precision": self.mixed_precision,
            "partial_cache_mb": self.partial_cache_mb,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TransferHyperModel:
        """The hypermodel `get_config` describes."""
        def decode(spec):
            if "range" in spec:
                return tuple(spec["range"])
            if "choices" in spec:
                return list(spec["choices"])
            return spec["fixed"]

        config = dict(config)
        config["space"] = {k: decode(v) for k, v in config.get("space", {}).items()}
        if isinstance(config.get("optimizer"), dict):  # an optimizer instance, serialized
            config["optimizer"] = keras.saving.deserialize_keras_object(config["optimizer"])
        return cls(config.pop("backbones"), config.pop("num_classes"), **config)

    # -- build and fit ------------------------------------------------------------------------

    @property
    def tasks(self) -> list[str] | None:
        """The head names of a multi-task hypermodel, else None."""
        return list(self.num_classes) if isinstance(self.num_classes, dict) else None

    def _weights(self, backbone: str):
        return self.weights[backbone] if isinstance(self.weights, dict) else self.weights

    def build(self, hp):
        v = self.declare(hp)
        units = int(v["head_units"])
        previous = keras.config.dtype_policy()
        if self.mixed_precision:
            keras.config.set_dtype_policy("mixed_float16")
        try:
            model = build_transfer_model(
                v["backbone"], self.num_classes, input_shape=self.input_shape,
                weights=self._weights(v["backbone"]), freeze="all", bn=v["bn"],
                dropout=float(v["dropout"]), head_units=(units,) if units else (),
                activation=self.activation,
            )
        finally:
            keras.config.set_dtype_policy(previous)
        rate = float(v["head_learning_rate"])
        self._compile(model, rate, self._optimizer(v, rate))
        return model

    def _optimizer(self, v, learning_rate: float, model=None):
        """The trial's optimizer: the same rule for both phases (discriminative rates
        when the trial's ``decay`` is above 1; the head trains at the base rate)."""
        return phase_optimizer(self.optimizer, learning_rate, decay=float(v["decay"]),
                               model=model, copy=True)

    def _compile(self, model, learning_rate, optimizer, **kwargs) -> None:
        compile_for_transfer(model, learning_rate, optimizer, loss_weights=self.loss_weights,
                             **kwargs)



def _check_loss_weights(heads, loss_weights) -> None:
    if not isinstance(heads, dict) or not isinstance(loss_weights, dict) \
            or set(loss_weights) - set(heads):
        raise InvalidArgumentError(format_message(
            "loss_weights maps head names to weights, for a hypermodel with several heads.",
            expected=f"keys among {sorted(heads)}" if isinstance(heads, dict)
            else "num_classes={task: classes, ...} first",
            received={"loss_weights": loss_weights}))
