"""Find the model in a path: a ``.keras`` file, a run folder or a search folder.

The folders' layout (``model.keras`` and ``config.json`` in a run folder,
``best_model.keras`` and ``best_config.json`` in a search folder) belongs to
`kertransfer.training.run_folder`. The config gives the class names and the
training record that an export carries in its metadata.
"""

from __future__ import annotations

import os
import pathlib

from kertransfer.training import run_folder
from kertransfer.training.run_folder import find_model as find_keras_model

__all__ = ["TRAINING_KEYS", "find_keras_model", "load_keras_source", "run_info"]

TRAINING_KEYS = ("data", "backbone", "weights", "freeze", "bn", "unfreeze_top", "freeze_epochs",
                 "learning_rate_multiplier", "learning_rate", "epochs", "metrics", "stages",
                 "objective", "score", "values", "counts")


def run_info(config_file: pathlib.Path | None) -> dict:
    """``{"class_names": ..., "training": {...}}`` from a run's or a search's config."""
    if config_file is None:
        return {}
    config = run_folder.read_json(config_file)
    if not isinstance(config, dict):
        return {}
    training = {k: config[k] for k in TRAINING_KEYS if k in config}
    info = {"training": training, "run": str(config_file.parent)}
    if config.get("class_names") is not None:
        info["class_names"] = config["class_names"]
    return info


def load_keras_source(path: str | os.PathLike):
    """Load the model at ``path``; return ``(model, info)`` (see `run_info`)."""
    _, config_file = find_keras_model(path)
    return run_folder.load_model(path), run_info(config_file)
