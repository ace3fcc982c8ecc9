"""What defines a search, as recorded in its directory, and the check that a resume is the same.

`kertransfer.tune` writes ``<directory>/kertransfer_search.json`` when a search
starts, and a re-run on the directory resumes only if every setting that
decides which trials run and what they score is the same:

- the hypermodel: its class, backbone(s), heads (``num_classes``,
  ``activation``, ``loss_weights``), input shape, weights (``"imagenet"``,
  None, or a file: its path and a digest of its bytes; a file that moved keeps
  its digest and counts as the same), optimizer (its name, or an instance's
  class and configuration without the learning rate, which the search sets),
  batch size, feature caching, mixed precision, and the whole search space
  (each knob as declared, the defaults included);
- ``tune``'s own: tuner, objective, seed, epochs per trial (Hyperband: the
  most), and the tuner's own settings (Hyperband's ``factor`` and
  ``hyperband_iterations``, Bayesian optimization's ``num_initial_points``);
- the data: the shapes and dtypes of its arrays and a digest of their bytes,
  and for a bundle its source, seed, batch size and augmentation.

``max_trials`` is recorded but may change: a resume with more trials extends
the search, one with fewer ends it sooner.

A record written by an older kertransfer lacks some of these: what it lacks
is unknown, not different, and is named only when something else differs.
A resume that matches rewrites the record with every setting.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

import numpy as np

from kertransfer.data.fingerprint import array_digest, fingerprint
from kertransfer.errors import SearchError, format_message
from kertransfer.training.run_folder import SEARCH_RECORD_FILE

__all__ = ["RECORD_VERSION", "STATE_FILE", "check_resume", "compare", "search_record"]

STATE_FILE = SEARCH_RECORD_FILE
RECORD_VERSION = 2
# Recorded, not compared: the record's version, and the trial budget (more trials extend).
NOT_COMPARED = frozenset({"format", "max_trials"})


# -- describing the settings ---------------------------------------------------------------

def _file_digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _weights(weights: Any) -> Any:
    """``"imagenet"``, None, or ``{"path", "sha256", "bytes"}`` of a weights file."""
    if isinstance(weights, dict):
        return {str(k): _weights(v) for k, v in sorted(weights.items())}
    if weights is None or weights == "imagenet":
        return weights
    if isinstance(weights, (str, os.PathLike)):
        path = pathlib.Path(weights).expanduser().resolve()
        if path.is_file():
            return {"path": str(path), "sha256": _file_digest(path), "bytes": path.stat().st_size}
        if path.is_dir():  # a folder of files: their names and bytes
            files = sorted(p for p in path.rglob("*") if p.is_file())
            h = hashlib.sha256()
            for p in files:
                h.update(str(p.relative_to(path)).encode())
                h.update(_file_digest(p).encode())
            return {"path": str(path), "sha256": h.hexdigest()[:16],
                    "bytes": sum(p.stat().st_size for p in files)}
        return {"path": str(path), "sha256": None, "bytes": None}  # missing: building says so
    return repr(weights)


def _optimizer(optimizer: Any) -> Any:
    """A name as given; an instance as its class and configuration (no learning rate)."""
    if optimizer is None or isinstance(optimizer, str):
        return optimizer
    try:
        config = dict(optimizer.get_config())
    except Exception:  # noqa: BLE001 - not a Keras optimizer: its type is all we know
        return type(optimizer).__name__
    # The search sets it (head_learning_rate, fine_tune_learning_rate).
    config.pop("learning_rate", None)
    config.pop("name", None)
    config = json.loads(json.dumps(config, sort_keys=True, default=str))
    return {"class": type(optimizer).__name__, "config": config}


def _decl(decl) -> str:
    """One knob's declaration as text: ``fixed 0.3``, ``float 0.0001..0.01 log``."""
    if decl.kind == "fixed":
        return f"fixed {decl.value!r}"
    if decl.kind == "choice":
        return f"choice {list(decl.values)!r}"
    high = "all blocks" if decl.high is None else decl.high
    text = f"{decl.kind} {decl.low}..{high}"
    if decl.log:
        text += " log"
    if decl.step is not None:
        text += f" step {decl.step}"
    return text


def _flat(part) -> list:
    """An array, or a label dict's arrays in task order."""
    return [part[k] for k in sorted(part)] if isinstance(part, dict) else [part]


def _splits(data, validation_data) -> tuple[list[tuple[str, Any]], str] | None:
    """The named arrays of array data and a prefix naming the source; None otherwise."""
    if isinstance(data, tuple):
        parts = (*data, *validation_data) if validation_data is not None else data
        names = ("x", "y", "x_val", "y_val")
        return [(names[i] if i < 4 else f"part{i}", p) for i, p in enumerate(parts)], "arrays"
    return None


def _bundle_data(data) -> tuple[str, str]:
    """A bundle as text (source, split sizes, each split's fingerprint) and a digest of
    the fingerprints, read without loading its images."""
    augmentation = getattr(data, "augmentation", None)
    if augmentation is not None:
        inner = getattr(augmentation, "layers", None) or [augmentation]
        augmentation = "+".join(type(layer).__name__ for layer in inner)
    splits = [s for s in ("train", "val") if getattr(data, s, None) is not None]
    prints = [fingerprint(data, "data", s) for s in splits]
    counts = getattr(data, "counts", {})
    shown = ", ".join(f"{s} {counts.get(s, '?')} examples {fp}" for s, fp in zip(splits, prints))
    source = (f"{type(data).__name__} {getattr(data, 'source', '?')!r} (seed "
              f"{getattr(data, 'seed', '?')}, batch {getattr(data, 'batch_size', '?')}, "
              f"augmentation {augmentation or 'none'})")
    digest = array_digest([np.array(prints)])
    return f"{source}: {shown}, digest {digest}", digest


def _data(data, validation_data) -> tuple[str, str]:
    """The data as text (source, each array's shape and dtype, a digest of the bytes) and
    the digest alone (what older records hold)."""
    if hasattr(data, "as_numpy") and hasattr(data, "train"):
        return _bundle_data(data)
    split = _splits(data, validation_data)
    if split is None:
        return f"{type(data).__name__} (not arrays: compared by type only)", type(data).__name__
    named, source = split
    shapes = []
    for name, part in named:
        for key, a in (sorted(part.items()) if isinstance(part, dict) else [(None, part)]):
            a = np.asarray(a)
            shapes.append(f"{name if key is None else f'{name}.{key}'} {a.shape} {a.dtype}")
    digest = array_digest([np.asarray(a) for _, p in named for a in _flat(p)])
    return f"{source}: {', '.join(shapes)}, digest {digest}", digest


def search_record(hypermodel, data, validation_data=None, *, tuner: str, objective: Any,
                  seed: int, max_trials: int, epochs: int, factor: int,
                  hyperband_iterations: int, num_initial_points: int | None) -> dict:
    """Every setting that defines the search (see the module doc), as JSON values.

    ``epochs`` is the epochs per trial (Hyperband: the most per trial).
    """
    hm = hypermodel
    record: dict[str, Any] = {
        "format": RECORD_VERSION,
        "hypermodel": type(hm).__qualname__,
        "backbones": list(hm.backbones),
        "num_classes": hm.num_classes,
        "activation": getattr(hm, "activation", "softmax"),
        "loss_weights": getattr(hm, "loss_weights", None),
        "input_shape": list(hm.input_shape),
        "weights": _weights(hm.weights),
        "optimizer": _optimizer(hm.optimizer),
        "batch_size": hm.batch_size,
        "cache_features": bool(hm.cache_features),
        "mixed_precision": bool(getattr(hm, "mixed_precision", False)),
        "space": {name: _decl(d) for name, d in hm.decls.items()},
        "tuner": tuner,
        "objective": objective if isinstance(objective, str) else repr(objective),
        "seed": seed,
        "max_trials": max_trials,
        "epochs": epochs,
        "data": None,
    }
    record["data"], digest = _data(data, validation_data)
    if tuner == "hyperband":
        record.update(factor=factor, hyperband_iterations=hyperband_iterations)
    if tuner == "bayesian":
        record["num_initial_points"] = num_initial_points
    # What an older record holds under the same names, in its own form.
    record["_legacy"] = {
        "space": {k: repr(v) for k, v in sorted(hm.space_spec.items())},
        "data": digest,
    }
    return json.loads(json.dumps(record, default=str))  # as the saved record reads back


# -- comparing them ------------------------------------------------------------------------

def _is_file(value) -> bool:
    return isinstance(value, dict) and "sha256" in value and "path" in value


def _show(value) -> str:
    if _is_file(value):
        digest = value["sha256"] or "missing"
        return f"{value['path']} (sha256 {digest})"
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 300 else text[:297] + "..."


def _diff(name: str, old, new) -> list[tuple[str, str, str]]:
    """``(setting, old, new)`` for each difference; a mapping shows its changed entries."""
    if _is_file(old) and _is_file(new):
        same = (old["sha256"], old["bytes"]) == (new["sha256"], new["bytes"]) \
            and old["sha256"] is not None
        return [] if same else [(name, _show(old), _show(new))]
    if isinstance(old, dict) and isinstance(new, dict) and not (_is_file(old) or _is_file(new)):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            if key not in old or key not in new:
                out.append((f"{name}[{key!r}]", _show(old.get(key, "(none)")),
                            _show(new.get(key, "(none)"))))
            else:
                out += _diff(f"{name}[{key!r}]", old[key], new[key])
        return out
    return [] if old == new else [(name, _show(old), _show(new))]


def compare(saved: dict, record: dict) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The differences between a saved record and this one, and the settings the saved
    record lacks (unknown: not compared)."""
    current = {k: v for k, v in record.items() if k != "_legacy"}
    if saved.get("format", 1) < RECORD_VERSION:
        current.update(record.get("_legacy", {}))
    diffs: list[tuple[str, str, str]] = []
    unknown = []
    for key, value in current.items():
        if key in NOT_COMPARED:
            continue
        if key not in saved:
            unknown.append(key)
            continue
        diffs += _diff(key, saved[key], value)
    return diffs, unknown


def check_resume(directory: pathlib.Path, record: dict, *, overwrite: bool,
                 is_worker: bool, project_dir: pathlib.Path, write) -> dict | None:
    """Refuse to resume a different search; record this one.

    Args:
        directory: The search directory.
        record: `search_record` of this call.
        overwrite: Start again: delete the KerasTuner project and write the record.
        is_worker: A distributed worker only compares (the chief writes).
        project_dir: The KerasTuner project folder (deleted with ``overwrite``).
        write: ``write(path, text)``, an atomic file writer.

    Returns:
        The record the directory held (None when there was none, or with ``overwrite``).

    Raises:
        SearchError: The directory holds a search with other settings.
    """
    path = directory / STATE_FILE
    to_save = {k: v for k, v in record.items() if k != "_legacy"}
    saved = None
    if path.exists() and not overwrite:
        saved = json.loads(path.read_text())
        diffs, unknown = compare(saved, record)
        if diffs:
            raise SearchError(_message(directory, diffs, unknown))
        if is_worker or saved == to_save:
            return saved
    elif is_worker:
        return None
    elif overwrite and project_dir.exists():
        import shutil

        shutil.rmtree(project_dir)
    write(path, json.dumps(to_save, indent=2))
    return saved


def _message(directory: pathlib.Path, diffs, unknown) -> str:
    changes = "; ".join(f"{name}: {old} → {new}" for name, old, new in diffs)
    problem = (f"{directory} holds a different search: {len(diffs)} setting(s) differ from "
               f"the ones it was started with (old → new): {changes}. Resuming it would mix "
               "the trials of two searches.")
    if unknown:
        problem += (" Its record, written by an older kertransfer, has no value for "
                    f"{', '.join(unknown)} (not compared).")
    return format_message(
        problem,
        fix="To start a new search, use another directory, or pass overwrite=True "
        "(kertransfer tune --overwrite) to delete this directory's trials and start again; "
        "to resume this one, run it with its original settings.",
        received={"directory": str(directory)},
    )
