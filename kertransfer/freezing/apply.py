"""Applying freeze policies and BatchNorm modes to a model."""

from __future__ import annotations

import warnings
from typing import Any

from kertransfer.errors import InvalidArgumentError, format_message, suggest
from kertransfer.freezing.compiled import (
    compiled_by_kertransfer,
    mark_compiled_by_kertransfer,
    record_step_variables,
)
from kertransfer.freezing.inference import sync_inference_mode
from kertransfer.freezing.policies import policy_to_config, resolve_policy
from kertransfer.freezing.protocol import all_batchnorm, block_context, require_transfer_model
from kertransfer.freezing.summary import trainable_summary

BN_MODES = ("frozen", "trainable")


def check_bn_mode(bn: Any) -> str:
    """Validate a ``bn`` argument."""
    if bn not in BN_MODES:
        raise InvalidArgumentError(
            format_message(
                "Unknown BatchNorm mode.",
                expected="'frozen' (every BatchNorm layer stays in inference mode) or "
                "'trainable' (BatchNorm layers in unfrozen blocks train)",
                fix=suggest(str(bn), BN_MODES) or None,
                received={"bn": bn},
            )
        )
    return bn


def apply_policy(model, freeze: Any, bn: str) -> list[bool]:
    """Set ``trainable`` on the backbone's layers; return the frozen mask.

    Head layers (everything outside the backbone) are left trainable.
    """
    policy = resolve_policy(freeze)
    check_bn_mode(bn)
    ctx = block_context(model)
    mask = policy.frozen(ctx)
    backbone = model.backbone
    backbone.trainable = True
    for layer, frozen in zip(ctx.layers, mask):
        # Each sublayer too: under TensorFlow, Keras skips ``layer.trainable = True`` when it
        # is True already, so it would not reach a nested BatchNorm frozen by an earlier call.
        for sub in layer._flatten_layers(include_self=True, recursive=True):
            sub.trainable = not frozen
    if bn == "frozen":
        for layer in ctx.layers:
            for sub in all_batchnorm(layer):
                sub.trainable = False
    if all(mask):
        backbone.trainable = False
    for layer in model.layers:
        if layer is not backbone and layer.weights:
            layer.trainable = True
    sync_inference_mode(model)  # frozen layers run in inference mode, dropout included
    model.freeze_config = policy_to_config(policy)
    model.bn_mode = bn
    return mask


def _trainable_ids(model) -> set[int]:
    return {id(v) for v in model.trainable_variables}


def freeze(model, freeze: Any = "all", *, bn: str | None = None, recompile: bool = True,
           verbose: bool = False):
    """Apply a freeze policy to a model built by `build_transfer_model`.

    Args:
        model: A model from ``build_transfer_model`` (or loaded from its ``.keras`` file).
        freeze: ``"all"``, ``"none"``, a number of blocks from the bottom, a
            fraction of the blocks, a block name (frozen up to and including
            it), a list of these, or a `FreezePolicy`.
        bn: ``"frozen"`` or ``"trainable"``; ``None`` keeps the model's mode.
        recompile: When the model is already compiled and its trainable set
            changed, recompile it so that the next ``fit`` trains the new set
            (the optimizer's state starts afresh; when it had any and you
            compiled the model yourself, a warning says so: after
            `kertransfer.train`, which compiles again on its next call, nothing
            is said). With ``False``, a warning says to recompile.
        verbose: Print the trainable summary afterwards.

    Returns:
        The model (changed in place).

    Raises:
        InvalidTypeError: ``model`` was not built by kertransfer.
        FreezeError: The policy does not fit the backbone.

    Examples:
        >>> import kertransfer as kt
        >>> model = kt.build_transfer_model("mobilenet_v3_small", num_classes=3,
        ...                                 input_shape=(32, 32, 3), weights=None)
        >>> _ = kt.freeze(model, 2)
        >>> model.freeze_config["config"]
        {'n': 2}
    """
    require_transfer_model(model)
    bn = model.bn_mode if bn is None else bn
    before = _trainable_ids(model)
    apply_policy(model, freeze, bn)
    changed = _trainable_ids(model) != before
    if changed and getattr(model, "compiled", False):
        _after_change(model, recompile)
    if verbose:
        trainable_summary(model)
    return model


def _after_change(model, recompile: bool) -> None:
    optimizer = getattr(model, "optimizer", None)
    has_state = bool(optimizer is not None and getattr(optimizer, "built", False))
    if not recompile:
        warnings.warn(
            "The model was compiled before its trainable layers changed; fit() would train "
            "the old set. Call model.compile(...) again before fit(), or pass recompile=True.",
            stacklevel=3,
        )
        return
    if not has_state:
        # The optimizer has no variables yet: rebuilding the step functions is enough.
        reset_step_functions(model)
        return
    ours = compiled_by_kertransfer(model)
    config = model.get_compile_config() if hasattr(model, "get_compile_config") else None
    try:
        model.compile_from_config(config)
    except Exception as exc:  # noqa: BLE001 - custom, unserializable compile arguments
        warnings.warn(
            f"Could not recompile the model from its compile config ({type(exc).__name__}: "
            f"{exc}). Call model.compile(...) again before fit().",
            stacklevel=3,
        )
        return
    if ours:
        # kertransfer compiled it (kt.train, kt.fine_tune): the documented flow of
        # train, freeze, train again; the next train compiles afresh with its own rate.
        mark_compiled_by_kertransfer(model)
        return
    warnings.warn(
        "The trainable layers changed after training had started, so the model was "
        "recompiled and its optimizer state starts afresh. To keep it, set the freeze policy "
        "before the first fit(), or pass recompile=False and manage compilation yourself.",
        stacklevel=3,
    )


def reset_step_functions(model) -> None:
    """Make the next train/test/predict step retrace with the current trainable set."""
    for attr in ("train_function", "test_function", "predict_function"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model, "make_train_function"):
        model.make_train_function(force=True)
    if hasattr(model, "_jax_state_synced"):
        model._jax_state_synced = True
    record_step_variables(model)  # the steps retrace with this trainable set
