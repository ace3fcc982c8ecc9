"""Discriminative learning rates: a true learning rate per backbone block.

`discriminative(optimizer, ...)` returns an optimizer of the same kind whose
``update_step`` receives ``learning_rate * multiplier`` for each variable:
the rate itself changes per variable, which is what Adam, AdamW and every
other adaptive optimizer need (scaling gradients instead would be undone by
Adam's normalization). Decoupled weight decay (AdamW and ``weight_decay=``)
is scaled by the same multiplier, as with parameter groups elsewhere.

Multipliers come from the model's blocks when the model is compiled (a model
built by ``build_transfer_model`` binds the optimizer in ``compile``):

- ``decay=2.6`` (ULMFiT): the head trains at the base rate, the top block at
  ``rate / 2.6``, the block below at ``rate / 2.6**2``, and so on down.
- ``layer_decay=0.8`` (ELECTRA, BEiT): the same rule written as a factor
  below 1, ``rate * 0.8**depth_from_top``.
- ``multipliers={"block5": 0.5, "stem": 0.1, "head": 1.0}``: explicit factors
  by block name (exact: ``"block1"`` is not ``"block10"``) or ``"head"``; others
  get 1. A compiled ``re.Pattern`` key is searched in layer names instead, for
  layers across blocks (``{re.compile(r"_bn$"): 0.0}``); block names win over
  patterns, and the first matching pattern wins.

The optimizer is serializable: saving a compiled model keeps the rule, and
loading binds it again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import keras
from keras import ops

from kertransfer.errors import InvalidArgumentError, InvalidTypeError, format_message
from kertransfer.freezing.protocol import block_context
from kertransfer.training.optimizers import KERAS_OPTIMIZERS, StepCountMixin, with_step_counts
from kertransfer.validation import check_number, is_number

_CLASSES: dict[type, type] = {}
_NO_DECAY_PATTERNS = ("bias", "gamma", "beta", "moving_mean", "moving_variance")


def _split_keys(multipliers) -> tuple[dict[str, float], dict[re.Pattern, float]]:
    """Block-name keys (exact) and compiled-pattern keys (searched in layer names)."""
    names: dict[str, float] = {}
    patterns: dict[re.Pattern, float] = {}
    for key, value in dict(multipliers or {}).items():
        if isinstance(key, re.Pattern):
            patterns[key] = float(value)
        else:
            names[str(key)] = float(value)
    return names, patterns


class DiscriminativeMixin:
    """Per-variable learning-rate multipliers for any Keras optimizer."""

    def _kt_setup(self, decay=None, layer_decay=None, multipliers=None,
                  exclude_norm_and_bias_from_weight_decay=False, multiplier_patterns=None):
        self.kt_decay = decay
        self.kt_layer_decay = layer_decay
        names, patterns = _split_keys(multipliers)
        for pattern, value in dict(multiplier_patterns or {}).items():  # from a saved config
            patterns[re.compile(pattern)] = float(value)
        self.kt_multipliers = names if (names or patterns) else None
        self.kt_patterns = patterns
        self.kt_exclude = bool(exclude_norm_and_bias_from_weight_decay)
        self._kt_by_path: dict[str, float] = {}
        self._kt_list: list[float] | None = None
        if self.kt_exclude:
            self.exclude_from_weight_decay(var_names=list(_NO_DECAY_PATTERNS))

    # -- binding to a model ------------------------------------------------
    def bind_model(self, model) -> dict[str, float]:
        """Compute the multiplier of every variable of ``model`` (by variable path)."""
        ctx = block_context(model)
        n = len(ctx.block_names)
        self._kt_check_names(ctx.block_names)
        by_layer: dict[int, float] = {}
        for layer, b in zip(ctx.layers, ctx.block_of):
            by_layer[id(layer)] = self._block_multiplier(ctx.block_names[b], b, n, layer.name)
        table: dict[str, float] = {}
        for layer in ctx.layers:
            for v in layer.weights:
                table[v.path] = by_layer[id(layer)]
        for layer in model.layers:
            if layer is model.backbone:
                continue
            for v in layer.weights:
                table[v.path] = self._block_multiplier("head", n, n, layer.name)
        self._kt_by_path = table
        self._kt_list = None
        if self.built:
            self._kt_index()
        return table

    def _kt_check_names(self, block_names) -> None:
        unknown = sorted(set(self.kt_multipliers or {}) - set(block_names) - {"head"})
        if unknown:
            raise InvalidArgumentError(format_message(
                "multipliers names blocks this backbone does not have. Block names match "
                "exactly; to match layer names by a regular expression, use a compiled "
                "re.Pattern as the key.",
                expected=f"keys among {['head', *block_names]}, or re.compile(...) keys",
                received={"multipliers": dict(self.kt_multipliers)}))

    def _block_multiplier(self, block: str, index: int, num_blocks: int, layer: str) -> float:
        if self.kt_multipliers is not None:
            if block in self.kt_multipliers:
                return float(self.kt_multipliers[block])
            for pattern, value in self.kt_patterns.items():
                if pattern.search(layer):
                    return float(value)
            return 1.0
        depth = num_blocks - index  # 0 for the head, 1 for the top block, ...
        if self.kt_decay is not None:
            return float(self.kt_decay) ** -depth
        return float(self.kt_layer_decay) ** depth

    def _kt_index(self) -> list[float]:
        if not self._kt_by_path:
            raise InvalidArgumentError(
                format_message(
                    "A discriminative optimizer must be bound to a model before it trains.",
                    fix="Compile a model built by kertransfer.build_transfer_model with it (its "
                    "compile() binds the optimizer), or call optimizer.bind_model(model).",
                    received={"optimizer": type(self).__name__},
                )
            )
        self._kt_list = [self._kt_by_path.get(v.path, 1.0) for v in self._trainable_variables]
        return self._kt_list

    def multiplier_of(self, variable) -> float:
        """The learning-rate multiplier of a variable the optimizer was built with."""
        if self._kt_list is None:
            self._kt_index()
        return self._kt_list[self._get_variable_index(variable)]

    # -- the update --------------------------------------------------------
    def update_step(self, gradient, variable, learning_rate):
        m = self.multiplier_of(variable)
        return super().update_step(gradient, variable, learning_rate * m)

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        for variable in variables:
            if self._use_weight_decay(variable):
                m = self.multiplier_of(variable)
                lr = ops.cast(self.learning_rate, variable.dtype)
                wd = ops.cast(self.weight_decay, variable.dtype)
                variable.assign(variable - variable * wd * lr * m)

    def get_config(self):
        config = super().get_config()
        config.update({
            "decay": self.kt_decay,
            "layer_decay": self.kt_layer_decay,
            "multipliers": self.kt_multipliers or None,
            "multiplier_patterns": {p.pattern: v for p, v in self.kt_patterns.items()} or None,
            "exclude_norm_and_bias_from_weight_decay": self.kt_exclude,
        })
        return config


def _discriminative_class(base: type) -> type:
    if base in _CLASSES:
        return _CLASSES[base]
    if issubclass(base, DiscriminativeMixin):
        return base

    def __init__(self, *args, decay=None, layer_decay=None, multipliers=None,  # noqa: N807
                 exclude_norm_and_bias_from_weight_decay=False, multiplier_patterns=None,
                 **kwargs):
        base.__init__(self, *args, **kwargs)
        self._kt_setup(decay, layer_decay, multipliers, exclude_norm_and_bias_from_weight_decay,
                       multiplier_patterns)

    cls = type(f"Discriminative{base.__name__}", (DiscriminativeMixin, base),
               {"__init__": __init__, "__module__": __name__,
                "__doc__": f"`{base.__name__}` with per-block learning rates (see "
                           "`kertransfer.optimizers.discriminative`)."})
    cls = keras.saving.register_keras_serializable(package="kertransfer")(cls)
    _CLASSES[base] = cls
    return cls


def discriminative(optimizer: Any, decay: float | None = None, *, layer_decay: float | None = None,
                   multipliers: Mapping[str | re.Pattern, float] | None = None,
                   exclude_norm_and_bias_from_weight_decay: bool = False):
    """Wrap a Keras optimizer so that each backbone block trains at its own rate.

    Give exactly one of ``decay``, ``layer_decay`` or ``multipliers``.

    Args:
        optimizer: A Keras optimizer instance (Adam, AdamW, SGD, ...); its
            configuration (learning rate or schedule, betas, weight decay) is kept.
        decay: ULMFiT's rule: each block down trains at the rate of the one
            above divided by ``decay`` (> 0; 2.6 in the paper).
        layer_decay: The ELECTRA/BEiT rule: ``rate * layer_decay**depth`` with
            depth 0 for the head, 1 for the top block (in (0, 1] usually).
        multipliers: ``{block name or "head": factor}``, matched exactly; a
            compiled ``re.Pattern`` key is searched in layer names instead.
        exclude_norm_and_bias_from_weight_decay: Keep BatchNorm/LayerNorm
            scales and offsets and biases out of weight decay.

    Returns:
        A new optimizer of class ``Discriminative<Name>``; compile a
        kertransfer model with it.

    Raises:
        InvalidArgumentError: Not exactly one rule, or a bad value.
        InvalidTypeError: ``optimizer`` is not a Keras optimizer.
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise InvalidTypeError(
            format_message("discriminative() wraps a Keras optimizer instance.",
                           expected="e.g. keras.optimizers.Adam(1e-3)",
                           received={"optimizer": optimizer})
        )
    given = [k for k, v in (("decay", decay), ("layer_decay", layer_decay),
                            ("multipliers", multipliers)) if v is not None]
    if len(given) != 1:
        raise InvalidArgumentError(
            format_message("Give exactly one rule for the learning rates per block.",
                           expected="decay=..., layer_decay=... or multipliers={...}",
                           received={"decay": decay, "layer_decay": layer_decay,
                                     "multipliers": multipliers})
        )
    if decay is not None:
        decay = check_number(decay, "decay", minimum=0, exclusive_minimum=True)
    if layer_decay is not None:
        layer_decay = check_number(layer_decay, "layer_decay", minimum=0, exclusive_minimum=True)
    if multipliers is not None:
        bad = {k: v for k, v in dict(multipliers).items()
               if not isinstance(k, (str, re.Pattern)) or not is_number(v) or not v >= 0}
        if bad:
            raise InvalidArgumentError(
                format_message("multipliers maps block names (or compiled re.Pattern objects "
                               "for layer names) to factors >= 0.",
                               received={"multipliers": dict(multipliers)})
            )
    # Of a step-counted optimizer, the class it was made from (kertransfer adds the
    # step counts again when it builds the result).
    base = next(c for c in type(optimizer).__mro__ if not issubclass(c, StepCountMixin))
    cls = _discriminative_class(base)
    config = optimizer.get_config()
    for key in ("decay", "layer_decay", "multipliers", "multiplier_patterns",
                "exclude_norm_and_bias_from_weight_decay"):
        config.pop(key, None)
    return cls.from_config({**config, "decay": decay, "layer_decay": layer_decay,
                            "multipliers": dict(multipliers) if multipliers else None,
                            "exclude_norm_and_bias_from_weight_decay":
                                exclude_norm_and_bias_from_weight_decay})


# Registered at import, with their step-counted versions (which kertransfer gives an
# optimizer when it rebuilds it at unfreeze), so a saved model loads in a new process.
for _base in KERAS_OPTIMIZERS:
    with_step_counts(_discriminative_class(_base))
