"""A search in child processes, and the environment of a distributed one.

``trials_per_process`` runs the search in fresh processes of a few trials each
(memory that TensorFlow never returns goes with the process); the settings
travel through the search folder, with the data: a bundle that can be loaded
again as `load` arguments (each child reloads it, streaming, and checks its
fingerprints), anything else as arrays. ``distributed`` sets KerasTuner's
chief/worker environment for the call.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib

import numpy as np

from kertransfer._fs import atomic_file
from kertransfer._log import print_msg
from kertransfer.errors import (
    InvalidArgumentError,
    SearchError,
    format_message,
)
from kertransfer.training import run_folder
from kertransfer.tuning.hypermodel import TransferHyperModel
from kertransfer.tuning.tuners import _atomic_write
from kertransfer.validation import check_int


def _env_for(distributed: str | None, oracle_address: str | None, tuner_id: str | None) -> dict:
    if distributed is None:
        return {}
    if distributed not in ("chief", "worker"):
        raise InvalidArgumentError(
            format_message("distributed must be None, 'chief' or 'worker'.",
                           received={"distributed": distributed})
        )
    host, sep, port = (oracle_address or "").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgumentError(
            format_message("A distributed search needs the chief's address.",
                           expected="oracle_address='host:port', e.g. '127.0.0.1:8000'",
                           received={"oracle_address": oracle_address})
        )
    if tuner_id is None:
        tuner_id = "chief" if distributed == "chief" else f"worker{os.getpid()}"
    if (distributed == "chief") != ("chief" in tuner_id):
        raise InvalidArgumentError(
            format_message("KerasTuner recognises the chief by 'chief' in its tuner id.",
                           expected="'chief' in tuner_id exactly when distributed='chief'",
                           received={"tuner_id": tuner_id, "distributed": distributed})
        )
    return {"KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": port,
            "KERASTUNER_TUNER_ID": tuner_id}


@contextlib.contextmanager
def _environ(values: dict):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _arrays_of(data, validation_data) -> dict[str, np.ndarray]:
    """The arrays a search process loads (`kertransfer.tuning.child`): ``x``, ``y``,
    ``x_val``, ``y_val``; per-task labels as ``y.<task>`` and ``y_val.<task>``."""
    if hasattr(data, "as_numpy"):
        relabel = getattr(data, "task_labels", lambda y: y)
        (x, y), (xv, yv) = data.as_numpy("train"), data.as_numpy("val")
        y, yv = relabel(y), relabel(yv)
    else:
        (x, y), (xv, yv) = data, validation_data
    out = {"x": np.asarray(x), "x_val": np.asarray(xv)}
    for name, labels in (("y", y), ("y_val", yv)):
        if isinstance(labels, dict):
            out.update({f"{name}.{k}": np.asarray(v) for k, v in labels.items()})
        else:
            out[name] = np.asarray(labels)
    return out


def labels_from(arrays, name: str):
    """Labels ``name`` as `_arrays_of` saved them: one array, or ``{task: labels}``."""
    if name in arrays:
        return arrays[name]
    prefix = f"{name}."
    return {k[len(prefix):]: arrays[k] for k in arrays if k.startswith(prefix)}


def _check_children(hypermodel, data, distributed, trials_per_process) -> None:
    check_int(trials_per_process, "trials_per_process", minimum=1)
    problem = None
    if distributed is not None:
        problem = ("trials_per_process runs the search in child processes; it cannot be "
                   "combined with a distributed search.")
    elif type(hypermodel) is not TransferHyperModel:
        problem = ("Child processes rebuild the hypermodel from its configuration, so it must "
                   "be a TransferHyperModel, not a subclass.")
    elif getattr(data, "augmentation", None) is not None and \
            getattr(data, "load_args", None) is None:
        problem = ("Child processes receive this bundle as arrays, without its augmentation "
                   "(a bundle loaded from a name, a folder or TFDS with a plain augment= "
                   "spec is reloaded in each child instead).")
    if problem:
        raise InvalidArgumentError(
            format_message(problem, received={"trials_per_process": trials_per_process,
                                              "distributed": distributed,
                                              "hypermodel": type(hypermodel).__name__})
        )


def _run_children(hypermodel, data, validation_data, directory: pathlib.Path, settings: dict,
                  epochs: int, trials_per_process: int, child_setup: str | None,
                  verbose: int) -> None:
    """Run the search in child processes of at most ``trials_per_process`` trials each."""
    import subprocess
    import sys

    child_dir = directory / run_folder.CHILD_FOLDER
    child_dir.mkdir(parents=True, exist_ok=True)
    reload = getattr(data, "load_args", None)
    if reload is None:  # arrays (or a bundle that cannot be read again): sent as arrays
        arrays = _arrays_of(data, validation_data)
        with atomic_file(child_dir / run_folder.CHILD_DATA_FILE, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
    else:  # each child loads the bundle again, streaming, and checks it is the same data
        reload = {"args": reload, "fingerprints": data.fingerprints}
    config = {"hypermodel": hypermodel.get_config(), "settings": settings, "epochs": epochs,
              "trials_per_process": trials_per_process, "child_setup": child_setup,
              "verbose": verbose, "directory": str(directory), "load": reload}
    config_file = child_dir / run_folder.CHILD_CONFIG_FILE
    _atomic_write(config_file, json.dumps(config, indent=2))
    command = [sys.executable, "-m", "kertransfer.tuning.child", str(config_file)]
    deaths = 0
    process = 0
    while True:
        process += 1
        if verbose:
            print_msg(f"Search process {process} (at most {trials_per_process} trials)")
        code = subprocess.run(command).returncode
        if code == 0:
            return
        if code == CHILD_MORE:
            deaths = 0
            continue
        if code == CHILD_ERROR:
            raise SearchError(
                format_message("A search process stopped on an error (printed above).",
                               received={"returncode": code})
            )
        deaths += 1  # killed (out of memory?) or crashed: resume counts its trial
        if deaths > settings["max_crashes"] + 1:
            raise SearchError(
                format_message(f"The search processes died {deaths} times in a row.",
                               fix="Look at the output above; reduce the batch size or the "
                               "input size if they ran out of memory.",
                               received={"returncode": code})
            )


CHILD_MORE = 3  # a child ran its trials and more remain
CHILD_ERROR = 2  # a child stopped on a kertransfer error
