"""The transfer-model protocol: what freezing, unfreezing and surgery need of a model.

A model takes part in kertransfer's freezing when it has a ``backbone`` (a
``keras.Model`` inside its graph), ``block_patterns`` (ordered ``(block name,
regex)`` pairs over the backbone's layers) and ``unmatched`` (the block rule
for layers no pattern matches). `kertransfer.TransferModel` and the models
derived from one (`kertransfer.models.SharedBackboneModel`, e.g. the two-head
model of `kertransfer.methods.add_head`) implement it; `is_transfer_model` is
the one test of it, `require_transfer_model` the one error.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from kertransfer.backbones.blocks import assign_blocks, is_batchnorm
from kertransfer.errors import InvalidTypeError, format_message
from kertransfer.freezing.policies import FreezeContext


@runtime_checkable
class TransferModelLike(Protocol):
    """A model with a backbone grouped into named blocks."""

    backbone: Any
    block_patterns: tuple
    unmatched: str


def is_transfer_model(model: Any) -> bool:
    """Whether ``model`` implements the transfer-model protocol (a backbone in blocks)."""
    return isinstance(model, TransferModelLike)


def require_transfer_model(model: Any, feature: str = "kertransfer.freeze") -> None:
    """Raise unless ``model`` exposes the backbone and blocks that freezing needs."""
    if not is_transfer_model(model):
        raise InvalidTypeError(
            format_message(
                f"{feature} works on models made by build_transfer_model.",
                fix="Wrap your network with kertransfer.build_transfer_model(backbone=...), "
                "or set layer.trainable yourself.",
                received={"model": type(model).__name__},
            )
        )


def block_context(model: TransferModelLike) -> FreezeContext:
    """Return the layers of a transfer model's backbone grouped into blocks."""
    layers = list(model.backbone.layers)
    block_of = assign_blocks(layers, model.block_patterns, model.unmatched)
    names = [name for name, _ in model.block_patterns]
    return FreezeContext(layers=layers, block_of=block_of, block_names=names)


def all_batchnorm(layer) -> list:
    """Every BatchNorm layer in ``layer``, itself included."""
    sub = layer._flatten_layers(include_self=True, recursive=True)
    return [s for s in sub if is_batchnorm(s)]
