"""Frozen layers run in inference mode: dropout, stochastic depth and noise included.

Keras 3 puts a BatchNorm layer with ``trainable=False`` in inference mode,
but not Dropout: ``trainable`` says nothing to a layer without weights, and a
model called with ``training=True`` passes that flag to every layer inside.
EfficientNet's blocks, kertransfer's transformer (and its attention) and
recurrent layers with ``dropout=`` would drop activations in ``fit`` although
frozen, and features cached in inference mode would differ from what the head
sees during training (DESIGN trap 11).

kertransfer derives the mode from the ``trainable`` flags: every layer of the
backbone (at any depth) whose ``trainable`` is False ignores the training flag
of the call and runs with its own default (inference). Layers that train keep
the caller's flag. `sync_inference_mode` applies the rule; the freeze machinery
calls it whenever it changes the flags, and ``TransferModel.compile`` calls it
(Keras fixes the trainable set there too), so a flag set by hand before
compiling counts as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from kertransfer.freezing.protocol import is_transfer_model

TRAINING = "training"


def _takes_training(layer) -> bool:
    return TRAINING in getattr(layer, "call_signature_parameters", ())


def set_inference_lock(layer, locked: bool) -> None:
    """Make ``layer`` ignore (``locked``) or follow the training flag of its caller.

    A locked layer is called without ``training``, so it runs with its
    signature's default (inference for Dropout, noise and BatchNorm layers).
    """
    if not _takes_training(layer):
        return
    # Keras 3.11+: the flag travels as a call-context argument.
    context = getattr(layer, "_call_context_args", None)
    if isinstance(context, (set, frozenset)):
        layer._call_context_args = (set(context) - {TRAINING}) if locked \
            else (set(context) | {TRAINING})
    has = getattr(layer, "_call_has_context_arg", None)
    if isinstance(has, dict):
        has[TRAINING] = not locked
    # Keras 3.10: functional models and layers read this flag.
    if hasattr(layer, "_call_has_training_arg"):
        layer._call_has_training_arg = not locked


def is_inference_locked(layer) -> bool:
    """Whether ``layer`` ignores its caller's training flag (see `set_inference_lock`)."""
    if not _takes_training(layer):
        return False
    context = getattr(layer, "_call_context_args", None)
    if isinstance(context, (set, frozenset)):
        return TRAINING not in context
    return not getattr(layer, "_call_has_training_arg", True)


def _sublayers(layers: Iterable) -> Iterator:
    for layer in layers:
        yield from layer._flatten_layers(include_self=True, recursive=True)


def sync_inference_mode(model) -> None:
    """Lock every non-trainable layer of ``model.backbone`` in inference mode; unlock the rest."""
    if not is_transfer_model(model):
        return
    for layer in _sublayers(model.backbone.layers):
        set_inference_lock(layer, not layer.trainable)


@contextlib.contextmanager
def inference_except(model, keep: Iterable) -> Iterator[None]:
    """Inside the block every layer of ``model`` but those in ``keep`` runs in inference mode.

    Used to recompute BatchNorm statistics with dropout off. On exit the
    locks follow the ``trainable`` flags again (`sync_inference_mode`).
    """
    keep_ids = {id(layer) for layer in keep}
    layers = [layer for layer in model._flatten_layers(include_self=False, recursive=True)]
    try:
        for layer in layers:
            set_inference_lock(layer, id(layer) not in keep_ids)
        yield
    finally:
        for layer in layers:
            set_inference_lock(layer, False)
        sync_inference_mode(model)
