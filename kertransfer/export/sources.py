"""Find the model in a path: a ``.keras`` file, a run folder or a search folder.

A run folder (``kertransfer train``, ``kertransfer demo``) holds
``model.keras`` and ``config.json``; a search folder (``kertransfer tune``)
holds ``best_model.keras`` and ``best_config.json``. The config gives the
class names and the training record that an export carries in its metadata.
"""

from __future__ import annotations

import json
import os
import pathlib

from kertransfer.errors import InvalidArgumentError, format_message

MODEL_CANDIDATES = (("model.keras", "config.json"), ("best_model.keras", "best_config.json"))
TRAINING_KEYS = ("data", "backbone", "weights", "freeze", "bn", "unfreeze", "freeze_epochs",
                 "lr_mult", "learning_rate", "epochs", "metrics", "stages", "objective",
                 "score", "values", "counts")


def find_keras_model(path: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path | None]:
    """``(model file, config file or None)`` for a ``.keras`` file or a run/search folder."""
    p = pathlib.Path(path)
    if p.is_dir():
        for model_name, config_name in MODEL_CANDIDATES:
            if (p / model_name).is_file():
                config = p / config_name
                return p / model_name, config if config.is_file() else None
    elif p.is_file() and p.suffix == ".keras":
        for model_name, config_name in MODEL_CANDIDATES:
            if p.name == model_name and (p.parent / config_name).is_file():
                return p, p.parent / config_name
        return p, None
    raise InvalidArgumentError(
        format_message("No Keras model there.",
                       expected="a .keras file, a run folder with model.keras (kertransfer "
                                "train) or a search folder with best_model.keras (kertransfer "
                                "tune)",
                       received={"model": str(path)})
    )


def run_info(config_file: pathlib.Path | None) -> dict:
    """``{"class_names": ..., "training": {...}}`` from a run's or a search's config."""
    if config_file is None:
        return {}
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return {}
    training = {k: config[k] for k in TRAINING_KEYS if k in config}
    info = {"training": training, "run": str(config_file.parent)}
    if config.get("class_names") is not None:
        info["class_names"] = config["class_names"]
    return info


def load_keras_source(path: str | os.PathLike):
    """Load the model at ``path``; return ``(model, info)`` (see `run_info`)."""
    import keras

    model_file, config_file = find_keras_model(path)
    try:
        model = keras.saving.load_model(model_file, compile=False)
    except Exception as exc:
        raise InvalidArgumentError(
            format_message(f"Keras could not load {model_file}: {exc}",
                           expected="a model saved by Keras (model.save('....keras'))",
                           received={"model": str(path)})
        ) from exc
    return model, run_info(config_file)
