"""Predictions from an export, a ``.keras`` model or a run folder, on image files.

``predict("serving/flowers/1", ["photo1.jpg", "photos/"], top_k=3)`` decodes
each image, runs the model and returns the top classes with their
probabilities (for sigmoid heads, the classes their threshold decides: see
`predict`). A SavedModel is run through its ``serve_image_bytes``
signature (the file's bytes, decoded and resized inside the graph: exactly
what a serving client gets); the other formats get the same decoding and
resizing done here, in TensorFlow, as the data pipeline does it.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from kertransfer.data.folders import list_image_files
from kertransfer.data.images import to_model_image
from kertransfer.errors import (
    CorruptImageError,
    DataError,
    DataSourceNotFoundError,
    IncompatibleInputError,
    MissingDependencyError,
    format_message,
)
from kertransfer.models.decisions import (
    DECISIONS,
    DEFAULT_THRESHOLD,
    decide,
    decision_rule,
    head_activation,
    name_count,
)
from kertransfer.serving.runtime import (
    METADATA_FILE,
    Runner,
    detect_format,
    head_names,
    head_setting,
    keras_probabilities,
    open_export,
)
from kertransfer.serving.sources import load_keras_source
from kertransfer.validation import check_int, check_number


def _latest_version(folder: pathlib.Path) -> pathlib.Path | None:
    versions = sorted((int(p.name), p) for p in folder.iterdir()
                      if p.is_dir() and p.name.isdigit() and detect_format(p))
    return versions[-1][1] if versions else None


def load_predictor(source: str | os.PathLike) -> Runner:
    """Load what ``source`` names with the runtime it needs.

    Args:
        source: An export version folder (any format), a serving folder of
            versions (the highest is used), a ``.tflite``/``.onnx`` file, a
            ``.keras`` file, a run folder or a search folder.

    Returns:
        A `kertransfer.serving.runtime.Runner`; ``runner.metadata["classes"]``
        holds the class names.
    """
    path = pathlib.Path(source)
    if not path.exists():
        raise DataSourceNotFoundError(
            format_message("The model to predict with does not exist.",
                           received={"model": str(source)})
        )
    if path.is_dir() and not (path / METADATA_FILE).is_file() \
            and not (path / "saved_model.pb").is_file():
        latest = _latest_version(path)
        if latest is not None:
            path = latest
    fmt = detect_format(path)
    is_export = path.is_dir() and ((path / METADATA_FILE).is_file()
                                   or (path / "saved_model.pb").is_file())
    if fmt in ("tflite", "onnx") or (fmt is not None and is_export):
        try:
            return open_export(path, fmt)
        except ImportError as exc:

            raise MissingDependencyError(
                format_message(f"Running a {fmt} export needs {exc.name or 'its runtime'}.",
                               fix=f"pip install {exc.name or 'onnxruntime'}",
                               received={"model": str(source)})
            ) from exc

    model, info = load_keras_source(path)
    if len(model.input_shape) != 4 or model.input_shape[-1] != 3:
        raise IncompatibleInputError(
            format_message("predict needs a model of RGB images.",
                           expected="input shape (None, H, W, 3)",
                           received={"model.input_shape": model.input_shape})
        )
    heads = head_names(model)
    activation = head_activation(model, None) if heads == [None] else {
        h: head_activation(model, h) for h in heads}
    runner = Runner("keras", path, {"classes": info.get("class_names"),
                                    "activation": activation})
    runner.input_size = (int(model.input_shape[1]), int(model.input_shape[2]))
    runner.model = model
    runner._run = lambda x: keras_probabilities(model, x)
    return runner


def image_files(images: Sequence[str | os.PathLike]) -> list[pathlib.Path]:
    """The image files named by ``images`` (files, or folders read recursively)."""
    files: list[pathlib.Path] = []
    for item in images:
        p = pathlib.Path(item)
        if p.is_dir():
            found = [pathlib.Path(f) for f in list_image_files(p)]
            if not found:
                raise DataError(
                    format_message("The folder holds no image files.",
                                   expected="files ending in .jpg, .jpeg, .png, .bmp or .gif",
                                   received={"images": str(item)})
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DataSourceNotFoundError(
                format_message("No such image file or folder.", received={"images": str(item)})
            )
    return files


def decode_image_file(path: pathlib.Path, data: bytes):
    """Decode one file's bytes to RGB uint8; a clear error names a file that is no image."""
    import tensorflow as tf

    try:
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    except (tf.errors.InvalidArgumentError, ValueError) as exc:
        raise CorruptImageError(
            format_message("This file is not an image that can be decoded.",
                           expected="a JPEG, PNG, GIF or BMP file",
                           received={"image": str(path)})
        ) from exc


def _classes(runner: Runner, head: str | None, count: int) -> list[str]:
    classes = runner.metadata.get("classes")
    if isinstance(classes, dict):
        classes = classes.get(head)
    if not isinstance(classes, list) or len(classes) != count:
        return [str(i) for i in range(count)]
    return [str(c) for c in classes]


def _rule(runner: Runner, head: str | None, units: int) -> str:
    """The head's decision: the export's record, else its activation's rule."""
    meta = runner.metadata
    rule = head_setting(meta.get("decision"), head)
    if rule in DECISIONS:
        return rule
    return decision_rule(head_setting(meta.get("activation"), head), units)


def _threshold(runner: Runner, head: str | None, given) -> float:
    value = head_setting(given, head) if given is not None else None
    if value is None:
        value = head_setting(runner.metadata.get("threshold"), head)
    return DEFAULT_THRESHOLD if value is None else float(value)


def _check_threshold(threshold) -> None:
    named = ({f"threshold[{head!r}]": v for head, v in threshold.items()}
             if isinstance(threshold, dict) else {"threshold": threshold})
    for name, value in named.items():
        check_number(value, name, minimum=0, maximum=1, exclusive_minimum=True,
                     exclusive_maximum=True, allow_none=True,
                     fix="A probability; None takes the export's (0.5 by default).")


def _heads(outputs: dict[str, np.ndarray]) -> dict[str | None, np.ndarray]:
    heads = {}
    for key, value in outputs.items():
        if key == "probabilities":
            heads[None] = value
        elif key.endswith("_probabilities"):
            heads[key[: -len("_probabilities")]] = value
    if not heads:  # an export from elsewhere: its float outputs
        heads = {k: v for k, v in outputs.items() if v.dtype.kind == "f"}
        if len(heads) == 1:
            heads = {None: next(iter(heads.values()))}
    return heads


def predict(source, images, *, top_k: int = 3, batch_size: int = 32,
            threshold: float | dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The classes of each image, most probable first.

    A softmax or logits head reports its top ``top_k`` classes. A binary
    head (one sigmoid unit, two class names) reports the class its
    threshold decides (the positive one when ``p > threshold``), then the
    other (when ``top_k`` > 1), each with its probability (``p`` and
    ``1 - p``). A multi-label head (several sigmoid units) reports every
    class above the threshold, whatever ``top_k``, and none when no class is.

    Args:
        source: A path for `load_predictor`, or a runner it returned.
        images: Image files and folders (searched recursively), or an array
            ``[n, H, W, 3]`` of pixels in 0-255 at the model's input size.
        top_k: Classes to report per image (and per softmax head).
        batch_size: Images per call of the model.
        threshold: For sigmoid heads, the probability a class must exceed
            (one number, or ``{head: number}``); default: the export's (0.5
            unless it was exported with another).

    Returns:
        One dict per image: ``{"file": ..., "predictions": [{"class", "index",
        "probability"}, ...]}``; for several heads ``"predictions"`` maps each
        head to such a list.
    """
    top_k = check_int(top_k, "top_k", minimum=1)
    _check_threshold(threshold)
    runner = source if isinstance(source, Runner) else load_predictor(source)
    size = runner.input_size
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[1:] != (*size, 3):
            raise IncompatibleInputError(
                format_message("images must be a batch of the model's input size.",
                               expected=f"an array [n, {size[0]}, {size[1]}, 3]",
                               received={"images.shape": images.shape})
            )
        names = [f"[{i}]" for i in range(len(images))]
        batches = [("array", images[i:i + batch_size]) for i in range(0, len(images),
                                                                      batch_size)]
    else:
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        files = image_files(images)
        names = [str(f) for f in files]
        batches = []

        for i in range(0, len(files), batch_size):
            chunk = [(f, f.read_bytes()) for f in files[i:i + batch_size]]
            decoded = [decode_image_file(f, data) for f, data in chunk]  # names a corrupt file
            if runner.takes_bytes:  # the export decodes and resizes the bytes itself
                batches.append(("bytes", [data for _, data in chunk]))
            else:
                batches.append(("array", np.stack([to_model_image(im, size).numpy()
                                                   for im in decoded])))
    outputs: list[dict[str, np.ndarray]] = []
    for kind, batch in batches:
        outputs.append(runner.from_bytes(batch) if kind == "bytes"
                       else runner(np.asarray(batch, dtype="float32")))
    merged = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    heads = _heads(merged)
    decided = {}
    for head, probs in heads.items():
        rule = _rule(runner, head, probs.shape[-1])
        classes = _classes(runner, head, name_count(rule, probs.shape[-1]))
        picks = decide(probs, rule, _threshold(runner, head, threshold))
        decided[head] = [[{"class": classes[j], "index": j, "probability": p}
                          for j, p in (row if rule == "multi_label" else row[:top_k])]
                         for row in picks]
    rows = []
    for i, name in enumerate(names):
        per_head = {head: decided[head][i] for head in heads}
        rows.append({"file": name, "predictions": per_head[None] if list(per_head) == [None]
                     else per_head})
    return rows


def format_predictions(rows: list[dict[str, Any]], top_k: int | None = None) -> str:
    """A table: file, (head,) then ``class probability`` for each of the top classes."""
    multi = bool(rows) and isinstance(rows[0]["predictions"], dict)
    lines = []
    for row in rows:
        preds = row["predictions"] if multi else {None: row["predictions"]}
        for head, top in preds.items():
            cells = [row["file"]] + ([str(head)] if multi else [])
            cells += [f"{p['class']} {p['probability']:.3f}" for p in top[:top_k]] or ["-"]
            lines.append(cells)
    k = max((len(c) for c in lines), default=0) - (2 if multi else 1)
    header = ["file"] + (["head"] if multi else []) + [f"top-{i + 1}" for i in range(k)]
    table = [header] + lines
    widths = [max(len(r[i]) for r in table if i < len(r)) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
