"""Loading weights into a backbone from local files and other checkpoints (ImageNet weights:
`kertransfer.models.imagenet.construct`)."""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import re
import warnings
from typing import Any

import keras
import numpy as np

from kertransfer._seeds import random_state_kept
from kertransfer.errors import (
    InvalidArgumentError,
    WeightsMismatchError,
    WeightsNotFoundError,
    format_message,
)
from kertransfer.freezing.protocol import is_transfer_model


@dataclasses.dataclass
class WeightsReport:
    """What a by-name weight load matched.

    Attributes:
        source: Where the weights came from.
        matched: Layer names whose weights were copied.
        missing: Target layers with weights that the source lacks.
        mismatched: ``(layer, target shapes, source shapes)`` for layers
            present in both with different shapes.
        unexpected: Source layers with weights that the target lacks.
    """

    source: str
    matched: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, list, list]] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every target layer with weights got its weights."""
        return not self.missing and not self.mismatched

    def __str__(self) -> str:
        lines = [
            f"Weights from {self.source}: {len(self.matched)} layers matched, "
            f"{len(self.missing)} missing, {len(self.mismatched)} with other shapes, "
            f"{len(self.unexpected)} unused."
        ]
        for name, tshape, sshape in self.mismatched[:10]:
            lines.append(f"  shape differs: {name}: model {tshape} vs file {sshape}")
        if self.missing:
            lines.append("  missing: " + ", ".join(self.missing[:10])
                         + (" ..." if len(self.missing) > 10 else ""))
        return "\n".join(lines)


def _oneline(exc: BaseException, limit: int | None = None) -> str:
    """The exception's message on one line, whole unless ``limit`` says otherwise."""
    text = " ".join(str(exc).split())
    if limit is not None and len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text


def _weighted_layers(model) -> dict[str, Any]:
    return {layer.name: layer for layer in model.layers if layer.weights}


def find_backbone(model) -> keras.Model:
    """Return the backbone inside a model built by kertransfer, or the model itself."""
    if is_transfer_model(model):
        return model.backbone
    for layer in model.layers:
        if layer.name == "backbone" and isinstance(layer, keras.Model):
            return layer
    return model


def copy_weights_by_name(target: keras.Model, source: keras.Model, source_name: str,
                         strict: bool = True) -> WeightsReport:
    """Copy weights from ``source`` to ``target`` layer by layer name and shape.

    Args:
        target: The model to fill.
        source: The model to read.
        source_name: How to name the source in messages.
        strict: Raise unless every target layer with weights was matched.

    Returns:
        A `WeightsReport`.

    Raises:
        WeightsMismatchError: ``strict`` and the architectures differ.
    """
    return _copy_arrays_by_name(target, _layer_arrays(source), source_name, strict)


def _layer_arrays(model) -> dict[str, list]:
    """``{layer name: its weight arrays}`` of ``model``'s layers that have weights."""
    return {name: layer.get_weights() for name, layer in _weighted_layers(model).items()}


def _copy_arrays_by_name(target: keras.Model, src: dict[str, list], source_name: str,
                         strict: bool) -> WeightsReport:
    """`copy_weights_by_name` from ``{layer name: weight arrays}``."""
    report = WeightsReport(source=source_name)
    tgt = _weighted_layers(target)
    for name, layer in tgt.items():
        if name not in src:
            report.missing.append(name)
            continue
        t_shapes = [tuple(w.shape) for w in layer.weights]
        s_shapes = [tuple(np.shape(v)) for v in src[name]]
        if t_shapes != s_shapes:
            report.mismatched.append((name, t_shapes, s_shapes))
            continue
        report.matched.append(name)
    report.unexpected = [n for n in src if n not in tgt]
    if strict and not report.complete:
        raise WeightsMismatchError(
            format_message(
                f"The weights in {source_name} belong to another architecture: "
                f"{len(report.matched)} of {len(tgt)} layers with weights match by name and "
                f"shape.",
                expected="a weights file saved from the same backbone",
                fix=(
                    "To load what matches and leave the rest initialized, pass "
                    "weights_strict=False. " + str(report).split("\n", 1)[-1]
                ).strip(),
                received={"weights": source_name},
            )
        )
    for name in report.matched:
        tgt[name].set_weights(src[name])
    return report


#: A ``.keras`` file up to this size keeps its backbone's arrays in memory after a load
#: (`_keras_file_arrays`), so the trials of a search read it once.
KERAS_FILE_CACHE_BYTES = 256 * 2**20


@functools.lru_cache(maxsize=2)
def _cached_keras_file_arrays(path: str, identity: tuple) -> dict[str, list]:
    return _read_keras_file_arrays(pathlib.Path(path))


def _read_keras_file_arrays(path: pathlib.Path) -> dict[str, list]:
    try:
        # Rebuilding the saved model draws initializer seeds; drawn or not (kept arrays), the
        # caller's random streams stay where they were, so a seeded build is the same.
        with random_state_kept():
            source_model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001
        raise WeightsMismatchError(
            format_message(
                f"Could not read {path.name} as a Keras model ({type(exc).__name__}: "
                f"{_oneline(exc)}).",
                expected="a .keras file saved by keras.Model.save",
                received={"weights": str(path)},
            )
        ) from None
    return _layer_arrays(find_backbone(source_model))


def _keras_file_arrays(path: pathlib.Path) -> dict[str, list]:
    """The backbone's ``{layer name: weight arrays}`` of a ``.keras`` file.

    Reading the file builds the whole saved model, seconds for a backbone, so
    the arrays of the two files read last (up to `KERAS_FILE_CACHE_BYTES`) are
    kept, keyed by the file's path, inode, size and modification times: a file
    that changes is read again.
    """
    stat = path.stat()
    if stat.st_size > KERAS_FILE_CACHE_BYTES:
        return _read_keras_file_arrays(path)
    identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return _cached_keras_file_arrays(str(path.resolve()), identity)


def _load_h5_strict(backbone: keras.Model, path: pathlib.Path) -> WeightsReport:
    """Load a ``.h5`` weights file that must fit every layer of ``backbone``; on a
    mismatch the backbone's weights are restored and `WeightsMismatchError` raised."""
    name = path.name
    snapshot = backbone.get_weights()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backbone.load_weights(path)
        # Keras skips parts of a file that do not fit with a warning only.
        skipped = [str(w.message) for w in caught
                   if re.search(r"skipping|mismatch|no matching|could not",
                                str(w.message), re.IGNORECASE)]
        if skipped:
            raise ValueError(skipped[0])
    except Exception as exc:  # noqa: BLE001
        backbone.set_weights(snapshot)
        raise WeightsMismatchError(
            format_message(
                f"The weights in {name} do not fit this backbone "
                f"({type(exc).__name__}: {_oneline(exc)}).",
                expected="a weights file saved from the same backbone "
                "(model.backbone.save_weights(...))",
                fix="To load what matches by layer name, save a .keras model and "
                "pass weights_strict=False.",
                received={"weights": str(path)},
            )
        ) from None
    report = WeightsReport(source=name)
    report.matched = list(_weighted_layers(backbone))
    return report


def load_backbone_weights(backbone: keras.Model, path, strict: bool = True) -> WeightsReport:
    """Load a local weights file into ``backbone``.

    Accepted files: ``.weights.h5`` saved from a backbone
    (``model.backbone.save_weights``), ``.keras`` (a model built by
    kertransfer, whose backbone is used, or any Keras model), and legacy
    ``.h5``. A ``.keras`` file is read once while it stays the same: the
    arrays of the two files read last are kept (see `_keras_file_arrays`),
    so building the same model again, as a search's trials do, skips
    rebuilding the saved model.

    Raises:
        WeightsNotFoundError: The file does not exist.
        WeightsMismatchError: The file is for another architecture.
        InvalidArgumentError: The file type is not supported.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            format_message(
                f"The weights file {str(path)!r} does not exist.",
                expected='"imagenet", None, or the path of a .keras or .weights.h5 file',
                received={"weights": str(path)},
            )
        )
    name = path.name
    if name.endswith(".keras"):
        return _copy_arrays_by_name(backbone, _keras_file_arrays(path), name, strict)
    if name.endswith(".h5"):
        if strict:
            return _load_h5_strict(backbone, path)
        raise InvalidArgumentError(
            format_message(
                "Loading by layer name (weights_strict=False) needs a .keras file.",
                received={"weights": str(path)},
            )
        )
    raise InvalidArgumentError(
        format_message(
            f"Unsupported weights file {name!r}.",
            expected="a .keras, .weights.h5 or .h5 file",
            received={"weights": str(path)},
        )
    )
