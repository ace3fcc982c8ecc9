"""`TransferModel`: a functional Keras model made of a backbone and a head.

Every transfer model takes loss terms (`kertransfer.methods.with_regularizers`)
through Keras' public override points: `TermsLoss` adds the terms registered
on the model (a `LossTerms`) to its ``compute_loss`` and lists their metrics
in its ``metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.freezing.compiled import record_step_variables
from kertransfer.freezing.inference import sync_inference_mode
from kertransfer.models.layers import Preprocess

POOLINGS = ("avg", "max", "flatten")
ACTIVATIONS = ("softmax", "sigmoid", "logits")


def _pooling_layer(pooling: str, rank: int):
    if rank <= 2:
        return None
    if pooling == "flatten":
        return keras.layers.Flatten(name="pool")
    layers = keras.layers
    if rank == 3:
        cls = layers.GlobalAveragePooling1D if pooling == "avg" else layers.GlobalMaxPooling1D
    else:
        cls = layers.GlobalAveragePooling2D if pooling == "avg" else layers.GlobalMaxPooling2D
    return cls(name="pool")


def _head(x, num_classes: int, activation: str, dropout: float, head_units, prefix: str):
    """``[dropout -> Dense(units, relu)]* -> dropout -> Dense(num_classes)``, names prefixed.

    With no prefix the layers are ``head_dense_<i>``, ``head_dropout`` and
    ``predictions`` (a single-task model); a task ``digit`` gets
    ``digit_dense_<i>``, ``digit_dropout`` and ``digit_predictions``.
    """
    stem = prefix or "head_"
    for i, units in enumerate(head_units):
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{stem}dropout_{i}")(x)
        x = keras.layers.Dense(int(units), activation="relu", name=f"{stem}dense_{i}")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{stem}dropout")(x)
    act = None if activation == "logits" else activation
    return keras.layers.Dense(num_classes, activation=act, name=f"{prefix}predictions",
                              dtype="float32")(x)


# The model attribute that holds its LossTerms: set with setattr, which Keras'
# tracking leaves alone (a LossTerms is neither a list nor a layer, metric or
# variable), so neither the terms' snapshot variables nor their metrics become
# model weights, and saving skips them. kertransfer.training.run_folder reads it
# for the learning curves.
TERMS_ATTR = "_kertransfer_loss_terms"


class LossTerms:
    """The loss terms registered on a model, each with the metric that logs its value.

    `kertransfer.methods.with_regularizers` fills it. A term is a callable
    ``term(model, x, y, y_pred)`` returning a scalar; its tracker is a
    ``keras.metrics.Mean``.
    """

    def __init__(self):
        self.terms: list = []
        self.trackers: list = []

    def add(self, term, tracker) -> None:
        self.terms.append(term)
        self.trackers.append(tracker)

    def __len__(self) -> int:
        return len(self.terms)

    def add_to(self, model, loss, x, y, y_pred, training: bool):
        """``loss`` plus each term when ``training``; each term's value is tracked either way."""
        for term, tracker in zip(self.terms, self.trackers):
            value = ops.cast(term(model, x, y, y_pred), loss.dtype)
            tracker.update_state(value)
            if training:
                loss = loss + value
        return loss


def loss_terms(model) -> LossTerms | None:
    """The `LossTerms` registered on ``model``, or None."""
    return model.__dict__.get(TERMS_ATTR)


class TermsLoss:
    """A model mixin: registered loss terms join the training loss and the metrics.

    ``compute_loss`` is the compiled loss plus, in training, each term of the
    model's `LossTerms` (evaluation reports the compiled loss; each term's
    value is measured in both); ``metrics`` lists the terms' trackers after
    Keras' own, so ``fit`` and ``evaluate`` log them, reset them each epoch and
    carry their state under JAX.
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        terms = loss_terms(self)
        if not terms:
            return loss
        return terms.add_to(self, loss, x, y, y_pred, training)

    @property
    def metrics(self):
        metrics = super().metrics
        terms = loss_terms(self)
        return [*metrics, *terms.trackers] if terms else metrics


class _TransferCompile:
    """The compile step every transfer model shares."""

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        """``keras.Model.compile``, which also binds a discriminative optimizer to the blocks.

        Frozen layers of the backbone are set to run in inference mode here too
        (see `kertransfer.freezing.inference`), so flags set by hand count.
        """
        sync_inference_mode(self)
        super().compile(optimizer, *args, **kwargs)
        opt = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        bind = getattr(opt, "bind_model", None)
        if callable(bind):
            bind(self)
        record_step_variables(self)  # kt.lint compares it with the model's trainable set now

    # Keras restores the compile state of a saved model only when a model that
    # overrides compile() also overrides these two.
    def get_compile_config(self):
        return super().get_compile_config()

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)  # create its variables to load into


@keras.saving.register_keras_serializable(package="kertransfer")
class TransferModel(_TransferCompile, TermsLoss, keras.Model):
    """A backbone with a classification head, built with the functional API.

    The graph is ``image (raw 0-255) -> Preprocess -> backbone -> pooling ->
    dropout -> [Dense(units, relu) -> dropout]* -> predictions``. Build it with
    `kertransfer.build_transfer_model`, which validates the arguments
    and loads weights; this class holds the structure and the metadata that
    freezing, saving and later stages need.

    Args:
        backbone: The headless network (a ``keras.Model``).
        num_classes: Number of output units, or ``{task: units}`` for one head
            per task (outputs keyed by task name).
        pooling: ``"avg"``, ``"max"`` or ``"flatten"``.
        dropout: Dropout rate before each dense layer of the head.
        head_units: Widths of hidden dense layers in the head.
        activation: ``"softmax"``, ``"sigmoid"`` (multi-label) or ``"logits"``;
            with several heads, one for all or ``{task: activation}``.
        preprocessing: The `Preprocess` mode for raw images.
        block_patterns: Ordered ``(block_name, regex)`` pairs for the backbone.
        unmatched: Block rule for unmatched layers (``"previous"``/``"next"``).
        backbone_name: Registry name of the backbone, or ``"custom"``.
        bn: BatchNorm mode, ``"frozen"`` or ``"trainable"``.
        freeze_config: The serialized freeze policy in force.
        **kwargs: ``name`` and other ``keras.Model`` arguments.
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int | Mapping[str, int],
        *,
        pooling: str = "avg",
        dropout: float = 0.2,
        head_units: Sequence[int] = (),
        activation: str | Mapping[str, str] = "softmax",
        preprocessing: str = "none",
        block_patterns: Sequence[Sequence[str]] = (),
        unmatched: str = "previous",
        backbone_name: str = "custom",
        bn: str = "frozen",
        freeze_config: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        inputs = keras.Input(shape=tuple(backbone.input_shape[1:]), name="image")
        x = Preprocess(preprocessing, name="preprocess")(inputs)
        x = backbone(x)
        pool = _pooling_layer(pooling, len(x.shape))
        if pool is not None:
            x = pool(x)
        if isinstance(num_classes, Mapping):
            # Several tasks: one head per name, each with its own dense stack.
            activations = activation if isinstance(activation, Mapping) else {
                head: activation for head in num_classes}
            outputs = {head: _head(x, int(n), activations[head], dropout, head_units,
                                   prefix=f"{head}_")
                       for head, n in num_classes.items()}
            num_classes = {head: int(n) for head, n in num_classes.items()}
            activation = {head: activations[head] for head in num_classes}
        else:
            outputs = _head(x, int(num_classes), activation, dropout, head_units, prefix="")
            num_classes = int(num_classes)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.num_classes = num_classes
        self.pooling = pooling
        self.dropout = float(dropout)
        self.head_units = tuple(int(u) for u in head_units)
        self.activation = activation
        self.preprocessing = preprocessing
        self.block_patterns = tuple((str(n), str(p)) for n, p in block_patterns)
        self.unmatched = unmatched
        self.backbone_name = backbone_name
        self.bn_mode = bn
        self.freeze_config = dict(freeze_config or {})

    @property
    def heads(self) -> dict[str, int] | None:
        """``{task: units}`` of a multi-task model; None for a single head."""
        return dict(self.num_classes) if isinstance(self.num_classes, dict) else None

    @property
    def block_names(self) -> list[str]:
        """The backbone's block names, bottom first."""
        return [name for name, _ in self.block_patterns]

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "dropout": self.dropout,
            "head_units": list(self.head_units),
            "activation": self.activation,
            "preprocessing": self.preprocessing,
            "block_patterns": [list(b) for b in self.block_patterns],
            "unmatched": self.unmatched,
            "backbone_name": self.backbone_name,
            "bn": self.bn_mode,
            "freeze_config": self.freeze_config,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> TransferModel:
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(
            config["backbone"], custom_objects=custom_objects
        )
        trainable = config.pop("trainable", True)
        model = cls(**config)
        if not trainable:
            # Setting True would cascade to every layer and undo the freeze flags.
            model.trainable = False
        sync_inference_mode(model)  # the loaded trainable flags decide the mode
        return model


@keras.saving.register_keras_serializable(package="kertransfer")
class SharedBackboneModel(_TransferCompile, TermsLoss, keras.Model):
    """A functional model on a transfer model's layers that keeps its backbone and blocks.

    For graphs built from a `TransferModel`'s tensors: a second head
    (`kertransfer.methods.add_head`), several outputs of the same trunk. The
    layers are the source model's own (training one trains the other), and the
    model implements the transfer-model protocol, so `kertransfer.freeze`,
    `trainable_summary`, the unfreezing callbacks and discriminative
    optimizers work on it. Build it with `from_transfer_model`.

    Args:
        inputs, outputs: As for ``keras.Model``; ``backbone`` is in their graph.
        backbone: The backbone layer (a ``keras.Model``) inside the graph.
        block_patterns: Ordered ``(block_name, regex)`` pairs for the backbone.
        unmatched: Block rule for unmatched layers (``"previous"``/``"next"``).
        backbone_name, preprocessing, bn, freeze_config, activation: The
            source model's metadata (see `TransferModel`); ``activation`` is
            ``{output: activation}`` for dict outputs.
    """

    def __init__(self, inputs, outputs, name=None, *, backbone: keras.Model,
                 block_patterns: Sequence[Sequence[str]] = (), unmatched: str = "previous",
                 backbone_name: str = "custom", preprocessing: str = "none", bn: str = "frozen",
                 freeze_config: dict[str, Any] | None = None,
                 activation: str | Mapping[str, str] = "softmax", **kwargs: Any):
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        if not any(layer is backbone for layer in self.layers):
            raise InvalidArgumentError(format_message(
                "The backbone is not a layer of this model's graph.",
                fix="Build the outputs from the source model's tensors "
                    "(SharedBackboneModel.from_transfer_model).",
                received={"backbone": backbone.name}))
        self.backbone = backbone
        self.block_patterns = tuple((str(n), str(p)) for n, p in block_patterns)
        self.unmatched = unmatched
        self.backbone_name = backbone_name
        self.preprocessing = preprocessing
        self.bn_mode = bn
        self.freeze_config = dict(freeze_config or {})
        self.activation = dict(activation) if isinstance(activation, Mapping) else activation

    @classmethod
    def from_transfer_model(cls, source, inputs, outputs, *, name: str | None = None,
                            activation: str | Mapping[str, str] | None = None
                            ) -> SharedBackboneModel:
        """A model over ``source``'s graph from ``inputs`` to ``outputs``, with its metadata."""
        return cls(inputs, outputs, name=name, backbone=source.backbone,
                   block_patterns=source.block_patterns, unmatched=source.unmatched,
                   backbone_name=getattr(source, "backbone_name", "custom"),
                   preprocessing=getattr(source, "preprocessing", "none"),
                   bn=getattr(source, "bn_mode", "frozen"),
                   freeze_config=getattr(source, "freeze_config", None),
                   activation=getattr(source, "activation", "softmax")
                   if activation is None else activation)

    def _transfer_config(self) -> dict[str, Any]:
        return {"backbone": self.backbone.name,
                "block_patterns": [list(b) for b in self.block_patterns],
                "unmatched": self.unmatched, "backbone_name": self.backbone_name,
                "preprocessing": self.preprocessing, "bn": self.bn_mode,
                "freeze_config": self.freeze_config, "activation": self.activation}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()  # the functional graph
        config["transfer"] = self._transfer_config()
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> SharedBackboneModel:
        config = dict(config)
        meta = dict(config.pop("transfer"))
        graph = keras.Model.from_config(config, custom_objects=custom_objects)
        meta["backbone"] = graph.get_layer(meta["backbone"])
        model = cls(graph.input, graph.output, name=graph.name, **meta)
        sync_inference_mode(model)
        return model
