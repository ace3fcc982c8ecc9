"""The ImageNet classifier itself, as a transfer model: the pretrained head kept.

`build_imagenet_classifier` builds ``build_transfer_model(name, 1000,
weights="imagenet")`` and puts the family's ImageNet classification layer into
its head, so the model predicts ImageNet's 1,000 classes (indices as Keras'
``decode_predictions`` numbers them). It is a `TransferModel` like any other:
its softmax outputs are the source-class probabilities LEEP needs
(`kertransfer.rank_backbones`), Grad-CAM explains it on a real photo, and LwF
(`kertransfer.methods.learn_without_forgetting`) can keep its ImageNet
predictions while a new head learns.

The families whose ImageNet classifier is global average pooling, dropout and
one dense (or 1×1 convolution) layer qualify: MobileNet v1, EfficientNet(-Lite,
-V2), ResNet, DenseNet, Xception, Inception, NASNet and others; MobileNetV3,
whose classifier has a convolution of its own before the last layer,
ConvNeXt, whose head normalises the pooled features, and VGG, whose head is
several dense layers, do not. The classifier's top is read from the network
itself: the layers from its last global average pooling on. Reading it
builds the whole classifier at the family's own size, which takes as long as
building the transfer model; the head read is kept for the rest of the process
and read again only when its file changes (so ranking several targets, or
building the classifier at several sizes, builds the full network once).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kertransfer._fs import keras_cache_dir
from kertransfer.backbones import get_backbone_spec
from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.models.build import build_transfer_model
from kertransfer.models.imagenet.construct import construct_with_imagenet

IMAGENET_CLASSES = 1000
# Layers of a classifier top that carry no weights and keep the class scores linear in the
# pooled features: pooling, dropout, reshapes, the final activation.
_PASS_THROUGH = (keras.layers.GlobalAveragePooling2D, keras.layers.Dropout,
                 keras.layers.Reshape, keras.layers.Flatten, keras.layers.Activation,
                 keras.layers.Softmax)
# Heads read in this process: (family, Keras cache folder) -> (identity of the files read,
# kernel, bias); an entry is used only while its files are unchanged.
_HEADS: dict[tuple[str, str], tuple] = {}


def _identity(paths) -> tuple | None:
    """``(path, modification time, size)`` of each file, or None when one is gone."""
    try:
        return tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths)
    except OSError:
        return None


def _top_layers(spec, full: keras.Model) -> list:
    """The layers the classifier ``full`` adds to the headless network: from its last global
    average pooling on (a network without one: every layer the headless one lacks)."""
    pools = [i for i, layer in enumerate(full.layers)
             if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    if pools:
        return full.layers[pools[-1]:]
    headless = {layer.name for layer in spec.construct(
        tuple(full.input_shape[1:]), weights=None).layers}
    return [layer for layer in full.layers if layer.name not in headless
            and not isinstance(layer, keras.layers.InputLayer)]


def imagenet_head_weights(spec, input_shape=None) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel [features, 1000], bias [1000])`` of ``spec``'s ImageNet classification layer
    (read once per process and file; the arrays returned are copies).

    Raises:
        InvalidArgumentError: The family's ImageNet classifier is not pooling and one
            dense layer (see the module notes).
    """
    key = (spec.name, str(keras_cache_dir()))
    kept = _HEADS.get(key)
    if kept is not None and _identity(p for p, _, _ in kept[0]) == kept[0]:
        return kept[1].copy(), kept[2].copy()
    files: list = []
    kernel, bias = _read_head(spec, input_shape, files)
    identity = _identity(files) if files else None
    if identity is not None:  # kept only when known by its files
        _HEADS[key] = (identity, kernel, bias)
    return kernel.copy(), bias.copy()


def _read_head(spec, input_shape, files: list) -> tuple[np.ndarray, np.ndarray]:
    """`imagenet_head_weights` read from the whole classifier; ``files`` gets its files."""
    full = construct_with_imagenet(spec, input_shape, include_top=True, files=files)
    top = _top_layers(spec, full)
    weighted = [layer for layer in top if layer.weights]
    others = [layer for layer in top if not layer.weights]
    dense = weighted[0] if len(weighted) == 1 else None
    ok = (dense is not None and isinstance(dense, (keras.layers.Dense, keras.layers.Conv2D))
          and all(isinstance(layer, _PASS_THROUGH) for layer in others)
          and (not isinstance(dense, keras.layers.Conv2D) or tuple(dense.kernel_size) == (1, 1)))
    if not ok:
        raise InvalidArgumentError(format_message(
            f"The ImageNet classifier of {spec.name!r} is not global pooling and one dense "
            "layer, so it cannot become a transfer model's head.",
            fix="Use its keras.applications constructor with include_top=True, or a family "
                "such as 'mobilenet' or 'efficientnet_lite0'.",
            received={"backbone": spec.name}))
    kernel, *rest = dense.get_weights()
    bias = rest[0] if rest else np.zeros(kernel.shape[-1], kernel.dtype)
    return kernel.reshape(-1, kernel.shape[-1]), bias


def build_imagenet_classifier(backbone: str, *, input_shape: Sequence[int] | None = None,
                              freeze: Any = "all", bn: str = "frozen",
                              name: str | None = None):
    """The ImageNet classifier of a registry backbone, as a transfer model.

    Args:
        backbone: A registry name whose ImageNet classifier is global pooling
            and one dense layer (see the module notes).
        input_shape: ``(height, width, 3)``; default the family's own size.
            The convolutions fit any size; the head reads pooled features.
        freeze: Freeze policy (default: everything but the head frozen).
        bn: BatchNorm mode.
        name: Model name.

    Returns:
        A `kertransfer.models.TransferModel` with 1,000 softmax outputs (no
        head dropout), the ImageNet classification layer as its
        ``predictions`` layer.

    Raises:
        InvalidArgumentError: The family does not qualify.
        WeightsNotFoundError: Its ImageNet files are not installed or cached
            (the message names ``kertransfer weights install NAME``).
    """
    spec = get_backbone_spec(backbone)
    kernel, bias = imagenet_head_weights(spec)
    model = build_transfer_model(spec.name, IMAGENET_CLASSES, input_shape=input_shape,
                                 weights="imagenet", dropout=0.0, freeze=freeze, bn=bn,
                                 name=name or f"imagenet_{spec.name}")
    head = model.get_layer("predictions")
    if tuple(head.kernel.shape) != kernel.shape:
        raise InvalidArgumentError(format_message(
            f"The ImageNet classifier of {spec.name!r} reads {kernel.shape[0]} features and "
            f"the backbone gives {head.kernel.shape[0]}.",
            received={"backbone": spec.name}))
    head.set_weights([kernel, bias])
    return model
