"""SavedModel export in TF Serving's layout: version folders, two signatures, metadata.

``export_saved_model(model, "serving/flowers", class_names=[...])`` writes
``serving/flowers/<n>/`` (the next free version number unless one is given),
the layout TF Serving watches:

- ``serving_default``: float images ``[batch, H, W, 3]`` in 0-255 (the model's
  own preprocessing runs inside) to ``probabilities``, ``class_index`` and
  ``class_name``;
- ``serve_image_bytes``: encoded JPEG/PNG/GIF/BMP strings ``[batch]`` of any
  size, decoded and resized inside the graph (what REST and gRPC clients
  send), to the same outputs;
- ``assets/class_names.txt``: the class names, one per line;
- ``kertransfer_export.json``: backbone, input size, classes, training
  metrics, freeze configuration, and the kertransfer, Keras and TensorFlow
  versions.

The version folder is written under a temporary name beside it and renamed
when complete, so a crash or a kill never leaves a partial version that TF
Serving would try to load (TF Serving reads numbered folders only); the
next export removes the temporary folder a killed export left. An existing
version is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import keras

from kertransfer.errors import InvalidArgumentError, InvalidTypeError, format_message

SIGNATURES = ("serving_default", "serve_image_bytes")
METADATA_FILE = "kertransfer_export.json"


def _versions(root: pathlib.Path) -> list[int]:
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(root: pathlib.Path) -> None:
    """Remove the temporary folders of exports whose process died (killed mid-write)."""
    for p in root.glob(".partial-*"):
        parts = p.name.split("-")
        if len(parts) > 1 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            shutil.rmtree(p, ignore_errors=True)


def _check(model, class_names, version) -> tuple[int, int, list[str]]:
    if not isinstance(model, keras.Model):
        raise InvalidTypeError(
            format_message("export needs a Keras model.",
                           expected="a model from build_transfer_model or keras.Model",
                           received={"model": type(model).__name__})
        )
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None:
        raise InvalidArgumentError(
            format_message("export needs a model of fixed-size RGB images.",
                           expected="input shape (None, H, W, 3) with H and W set",
                           received={"model.input_shape": shape})
        )
    outputs = int(model.output_shape[-1])
    if class_names is None:
        class_names = [str(i) for i in range(outputs)]
    if isinstance(class_names, str) or not isinstance(class_names, Sequence) or \
            len(class_names) != outputs:
        raise InvalidArgumentError(
            format_message("class_names must list one name per model output.",
                           expected=f"{outputs} names",
                           received={"class_names": class_names})
        )
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise InvalidArgumentError(
            format_message("version must be a positive integer (or None for the next free one).",
                           received={"version": version})
        )
    return int(shape[1]), int(shape[2]), [str(c) for c in class_names]


def _metadata(model, height, width, class_names, extra) -> dict[str, Any]:
    import tensorflow as tf

    from kertransfer.version import __version__

    meta = {
        "backbone": getattr(model, "backbone_name", "custom"),
        "input_size": [height, width],
        "classes": class_names,
        "activation": getattr(model, "activation", "softmax"),
        "preprocessing": getattr(model, "preprocessing", None),
        "freeze": getattr(model, "freeze_config", None),
        "bn": getattr(model, "bn_mode", None),
        "signatures": list(SIGNATURES),
        "versions": {"kertransfer": __version__, "keras": keras.__version__,
                     "tensorflow": tf.__version__},
    }
    meta.update(extra or {})
    return meta


def export_saved_model(model, path: str | os.PathLike, *, class_names: Sequence[str] | None = None,
                       version: int | None = None, overwrite: bool = False,
                       metadata: dict | None = None, verbose: int = 1) -> pathlib.Path:
    """Write ``model`` as a TF Serving SavedModel version; return the version folder.

    Args:
        model: A classifier of images (``[batch, H, W, 3]`` in 0-255).
        path: The model's serving folder; versions go in numbered sub-folders.
        class_names: One name per output (default ``"0"``, ``"1"``, ...).
        version: Version number (default: one above the highest present).
        overwrite: Replace an existing version of that number.
        metadata: Extra entries for the metadata file (training metrics, say).
        verbose: Print a one-line summary.
    """
    import tensorflow as tf

    height, width, names = _check(model, class_names, version)
    root = pathlib.Path(path)
    existing = _versions(root)
    number = version if version is not None else (existing[-1] + 1 if existing else 1)
    target = root / str(number)
    if target.exists() and not overwrite:
        raise InvalidArgumentError(
            format_message(f"Version {number} exists already in {root}.",
                           fix="Pass overwrite=True to replace it, or another version.",
                           received={"path": str(path), "version": number})
        )
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root)
    activation = getattr(model, "activation", "softmax")
    table = tf.constant(names)

    def outputs(images):
        y = model(images, training=False)
        y = tf.cast(y, tf.float32)
        if activation == "logits":
            y = tf.nn.softmax(y)
        index = tf.argmax(y, axis=-1, output_type=tf.int32)
        return {"probabilities": y, "class_index": index, "class_name": tf.gather(table, index)}

    def decode(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width))
        return tf.reshape(image, (height, width, 3))

    def from_bytes(data):
        images = tf.map_fn(decode, data, fn_output_signature=tf.TensorSpec((height, width, 3),
                                                                          tf.float32))
        return outputs(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", outputs,
                         input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32,
                                                        name="images")])
    archive.add_endpoint("serve_image_bytes", from_bytes,
                         input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])

    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".partial-{os.getpid()}-{number}-", dir=root))
    try:
        names_file = tmp / "class_names.txt"
        names_file.write_text("\n".join(names) + "\n")
        # Tracked by the archive's trackable, the asset is copied into assets/ and
        # reachable from the loaded object as ``loaded.class_names``.
        holder = getattr(archive, "_tf_trackable", archive)
        holder.class_names = tf.saved_model.Asset(str(names_file))
        out = tmp / "saved_model"
        with contextlib.redirect_stdout(io.StringIO()):  # Keras lists every variable
            archive.write_out(str(out), verbose=False)
        if not (out / "assets" / "class_names.txt").is_file():
            (out / "assets").mkdir(exist_ok=True)
            shutil.copy(names_file, out / "assets" / "class_names.txt")
        (out / METADATA_FILE).write_text(
            json.dumps(_metadata(model, height, width, names, metadata), indent=2, default=str))
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"Exported SavedModel version {number} to {target} (signatures "
              f"{', '.join(SIGNATURES)}; {len(names)} classes, input {height}x{width})")
    return target
