"""Run an export with its own runtime: TensorFlow, LiteRT, onnxruntime or Keras.

This module imports nothing from kertransfer, so that it can check an export
the way a consumer sees it: ``python runtime.py FORMAT FOLDER CHECK_DIR`` runs
in a fresh process, loads the export with the format's runtime alone (plain
TensorFlow for a SavedModel: kertransfer is never imported), runs it on
``CHECK_DIR/images.npy`` (and, for a SavedModel, on the PNG files
``CHECK_DIR/<i>.png`` through ``serve_image_bytes``) and writes the outputs to
``CHECK_DIR/outputs.npz``. `kertransfer.serving.predict` uses the same
runners in process.

Every runner returns a dict of float32 arrays named ``probabilities`` (one
head) or ``<head>_probabilities`` (several heads), the SavedModel's
signatures also ``class_index`` and ``class_name`` (and ``class_mask`` for a
multi-label head). How probabilities become classes, for the formats that
serve probabilities only, is `kertransfer.models.decisions`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys

import numpy as np

METADATA_FILE = "kertransfer_export.json"
MODEL_FILES = {"tflite": "model.tflite", "onnx": "model.onnx", "keras": "model.keras"}
BYTES_SIGNATURE = "serve_image_bytes"
IMAGES_SIGNATURE = "serving_default"


def head_setting(value, head: str | None, default=None):
    """One head's entry of a metadata value that is either one value or ``{head: value}``."""
    if isinstance(value, dict):
        return value.get(head, default)
    return default if value is None else value


def output_key(head: str | None, name: str = "probabilities") -> str:
    """The name of one output: ``probabilities`` or ``<head>_probabilities``."""
    return name if head is None else f"{head}_{name}"


def head_names(model) -> list[str | None]:
    """``[None]`` for a model with one output, else its output names in order.

    A model built with a dict of outputs is named by the dict's keys (Keras'
    ``output_names`` are the layers' names, which may differ).
    """
    try:
        structure = model.output
    except (AttributeError, ValueError):
        structure = None
    if isinstance(structure, dict) and len(structure) > 1:
        return [str(k) for k in structure]
    names = list(getattr(model, "output_names", None) or [])
    return [None] if len(names) <= 1 else [str(n) for n in names]


def _activation(model, head: str | None) -> str:
    """The activation a head ends with (``softmax``, ``sigmoid`` or ``logits``): the
    reading of `kertransfer.models.decisions.head_activation`, which this module
    cannot import."""
    activation = getattr(model, "activation", "softmax")
    if isinstance(activation, dict):
        activation = activation.get(head, "softmax")
    return activation if isinstance(activation, str) else "softmax"


def as_head_dict(model, outputs) -> dict:
    """Map a model's outputs (a tensor, a list or a dict) to ``{head: tensor}``."""
    heads = head_names(model)
    if isinstance(outputs, dict):
        if heads == [None] and len(outputs) == 1:
            return {None: next(iter(outputs.values()))}
        return {h: outputs[h] for h in heads}
    if isinstance(outputs, (list, tuple)):
        if heads == [None]:
            return {None: outputs[0]}
        return dict(zip(heads, outputs))
    return {None: outputs}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def keras_probabilities(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """What the exports serve, computed by the Keras model: ``{output name: probabilities}``."""
    import keras

    # Direct calls in batches: predict() would retrace its step for each new batch size.
    chunks = [as_head_dict(model, model(images[i:i + 64], training=False))
              for i in range(0, len(images), 64)]
    out = {h: np.concatenate([keras.ops.convert_to_numpy(c[h]) for c in chunks])
           for h in chunks[0]}
    result = {}
    for head, y in out.items():
        y = np.asarray(y, dtype=np.float32)
        if _activation(model, head) == "logits":
            y = _softmax(y)
        result[output_key(head)] = y
    return result


class Runner:
    """An export loaded with its runtime: ``runner(images)`` gives the outputs.

    Attributes:
        format: ``saved_model``, ``tflite``, ``onnx`` or ``keras``.
        path: The file or folder loaded.
        metadata: ``kertransfer_export.json`` beside it (``{}`` when absent).
        input_size: ``(height, width)`` the export takes.
    """

    def __init__(self, fmt: str, path: pathlib.Path, metadata: dict):
        self.format = fmt
        self.path = path
        self.metadata = metadata
        self.input_size: tuple[int, int] | None = None
        self._run = None
        self._run_bytes = None

    @property
    def takes_bytes(self) -> bool:
        """Whether the export decodes encoded images itself (a SavedModel)."""
        return self._run_bytes is not None

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return self._run(np.asarray(images, dtype=np.float32))

    def from_bytes(self, data: list[bytes]) -> dict[str, np.ndarray]:
        """Run ``serve_image_bytes`` on encoded images (SavedModel only)."""
        if self._run_bytes is None:
            raise TypeError(f"a {self.format} export takes decoded images, not bytes")
        return self._run_bytes(list(data))


def _saved_model(runner: Runner) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(runner.path))
    sigs = loaded.signatures
    images_fn = sigs[IMAGES_SIGNATURE]
    (spec,) = images_fn.structured_input_signature[1].values()
    runner.input_size = (int(spec.shape[1]), int(spec.shape[2]))
    arg = next(iter(images_fn.structured_input_signature[1]))

    def numpy(out):
        return {k: v.numpy() for k, v in out.items()}

    runner._run = lambda x: numpy(images_fn(**{arg: tf.constant(x)}))
    if BYTES_SIGNATURE in sigs:
        bytes_fn = sigs[BYTES_SIGNATURE]
        runner._run_bytes = lambda d: numpy(bytes_fn(image_bytes=tf.constant(d, tf.string)))


def _tflite(runner: Runner) -> None:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # older stacks: the interpreter inside TensorFlow
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    interpreter = Interpreter(model_path=str(runner.path))
    signatures = interpreter.get_signature_list()
    if IMAGES_SIGNATURE in signatures:
        fn = interpreter.get_signature_runner(IMAGES_SIGNATURE)
        (arg,) = signatures[IMAGES_SIGNATURE]["inputs"]
        shape = fn.get_input_details()[arg]["shape_signature"]
        runner.input_size = (int(shape[1]), int(shape[2]))
        runner._run = lambda x: {k: np.asarray(v) for k, v in fn(**{arg: x}).items()}
        return
    detail = interpreter.get_input_details()[0]  # a plain .tflite without signatures
    runner.input_size = (int(detail["shape"][1]), int(detail["shape"][2]))

    def run(x):
        interpreter.resize_tensor_input(detail["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        return {o["name"]: interpreter.get_tensor(o["index"])
                for o in interpreter.get_output_details()}

    runner._run = run


def _onnx(runner: Runner) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(runner.path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    runner.input_size = (int(inp.shape[1]), int(inp.shape[2]))
    names = [o.name for o in session.get_outputs()]
    runner._run = lambda x: dict(zip(names, session.run(names, {inp.name: x})))


def _keras(runner: Runner) -> None:
    import keras

    with contextlib.suppress(ImportError):  # the classes kertransfer models are made of
        import kertransfer  # noqa: F401
    model = keras.saving.load_model(runner.path, compile=False)
    runner.input_size = (int(model.input_shape[1]), int(model.input_shape[2]))
    runner.model = model
    runner._run = lambda x: keras_probabilities(model, x)


_LOADERS = {"saved_model": _saved_model, "tflite": _tflite, "onnx": _onnx, "keras": _keras}


def detect_format(path: pathlib.Path) -> str | None:
    """The format of an export folder or model file, or None."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        for fmt, name in MODEL_FILES.items():
            if (path / name).is_file():
                return fmt
        return None
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in MODEL_FILES else None


def open_export(path: str | os.PathLike, fmt: str | None = None) -> Runner:
    """Load an export folder (or a ``.tflite``/``.onnx``/``.keras`` file) with its runtime."""
    path = pathlib.Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in _LOADERS:
        raise ValueError(f"not an export: {path}")
    folder = path if path.is_dir() else path.parent
    meta_file = folder / METADATA_FILE
    metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    model_path = path / MODEL_FILES[fmt] if fmt in MODEL_FILES and path.is_dir() else path
    runner = Runner(fmt, model_path, metadata)
    _LOADERS[fmt](runner)
    return runner


def check(fmt: str, folder: str, check_dir: str) -> None:
    """Run the export on the check inputs and save the outputs (the child process)."""
    check_dir = pathlib.Path(check_dir)
    runner = open_export(folder, fmt)
    images = np.load(check_dir / "images.npy")
    arrays = {f"images/{k}": v for k, v in runner(images).items()}
    pngs = sorted(check_dir.glob("*.png"), key=lambda p: int(p.stem))
    if runner.takes_bytes and pngs:
        out = runner.from_bytes([p.read_bytes() for p in pngs])
        arrays.update({f"bytes/{k}": v for k, v in out.items()})
    arrays = {k: v for k, v in arrays.items() if v.dtype.kind in "fiu"}  # names are strings
    np.savez(check_dir / "outputs.npz", **arrays)
    (check_dir / "imported.json").write_text(
        json.dumps({"kertransfer": "kertransfer" in sys.modules}))


if __name__ == "__main__":
    check(*sys.argv[1:4])
