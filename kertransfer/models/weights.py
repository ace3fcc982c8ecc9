"""Loading weights into a backbone: ImageNet, local files, other checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import warnings
from typing import Any

import keras
import numpy as np

from kertransfer.errors import (
    InvalidArgumentError,
    WeightsMismatchError,
    WeightsNotFoundError,
    format_message,
)


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


def _oneline(exc: BaseException, limit: int) -> str:
    return " ".join(str(exc).split())[:limit]


def keras_cache_dir() -> pathlib.Path:
    """The folder where Keras caches downloaded weights."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return pathlib.Path(base) / "models"


@contextlib.contextmanager
def _recording_get_file(record: list):
    """Record the file names Keras asks ``get_file`` for while constructing."""
    from keras.src.utils import file_utils

    original = file_utils.get_file

    def wrapper(fname=None, origin=None, *args, **kwargs):
        record.append((fname, origin, kwargs.get("cache_subdir", "datasets")))
        return original(fname, origin, *args, **kwargs)

    file_utils.get_file = wrapper
    try:
        yield
    finally:
        file_utils.get_file = original


def construct_with_imagenet(spec, input_shape) -> keras.Model:
    """Construct ``spec`` with ImageNet weights through the Keras cache.

    Raises:
        WeightsNotFoundError: The weights are not cached and cannot be
            downloaded; the message names the file and where to put it.
    """
    record: list = []
    try:
        with _recording_get_file(record):
            return spec.construct(input_shape, weights="imagenet")
    except Exception as exc:  # noqa: BLE001 - any download failure
        if not record:
            raise
        fname, origin, subdir = record[-1]
        fname = fname or (origin.rsplit("/", 1)[-1] if origin else "?")
        target = keras_cache_dir().parent / subdir / fname
        raise WeightsNotFoundError(
            format_message(
                f"ImageNet weights for {spec.name!r} are not in the Keras cache and could not "
                f"be downloaded ({type(exc).__name__}: {_oneline(exc, 200)}).",
                expected=f"the file {fname} at {target}",
                fix=(
                    "On a machine with network, run "
                    f"`kertransfer.build_transfer_model({spec.name!r})` once (or download the file "
                    "from the address in keras.applications) and copy it to that path; set "
                    "KERAS_HOME to use another cache folder. Offline, use weights=None or a "
                    "local weights file."
                ),
                received={"backbone": spec.name, "weights": "imagenet"},
            )
        ) from None


def _weighted_layers(model) -> dict[str, Any]:
    return {layer.name: layer for layer in model.layers if layer.weights}


def find_backbone(model) -> keras.Model:
    """Return the backbone inside a model built by kertransfer, or the model itself."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, keras.Model):
        return backbone
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
    report = WeightsReport(source=source_name)
    src = _weighted_layers(source)
    tgt = _weighted_layers(target)
    for name, layer in tgt.items():
        if name not in src:
            report.missing.append(name)
            continue
        s_vals = src[name].get_weights()
        t_shapes = [tuple(w.shape) for w in layer.weights]
        s_shapes = [tuple(np.shape(v)) for v in s_vals]
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
        tgt[name].set_weights(src[name].get_weights())
    return report


def load_backbone_weights(backbone: keras.Model, path, strict: bool = True) -> WeightsReport:
    """Load a local weights file into ``backbone``.

    Accepted files: ``.weights.h5`` saved from a backbone
    (``model.backbone.save_weights``), ``.keras`` (a model built by
    kertransfer, whose backbone is used, or any Keras model), and legacy
    ``.h5``.

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
        try:
            source_model = keras.saving.load_model(path, compile=False)
        except Exception as exc:  # noqa: BLE001
            raise WeightsMismatchError(
                format_message(
                    f"Could not read {name} as a Keras model ({type(exc).__name__}: "
                    f"{_oneline(exc, 200)}).",
                    expected="a .keras file saved by keras.Model.save",
                    received={"weights": str(path)},
                )
            ) from None
        return copy_weights_by_name(backbone, find_backbone(source_model), name, strict=strict)
    if name.endswith(".h5"):
        if strict:
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
                        f"({type(exc).__name__}: {_oneline(exc, 300)}).",
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
