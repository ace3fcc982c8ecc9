"""Write a model for serving (`kt.export`), check it, and only then publish it.

``export(model, "serving/flowers", class_names=[...])`` writes
``serving/flowers/<n>/`` (the next free version number unless one is given),
the layout TF Serving watches (and Triton's model repository uses):

- ``format="saved_model"``: a SavedModel with two signatures,

  - ``serving_default``: float images ``[batch, H, W, 3]`` in 0-255 (the
    model's own preprocessing runs inside) to ``probabilities``,
    ``class_index`` and ``class_name`` (see "Classes" below);
  - ``serve_image_bytes``: encoded JPEG/PNG/GIF/BMP strings ``[batch]`` of
    any size, decoded and resized inside the graph (what REST and gRPC
    clients send), to the same outputs; bytes that are not an image give an
    error that names their positions in the batch;

  and the class names as an asset (``assets/class_names.txt``);
- ``format="tflite"``: ``model.tflite`` (LiteRT, float32, built-in ops) with
  a ``serving_default`` signature giving ``probabilities``;
- ``format="onnx"``: ``model.onnx``, input ``images``, output
  ``probabilities``;
- ``format="keras"``: ``model.keras``.

Models with several heads export every head: the outputs are named
``<head>_probabilities`` (and ``<head>_class_index``, ``<head>_class_name``).

Classes: a softmax or logits head gives its most probable class. A head of
one sigmoid unit is binary: it takes two class names (negative, then
positive) and gives index 1 when ``p > threshold`` (0.5 unless ``threshold=``
says otherwise). A head of several sigmoid units is multi-label: its
``class_mask`` (bool ``[batch, classes]``) is true for every class above the
threshold, and ``class_index``/``class_name`` (``[batch, classes]``) list
those classes, most probable first, padded with -1 and ``""``. TFLite, ONNX
and ``.keras`` exports serve the probabilities; the metadata's ``decision``
and ``threshold`` say how `kertransfer.serving.predict` (or any consumer)
turns them into classes.

Beside the model, ``kertransfer_export.json`` records the backbone, input
size, classes, training record, freeze configuration, the parity check and
the kertransfer, Keras and TensorFlow versions; ``class_names.txt`` lists the
classes (for a SavedModel, in ``assets/``).

Before the version folder appears, the export is loaded in a fresh process
with its own runtime (plain TensorFlow without kertransfer, the LiteRT
interpreter, onnxruntime, or Keras) and its outputs compared with the Keras
model's on sample images; the export fails with `ParityError` when the
largest absolute difference exceeds the tolerance (1e-5 for SavedModel and
``.keras``, 1e-4 for TFLite and ONNX).

Everything is written under a temporary name beside the version folder and
renamed when complete and checked, so a crash, a kill or a failed check never
leaves a partial version that a server would load; the next export removes
the temporary folder a killed export left. An existing version is replaced
only with ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kertransfer.errors import ExportError, InvalidArgumentError, ParityError, format_message
from kertransfer.serving import formats
from kertransfer.serving.formats import Plan
from kertransfer.serving.metadata import export_metadata
from kertransfer.serving.plan import (
    check_format,
    check_samples,
    check_tolerance,
    check_version,
    make_plan,
)
from kertransfer.serving.runtime import METADATA_FILE, keras_probabilities
from kertransfer.serving.sources import load_keras_source

CLASS_NAMES_FILE = "class_names.txt"
CHECK_TIMEOUT_S = 600
_RUNTIMES = {"saved_model": "TensorFlow, without kertransfer", "tflite": "the LiteRT interpreter",
             "onnx": "onnxruntime", "keras": "Keras"}


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


def _write(plan: Plan, fmt: str, out: pathlib.Path, scratch: pathlib.Path, opset) -> None:
    names_file = scratch / CLASS_NAMES_FILE
    if len(plan.heads) == 1:
        names_file.write_text("\n".join(plan.heads[0].classes) + "\n")
    else:
        names_file.write_text("".join(f"{h.name}\t{c}\n" for h in plan.heads for c in h.classes))
    if fmt == "saved_model":
        formats.write_saved_model(plan, out, names_file)
        return
    if fmt == "tflite":
        formats.write_tflite(plan, out, scratch)
    elif fmt == "onnx":
        formats.write_onnx(plan, out, opset)
    else:
        formats.write_keras(plan, out)
    shutil.copy(names_file, out / CLASS_NAMES_FILE)


def _differences(expected: dict, got, fmt: str) -> dict[str, float]:
    """The largest absolute difference per signature between the model's outputs
    (``expected``) and the fresh process's (``got``, its ``outputs.npz``)."""
    diffs: dict[str, float] = {}
    prefix = {formats.IMAGES_SIGNATURE: "images/", formats.BYTES_SIGNATURE: "bytes/"}
    for signature, outputs in expected.items():
        worst = 0.0
        for key, want in outputs.items():
            name = prefix[signature] + key
            if name not in got or got[name].shape != want.shape:
                raise ParityError(
                    format_message(f"The {fmt} export's {signature} has no output {key!r} of "
                                   f"shape {want.shape}.",
                                   received={"outputs": {k: got[k].shape for k in got.files}})
                )
            worst = max(worst, float(np.max(np.abs(got[name].astype("float64") - want))))
        diffs[signature if fmt == "saved_model" else fmt] = worst
    return diffs


def check_parity(plan: Plan, fmt: str, folder: pathlib.Path, samples: np.ndarray,
                 tolerance: float, scratch: pathlib.Path) -> dict[str, Any]:
    """Load the export in a fresh process with its runtime; compare with the model.

    Returns:
        ``{"max_abs_diff": {signature: float}, "tolerance": ..., "images": n,
        "runtime": ..., "kertransfer_imported": bool}``.

    Raises:
        ParityError: A difference exceeds ``tolerance``.
        ExportError: The fresh process could not load or run the export.
    """
    check_dir = scratch / "check"
    check_dir.mkdir()
    np.save(check_dir / "images.npy", samples)
    expected = {formats.IMAGES_SIGNATURE: keras_probabilities(plan.model, samples)}
    if fmt == "saved_model":
        import tensorflow as tf

        pixels = np.clip(np.round(samples), 0, 255).astype("uint8")
        for i, image in enumerate(pixels):
            (check_dir / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
        expected[formats.BYTES_SIGNATURE] = keras_probabilities(plan.model,
                                                                pixels.astype("float32"))
    runtime = pathlib.Path(__file__).with_name("runtime.py")
    # runpy: the script's folder is not put on sys.path, and cwd holds only the inputs.
    launcher = ("import runpy, sys; sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        proc = subprocess.run([sys.executable, "-c", launcher, str(runtime.resolve()), fmt,
                               str(folder.resolve()), str(check_dir.resolve())],
                              capture_output=True, text=True, env=env, cwd=check_dir,
                              timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"The parity check did not finish in {CHECK_TIMEOUT_S} s.") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ExportError(
            format_message(f"The {fmt} export could not be loaded or run by "
                           f"{_RUNTIMES[fmt]} in a fresh process (exit status "
                           f"{proc.returncode}). Its last lines:\n{tail}",
                           received={"format": fmt})
        )
    got = np.load(check_dir / "outputs.npz")
    diffs = _differences(expected, got, fmt)
    imported = json.loads((check_dir / "imported.json").read_text())["kertransfer"]
    report = {"max_abs_diff": diffs, "tolerance": tolerance, "images": int(len(samples)),
              "runtime": _RUNTIMES[fmt], "kertransfer_imported": imported}
    over = {k: v for k, v in diffs.items() if not v <= tolerance}
    if over:
        shown = ", ".join(f"{k} {v:.3g}" for k, v in over.items())
        raise ParityError(
            format_message(f"The {fmt} export's outputs differ from the Keras model's by more "
                           f"than the tolerance: largest absolute difference {shown}, on "
                           f"{len(samples)} images, loaded by {_RUNTIMES[fmt]}. Nothing was "
                           "written.",
                           fix="Check the model for layers that behave differently outside "
                               "Keras, or pass a larger tolerance if the difference is "
                               "expected (reduced precision).",
                           received={"tolerance": tolerance})
        )
    return report


def _from_source(source, class_names, threshold):
    """The model of a ``.keras`` file, run or search folder, what its folder records,
    and the class names to export with (the folder's unless given)."""
    model, info = load_keras_source(source)
    info["source"] = str(source)
    if class_names is None and info.get("class_names") is not None:
        try:  # the recorded names must fit the model
            make_plan(model, info["class_names"], threshold)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(
                f"The class names recorded in {info.get('run')} do not fit the model "
                f"(pass class_names= to export with others): {exc}") from exc
        class_names = info["class_names"]
    return model, info, class_names


def export(model, path: str | os.PathLike, *, format: str = "saved_model",  # noqa: A002
           class_names: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
           threshold: float | Mapping[str, float] | None = None,
           version: int | None = None, overwrite: bool = False, check: bool = True,
           tolerance: float | None = None, samples=None, metadata: dict | None = None,
           opset: int | None = None, verbose: int = 1) -> pathlib.Path:
    """Export ``model`` for serving as version ``<path>/<n>/``; return that folder.

    Args:
        model: A Keras image classifier (``[batch, H, W, 3]`` in 0-255), or the
            path of one: a ``.keras`` file, a run folder (``kertransfer
            train``) or a search folder (``kertransfer tune``), whose config
            supplies the class names and the training record.
        path: The model's serving folder; versions go in numbered sub-folders.
        format: ``"saved_model"`` (TF Serving), ``"tflite"`` (LiteRT),
            ``"onnx"`` or ``"keras"``.
        class_names: One name per output (default ``"0"``, ``"1"``, ... or the
            run's); for several heads, a dict ``{head: names}``. A head of
            one sigmoid unit takes two names: negative, then positive.
        threshold: The probability above which a sigmoid head gives a class
            (the positive one of a binary head; every such class of a
            multi-label head); default 0.5. One number, or ``{head: number}``.
            Softmax and logits heads give their most probable class.
        version: Version number (default: one above the highest present).
        overwrite: Replace an existing version of that number.
        check: Load the export in a fresh process with its own runtime and
            compare its outputs with the model's before publishing it.
        tolerance: Largest absolute difference the check allows (default
            1e-5 for SavedModel and ``.keras``, 1e-4 for TFLite and ONNX).
        samples: Images ``[n, H, W, 3]`` for the check (default: black,
            white and two noise images).
        metadata: Extra entries for ``kertransfer_export.json``.
        opset: ONNX opset (default: tf2onnx's).
        verbose: 0 silent, 1 a line per step.

    Returns:
        The version folder.

    Raises:
        InvalidArgumentError: The class names do not fit a head (their
            number), or the threshold is not a probability.
        ParityError: The export's outputs differ from the model's beyond the
            tolerance; nothing is written.
        MissingDependencyError: The format's converter or runtime is not
            installed (the message names the package).
    """
    fmt = check_format(format)
    info: dict = {}
    if isinstance(model, (str, os.PathLike)):
        model, info, class_names = _from_source(model, class_names, threshold)
    plan = make_plan(model, class_names, threshold)
    version = check_version(version)
    tol = check_tolerance(tolerance, fmt)
    x = check_samples(plan, samples)
    root = pathlib.Path(path)
    if root.exists() and not root.is_dir():
        raise InvalidArgumentError(
            format_message("path must be a folder (the versions go inside it).",
                           received={"path": str(path)})
        )
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
    log = print if verbose else (lambda *a, **k: None)
    steps = 3 if check else 2
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".partial-{os.getpid()}-{number}-", dir=root))
    try:
        out = tmp / "export"
        start = time.perf_counter()
        log(f"[1/{steps}] Writing {fmt} for {plan.model.name} ({len(plan.heads)} head(s), "
            f"input {plan.height}x{plan.width})", flush=True)
        _write(plan, fmt, out, tmp, opset)
        parity = None
        if check:
            log(f"[2/{steps}] Checking parity in a fresh process ({_RUNTIMES[fmt]}, "
                f"{len(x)} images)", flush=True)
            parity = check_parity(plan, fmt, out, x, tol, tmp)
            shown = ", ".join(f"{k} {v:.2g}" for k, v in parity["max_abs_diff"].items())
            log(f"      largest absolute difference: {shown} (tolerance {tol:g})", flush=True)
        (out / METADATA_FILE).write_text(json.dumps(
            export_metadata(plan, fmt, info, metadata, parity), indent=2, default=str))
        if target.exists():  # overwrite: move the old version aside, then swap
            old = tmp / "replaced"
            os.replace(target, old)
        os.replace(out, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"[{steps}/{steps}] Exported {fmt} version {number} to {target} "
        f"({time.perf_counter() - start:.0f}s)", flush=True)
    return target
