"""Writers of the export formats: SavedModel, TFLite (LiteRT), ONNX and ``.keras``.

Each writer takes a `Plan` (the model, its input size and its heads) and a
folder to fill; `kertransfer.serving.export` does the checking, the staging
in a temporary folder, the parity check and the renaming.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import pathlib
import shutil
import warnings

import keras

from kertransfer._choices import EXPORT_FORMATS
from kertransfer.data.images import to_model_image
from kertransfer.errors import ExportError, MissingDependencyError, format_message
from kertransfer.models.decisions import DEFAULT_THRESHOLD, decision_rule
from kertransfer.serving.runtime import (
    BYTES_SIGNATURE,
    IMAGES_SIGNATURE,
    MODEL_FILES,
    as_head_dict,
    output_key,
)

SIGNATURES = (IMAGES_SIGNATURE, BYTES_SIGNATURE)
FORMATS = EXPORT_FORMATS
# Formats and the modules they need: (module, package to install), for the
# converter and for the runtime that checks parity.
REQUIREMENTS = {
    "onnx": (("tf2onnx", "tf2onnx"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime")),
    "tflite": (),
}
# The first bytes of the encodings tf.io.decode_image reads (WebP and JPEG XL
# with recent TensorFlow versions; older ones reject them when decoding).
_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"\xff\x0a",
          b"\x00\x00\x00\x0cJXL ")


@dataclasses.dataclass
class Head:
    """One classification output.

    Attributes:
        name: The head's name (None for a single head).
        classes: Its class names (two for a binary sigmoid head: negative,
            positive).
        activation: ``softmax``, ``sigmoid`` or ``logits``.
        units: Its number of outputs.
        threshold: The probability a sigmoid head's class must exceed.
    """

    name: str | None
    classes: list[str]
    activation: str
    units: int = 0
    threshold: float = DEFAULT_THRESHOLD

    @property
    def decision(self) -> str:
        """``argmax``, ``binary`` or ``multi_label`` (see `decision_rule`)."""
        return decision_rule(self.activation, self.units or len(self.classes))

    @property
    def outputs(self) -> tuple[str, ...]:
        """The SavedModel's outputs for this head (without the head's prefix)."""
        if self.decision == "multi_label":
            return ("probabilities", "class_mask", "class_index", "class_name")
        return ("probabilities", "class_index", "class_name")


@dataclasses.dataclass
class Plan:
    """What an export serves: the model, its input size and its heads."""

    model: keras.Model
    height: int
    width: int
    heads: list[Head]

    @property
    def class_names(self):
        if len(self.heads) == 1 and self.heads[0].name is None:
            return self.heads[0].classes
        return {h.name: h.classes for h in self.heads}


def require(fmt: str) -> None:
    """Raise MissingDependencyError naming the packages ``fmt`` needs and lacks."""
    import importlib

    missing = []
    for module, package in REQUIREMENTS.get(fmt, ()):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise MissingDependencyError(
            format_message(f"format={fmt!r} needs {', '.join(missing)}, which is not installed.",
                           fix=f"Install it: pip install {' '.join(missing)} (or the extra: "
                               f"pip install 'kertransfer[export]').",
                           received={"format": fmt})
        )


def probabilities(plan: Plan, images):
    """``{output name: probabilities}`` of the model on ``images`` (TF graph code)."""
    import tensorflow as tf

    outputs = as_head_dict(plan.model, plan.model(images, training=False))
    result = {}
    for head in plan.heads:
        y = tf.cast(outputs[head.name], tf.float32)
        if head.activation == "logits":
            y = tf.nn.softmax(y)
        result[output_key(head.name)] = y
    return result


def _labelled(plan: Plan, images):
    """The probabilities and the classes they decide, per head (the rule of
    `kertransfer.models.decisions`, in TensorFlow graph operations).

    - ``argmax`` heads: ``class_index`` int32 ``[batch]``, the most probable
      class, and ``class_name`` string ``[batch]``;
    - ``binary`` heads (one sigmoid unit): the same, index 1 when
      ``p > threshold``, else 0;
    - ``multi_label`` heads: ``class_mask`` bool ``[batch, classes]`` (true
      above the threshold), and ``class_index`` int32 / ``class_name``
      string ``[batch, classes]`` listing the classes above the threshold,
      most probable first, padded with -1 and ``""``.
    """
    import tensorflow as tf

    result = probabilities(plan, images)
    for head in plan.heads:
        y = result[output_key(head.name)]
        names = tf.constant(head.classes)
        if head.decision == "binary":
            index = tf.cast(y[:, 0] > head.threshold, tf.int32)
        elif head.decision == "multi_label":
            mask = y > head.threshold
            order = tf.argsort(tf.where(mask, y, -1.0), axis=-1, direction="DESCENDING",
                               stable=True)
            kept = tf.gather(mask, order, batch_dims=1)
            index = tf.where(kept, order, -1)
            result[output_key(head.name, "class_mask")] = mask
            result[output_key(head.name, "class_index")] = index
            result[output_key(head.name, "class_name")] = tf.where(
                kept, tf.gather(names, order), "")
            continue
        else:
            index = tf.argmax(y, axis=-1, output_type=tf.int32)
        result[output_key(head.name, "class_index")] = index
        result[output_key(head.name, "class_name")] = tf.gather(names, index)
    return result


def _decode_batch(plan: Plan, data):
    """Decode and resize encoded images; a clear error names the ones that are not images."""
    import tensorflow as tf


    ok = tf.zeros_like(data, dtype=tf.bool)
    for magic in _MAGIC:
        ok = ok | tf.equal(tf.strings.substr(data, 0, len(magic)), magic)
    bad = tf.reshape(tf.where(tf.logical_not(ok)), [-1])
    check = tf.debugging.Assert(
        tf.reduce_all(ok),
        [f"{BYTES_SIGNATURE}: image_bytes must be encoded images (JPEG, PNG, GIF, "
         "BMP); these positions of the batch are not:", bad], name="check_image_bytes")

    def decode(one):
        image = tf.io.decode_image(one, channels=3, dtype=tf.uint8, expand_animations=False)
        image.set_shape([None, None, 3])
        return to_model_image(image, (plan.height, plan.width))

    with tf.control_dependencies([check]):
        data = tf.identity(data)
    spec = tf.TensorSpec((plan.height, plan.width, 3), tf.float32)
    return tf.map_fn(decode, data, fn_output_signature=spec)


def image_spec(plan: Plan):
    import tensorflow as tf

    return tf.TensorSpec((None, plan.height, plan.width, 3), tf.float32, name="images")


@contextlib.contextmanager
def _quiet():
    """Silence the converters' listings and optimizer tracebacks (kept at ERROR)."""
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "absl", "tensorflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # tf2onnx's use of np.object
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _checked_images(plan: Plan, images):
    """``images``, with an error naming the expected shape when the size is wrong (a
    convolutional model would otherwise answer for any size)."""
    import tensorflow as tf

    check = tf.debugging.assert_equal(
        tf.shape(images)[1:], tf.constant([plan.height, plan.width, 3]),
        message=f"{IMAGES_SIGNATURE}: images must have shape [batch, {plan.height}, "
                f"{plan.width}, 3] (RGB values in 0-255; send other sizes encoded to "
                f"{BYTES_SIGNATURE}); the shape received (without the batch) is")
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _archive(plan: Plan, labelled: bool, with_bytes: bool):
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(plan.model)
    archive.add_endpoint(IMAGES_SIGNATURE,
                         (lambda x: _labelled(plan, _checked_images(plan, x))) if labelled
                         else (lambda x: probabilities(plan, x)),
                         input_signature=[image_spec(plan)])
    if with_bytes:
        archive.add_endpoint(
            BYTES_SIGNATURE, lambda d: _labelled(plan, _decode_batch(plan, d)),
            input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
    return archive


def write_saved_model(plan: Plan, out: pathlib.Path, class_names_file: pathlib.Path) -> None:
    """A SavedModel with both signatures; the class names file becomes an asset."""
    import tensorflow as tf

    archive = _archive(plan, labelled=True, with_bytes=True)
    # Tracked by the archive's trackable, the asset is copied into assets/ and
    # reachable from the loaded object as ``loaded.class_names``.
    holder = getattr(archive, "_tf_trackable", archive)
    holder.class_names = tf.saved_model.Asset(str(class_names_file))
    with _quiet():  # Keras lists every variable
        archive.write_out(str(out), verbose=False)
    assets = out / "assets"
    if not (assets / class_names_file.name).is_file():
        assets.mkdir(exist_ok=True)
        shutil.copy(class_names_file, assets / class_names_file.name)


def write_tflite(plan: Plan, out: pathlib.Path, scratch: pathlib.Path) -> None:
    """``model.tflite`` with a ``serving_default`` signature (float32, built-in ops only)."""
    import tensorflow as tf

    saved = scratch / "for_tflite"
    with _quiet():
        _archive(plan, labelled=False, with_bytes=False).write_out(str(saved), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved),
                                                             signature_keys=[IMAGES_SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flat = converter.convert()
        except Exception as exc:  # the converter raises its own ConverterError
            raise ExportError(
                format_message("The TFLite converter could not convert this model with "
                               "LiteRT's built-in operations.",
                               fix=f"The converter said: {str(exc).strip()[:600]}",
                               received={"format": "tflite"})
            ) from exc
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILES["tflite"]).write_bytes(flat)
    shutil.rmtree(saved, ignore_errors=True)


def write_onnx(plan: Plan, out: pathlib.Path, opset: int | None = None) -> None:
    """``model.onnx`` with an ``images`` input and outputs named like the SavedModel's."""
    import onnx

    inputs = keras.Input((plan.height, plan.width, 3), name="images")
    outputs = as_head_dict(plan.model, plan.model(inputs))
    served = {}
    for head in plan.heads:
        y = outputs[head.name]
        if head.activation == "logits":
            y = keras.layers.Softmax(dtype="float32")(y)
        served[output_key(head.name)] = y
    wrapper = keras.Model(inputs, served, name="serving")
    out.mkdir(parents=True, exist_ok=True)
    path = out / MODEL_FILES["onnx"]
    try:
        with _quiet():
            wrapper.export(str(path), format="onnx", verbose=False,
                           input_signature=[image_spec(plan)], opset_version=opset)
    except Exception as exc:
        raise ExportError(
            format_message("tf2onnx could not convert this model.",
                           fix=f"It said: {str(exc).strip()[:600]}",
                           received={"format": "onnx"})
        ) from exc
    # tf2onnx names the outputs after graph tensors (Identity:0, ...), in the
    # order of the sorted output names; give them the serving names.
    proto = onnx.load(str(path))
    names = sorted(served)
    if len(proto.graph.output) != len(names):
        raise ExportError(f"tf2onnx wrote {len(proto.graph.output)} outputs for {len(names)} "
                          "heads")
    rename = {o.name: new for o, new in zip(proto.graph.output, names)}
    for node in proto.graph.node:
        node.output[:] = [rename.get(n, n) for n in node.output]
        node.input[:] = [rename.get(n, n) for n in node.input]
    for o in proto.graph.output:
        o.name = rename[o.name]
    onnx.save(proto, str(path))


def write_keras(plan: Plan, out: pathlib.Path) -> None:
    """``model.keras``: the model itself, for Keras consumers."""
    out.mkdir(parents=True, exist_ok=True)
    plan.model.save(out / MODEL_FILES["keras"])
