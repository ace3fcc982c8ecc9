"""`build_transfer_model`: a pretrained backbone plus a head, ready to train."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from kertransfer._log import print_msg
from kertransfer.backbones.blocks import blocks_from_model, check_blocks
from kertransfer.backbones.custom import adapt_model
from kertransfer.backbones.registry import get_backbone_spec
from kertransfer.backbones.spec import PREPROCESSING_MODES, BackboneSpec
from kertransfer.errors import (
    IncompatibleInputError,
    InvalidArgumentError,
    InvalidTypeError,
    format_message,
    suggest,
)
from kertransfer.freezing.apply import apply_policy, check_bn_mode
from kertransfer.freezing.summary import trainable_summary
from kertransfer.models.imagenet.construct import construct_with_imagenet
from kertransfer.models.transfer_model import ACTIVATIONS, POOLINGS, TransferModel
from kertransfer.models.weights import load_backbone_weights
from kertransfer.validation import check_number, is_int


def _check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidArgumentError(
            format_message(
                f"Unknown {name} {value!r}.",
                expected="one of " + ", ".join(repr(c) for c in choices),
                fix=suggest(str(value), choices) or None,
                received={name: value},
            )
        )
    return value


_TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_heads(num_classes: Any, activation: Any) -> tuple[Any, Any]:
    """Check ``num_classes`` (an int, or ``{task: units}``) and the activation(s)."""
    if not isinstance(num_classes, Mapping):
        if isinstance(activation, Mapping):
            raise InvalidArgumentError(format_message(
                "A mapping of activations needs a mapping of heads.",
                expected="num_classes={task: units, ...}, or one activation name",
                received={"num_classes": num_classes, "activation": dict(activation)}))
        n = _check_num_classes(num_classes)
        _check_activation(n, activation, "num_classes")
        return n, activation
    if not num_classes:
        raise InvalidArgumentError(format_message(
            "num_classes needs at least one head.", expected='e.g. {"digit": 10, "parity": 2}',
            received={"num_classes": dict(num_classes)}))
    bad = [k for k in num_classes if not isinstance(k, str) or not _TASK_NAME.match(k)
           or k in ("head", "image")]
    if bad:
        raise InvalidArgumentError(format_message(
            "Head names must be identifiers (letters, digits, _; starting with a letter), "
            "other than 'head' and 'image'.",
            expected='e.g. {"digit": 10, "parity": 2}',
            received={"num_classes": dict(num_classes)}))
    heads = {k: _check_num_classes(v, f"num_classes[{k!r}]") for k, v in num_classes.items()}
    if isinstance(activation, Mapping):
        if set(activation) != set(heads):
            raise InvalidArgumentError(format_message(
                "activation must name the same heads as num_classes.",
                expected=f"keys {sorted(heads)}", received={"activation": dict(activation)}))
        acts = dict(activation)
    else:
        acts = {k: activation for k in heads}
    for k, n in heads.items():
        _check_activation(n, acts[k], f"num_classes[{k!r}]")
    return heads, acts


def _check_activation(n: int, activation: Any, where: str) -> None:
    _check_choice(activation, "activation", ACTIVATIONS)
    if activation == "softmax" and n == 1:
        raise InvalidArgumentError(
            format_message(
                "A softmax over one class always outputs 1.",
                expected="num_classes >= 2 with softmax, or activation='sigmoid' for a single "
                "binary output",
                received={where: n, "activation": activation},
            )
        )


def _check_num_classes(num_classes: Any, where: str = "num_classes") -> int:
    if not is_int(num_classes):
        raise InvalidTypeError(
            format_message(
                "num_classes must be an integer, or a mapping {head: integer} for several "
                "heads.",
                received={where: num_classes},
            )
        )
    if num_classes < 1:
        raise InvalidArgumentError(
            format_message(
                "num_classes must be at least 1.",
                expected="the number of classes of the target task (1 for a single sigmoid "
                "output)",
                received={where: num_classes},
            )
        )
    return int(num_classes)


def _check_sequence_shape(input_shape: Any, spec: BackboneSpec) -> tuple[int, ...]:
    """``(timesteps,)`` of token ids or ``(timesteps, features)`` of a series."""
    if input_shape is None:
        return (spec.default_size, 1)
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
    ok = len(shape) in (1, 2) and all(is_int(d) and d > 0 for d in shape)
    if not ok:
        raise InvalidArgumentError(
            format_message(
                f"{spec.name!r} is a sequence backbone: input_shape is (timesteps, features) "
                "for a time series or (timesteps,) for token ids.",
                expected=f"e.g. ({spec.default_size}, 1) or ({spec.default_size},)",
                received={"input_shape": input_shape},
            )
        )
    if shape[0] < spec.min_size:
        raise IncompatibleInputError(
            format_message(f"The sequence is shorter than {spec.name!r} accepts.",
                           expected=f"at least {spec.min_size} timesteps",
                           received={"input_shape": shape}))
    return tuple(int(d) for d in shape)


def _check_input_shape(input_shape: Any, spec: BackboneSpec | None, weights: Any,
                       preprocessing: str) -> tuple[int, ...]:
    if spec is not None and spec.inputs == "sequence":
        return _check_sequence_shape(input_shape, spec)
    if input_shape is None:
        size = spec.default_size if spec else None
        if size is None:
            raise InvalidArgumentError(
                format_message("input_shape is needed for this backbone.",
                               expected="(height, width, channels)",
                               received={"input_shape": input_shape})
            )
        return (size, size, 3)
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(is_int(d) and d > 0 for d in shape):
        raise InvalidArgumentError(
            format_message(
                "input_shape must be three positive integers.",
                expected="(height, width, channels), e.g. (224, 224, 3)",
                received={"input_shape": input_shape},
            )
        )
    h, w, c = (int(d) for d in shape)
    if spec is not None and min(h, w) < spec.min_size:
        raise IncompatibleInputError(
            format_message(
                f"The input is smaller than {spec.name!r} accepts.",
                expected=f"height and width of at least {spec.min_size} (default "
                f"{spec.default_size})",
                fix="Resize the images (kertransfer.data.load(..., image_size=...)).",
                received={"input_shape": shape},
            )
        )
    if c != 3 and weights == "imagenet":
        raise IncompatibleInputError(
            format_message(
                "ImageNet weights need 3-channel (RGB) input.",
                expected="input_shape[-1] == 3; data loaders turn grayscale into RGB",
                fix="Use channels=3, or weights=None to train a new network.",
                received={"input_shape": shape, "weights": weights},
            )
        )
    if c != 3 and preprocessing in ("caffe", "torch"):
        raise IncompatibleInputError(
            format_message(
                f"The {preprocessing!r} preprocessing of this backbone needs RGB input.",
                expected="input_shape[-1] == 3",
                received={"input_shape": shape},
            )
        )
    return (h, w, c)


def _check_weights(weights: Any) -> Any:
    if weights is None or weights == "imagenet":
        return weights
    if isinstance(weights, (str, os.PathLike)):
        return os.fspath(weights)
    raise InvalidTypeError(
        format_message(
            "Unsupported weights argument.",
            expected='"imagenet", None, or the path of a .keras / .weights.h5 file',
            received={"weights": weights},
        )
    )


def _make_backbone(backbone, input_shape, weights, preprocessing, blocks):
    """The backbone network of `build_transfer_model`, by registry name or as given:
    ``(net, preprocessing, block patterns, unmatched rule, backbone name, weights
    still to load)``."""
    if isinstance(backbone, str):
        spec = get_backbone_spec(backbone)
        prep = preprocessing or spec.preprocessing
        if weights == "imagenet" and not spec.has_imagenet:
            raise InvalidArgumentError(
                format_message(f"{spec.name!r} has no ImageNet weights.",
                               expected="weights=None or a weights file",
                               received={"backbone": backbone, "weights": weights})
            )
        shape = _check_input_shape(input_shape, spec, weights, prep)
        net = construct_with_imagenet(spec, shape) if weights == "imagenet" else spec.construct(
            shape, weights=None)
        net.name = "backbone"
        patterns = tuple(blocks) if blocks else spec.blocks
        unmatched = spec.unmatched if not blocks else "previous"
        backbone_name = spec.name
    elif isinstance(backbone, keras.Model):
        net, _ = adapt_model(backbone, input_shape, blocks)
        prep = preprocessing or "none"
        patterns = tuple(blocks) if blocks else blocks_from_model(net)
        unmatched = "previous"
        backbone_name = "custom"
        if weights == "imagenet":
            weights = None  # keep the model's own weights
    else:
        raise InvalidTypeError(
            format_message(
                "backbone must be a registry name or a keras.Model.",
                expected="e.g. 'efficientnet_b0' (kertransfer.list_backbones()) or a headless "
                "keras.Model",
                received={"backbone": backbone},
            )
        )
    return net, prep, patterns, unmatched, backbone_name, weights


def build_transfer_model(
    backbone: str | keras.Model,
    num_classes: int | Mapping[str, int],
    *,
    input_shape: Sequence[int] | None = None,
    weights: str | os.PathLike | None = "imagenet",
    pooling: str = "avg",
    dropout: float = 0.2,
    head_units: Sequence[int] = (),
    activation: str | Mapping[str, str] = "softmax",
    freeze: Any = "all",
    bn: str = "frozen",
    preprocessing: str | None = None,
    blocks: Sequence[tuple[str, str]] | None = None,
    weights_strict: bool = True,
    name: str | None = None,
    verbose: bool = False,
) -> TransferModel:
    """Build a transfer model: a backbone, its preprocessing, a head, a freeze policy.

    The model takes raw RGB images with values in 0-255; the backbone's own
    preprocessing is inside it, so training, evaluation and serving agree.

    Args:
        backbone: A registry name (``kertransfer.list_backbones()``), or any
            headless ``keras.Model`` (its blocks follow the rule in
            `kertransfer.backbones.blocks` unless ``blocks`` is given;
            the model object is used as-is, not copied). A subclassed model
            (its own ``call``) is one block named after it; see
            `kertransfer.backbones.custom`.
        num_classes: Number of classes (output units), or ``{task: classes}``
            for one backbone with several named heads (multi-task): the
            model's outputs are then a dict keyed by task, each head with
            its own dense stack (``<task>_dense_<i>``) and output layer
            (``<task>_predictions``). Compile it with per-task losses, loss
            weights and metrics (`kertransfer.training.train` does).
        input_shape: ``(height, width, channels)``; defaults to the
            backbone's default size with 3 channels.
        weights: ``"imagenet"`` (downloaded once into the Keras cache), a
            path to a ``.keras`` or ``.weights.h5`` file, or ``None`` (random
            initialization). For a ``keras.Model`` backbone the default keeps
            the model's own weights.
        pooling: ``"avg"``, ``"max"`` or ``"flatten"``.
        dropout: Dropout rate in the head, in [0, 1).
        head_units: Widths of extra dense layers in the head (ReLU).
        activation: ``"softmax"``, ``"sigmoid"`` (multi-label) or ``"logits"``;
            with several heads, one for all or ``{task: activation}``.
        freeze: ``"all"`` (train the head only), ``"none"``, a number of blocks
            frozen from the bottom, a fraction of the blocks, a block name
            (frozen up to and including it), a list of these, or a
            `kertransfer.freezing.FreezePolicy`.
        bn: ``"frozen"``: every BatchNorm layer stays in inference mode, also
            in unfrozen blocks (the usual good default for small data);
            ``"trainable"``: BatchNorm layers in unfrozen blocks train.
        preprocessing: Override the backbone's preprocessing mode
            (``"caffe"``, ``"tf"``, ``"torch"``, ``"builtin"``, ``"none"``).
        blocks: Override the block patterns, ``[(name, regex), ...]``.
        weights_strict: With a weights file, require every backbone layer to
            match; ``False`` loads what matches by layer name and shape and
            reports the rest.
        name: Model name.
        verbose: Print the weight-loading report and the trainable summary.

    Returns:
        A `TransferModel` (a functional ``keras.Model``), not compiled.

    Raises:
        UnknownBackboneError: ``backbone`` is not registered.
        IncompatibleInputError: ``input_shape`` does not fit the backbone.
        InvalidArgumentError: An argument is outside what is allowed.
        WeightsNotFoundError: The weights file (or the cached ImageNet file) is missing.
        WeightsMismatchError: The weights file is for another architecture.
        FreezeError: The freeze policy does not fit the backbone.
        InvalidTypeError: ``backbone`` is neither a name nor a ``keras.Model``,
            or a subclassed model cannot be called on a symbolic input.

    Examples:
        >>> import kertransfer as kt
        >>> model = kt.build_transfer_model("mobilenet_v3_small", num_classes=5,
        ...                                 input_shape=(32, 32, 3), weights=None)
        >>> model.output_shape
        (None, 5)
    """
    num_classes, activation = check_heads(num_classes, activation)
    _check_choice(pooling, "pooling", POOLINGS)
    check_bn_mode(bn)
    dropout = check_number(dropout, "dropout", minimum=0, maximum=1, exclusive_maximum=True,
                           fix="It is the dropout rate before the head's dense layers.")
    head_units = tuple(head_units or ())
    if not all(is_int(u) and u > 0 for u in head_units):
        raise InvalidArgumentError(
            format_message("head_units must be positive integers.",
                           expected="a tuple such as (256,) or ()",
                           received={"head_units": head_units})
        )
    head_units = tuple(int(u) for u in head_units)
    if preprocessing is not None:
        _check_choice(preprocessing, "preprocessing", PREPROCESSING_MODES)
    weights = _check_weights(weights)

    net, prep, patterns, unmatched, backbone_name, weights = _make_backbone(
        backbone, input_shape, weights, preprocessing, blocks)
    check_blocks(net.layers, patterns, unmatched)
    report = None
    if weights is not None and weights != "imagenet":
        report = load_backbone_weights(net, weights, strict=weights_strict)
        if verbose or not report.complete:
            print_msg(str(report))

    model = TransferModel(
        net,
        num_classes,
        pooling=pooling,
        dropout=float(dropout),
        head_units=head_units,
        activation=activation,
        preprocessing=prep,
        block_patterns=patterns,
        unmatched=unmatched,
        backbone_name=backbone_name,
        bn=bn,
        name=name or f"transfer_{backbone_name}",
    )
    model.weights_report = report
    apply_policy(model, freeze, bn)
    if verbose:
        trainable_summary(model)
    return model
