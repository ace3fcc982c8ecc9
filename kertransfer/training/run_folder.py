"""The layout of run and search folders: the one place that names their files.

A run folder (`kertransfer.training.train` with ``out=``, ``kertransfer
train``, ``kertransfer adapt``, ``kertransfer demo``) holds:

- ``model.keras``: the trained model;
- ``config.json``: the run's settings, its final ``metrics`` and, when the
  data named its classes (a folder, a TFDS dataset, a bundle), its
  ``class_names`` (a dict ``{head: names}`` for a multi-task model), which
  ``kertransfer export`` and ``kertransfer predict`` use;
- ``history.json``: ``{metric: [value per epoch]}``;
- ``learning_curve.png``: the curves of the history;
- after ``kertransfer report``: ``report.html``, and with data
  ``confusion_matrix.png`` and ``per_class_accuracy.png``;
- from ``kertransfer demo``, also ``table.txt`` and ``results.json`` (the
  per-seed results), ``serving/`` (the export) and ``samples/`` (the test
  images it predicts).

A search folder (``kertransfer tune``) holds ``best_model.keras``,
``best_config.json`` (with the class names), ``results.csv`` and
``trials.png``, and ``kertransfer_search.json``, the settings that define the
search (`kertransfer.tuning.resume`); inside KerasTuner's project folder, each ``trial_<id>``
gains ``history.json`` (``{"history": per-epoch curves, "values": knobs}``)
and ``process.json`` (the memory of the process after the trial), and with
``trials_per_process`` the search folder has ``child/config.json`` and
``child/data.npz``, the inputs of its search processes.

A pretraining folder (`kertransfer.pretrain` with ``out=``, ``kertransfer
pretrain``) is a run folder whose model is ``backbone.keras``, the headless
backbone.

`save_run` writes a run folder atomically; `find_model`, `read_config`,
`read_history`, `read_class_names` and `load_model` read either kind.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

from kertransfer._fs import usual_mode
from kertransfer._plot import pyplot, save_figure
from kertransfer.errors import DataError, InvalidArgumentError, format_message
from kertransfer.models.transfer_model import loss_terms

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
CURVE_FILE = "learning_curve.png"
REPORT_FILE = "report.html"
CONFUSION_FILE = "confusion_matrix.png"
PER_CLASS_FILE = "per_class_accuracy.png"
SEARCH_MODEL_FILE = "best_model.keras"
SEARCH_CONFIG_FILE = "best_config.json"
RESULTS_FILE = "results.csv"
TRIALS_FILE = "trials.png"
SEARCH_RECORD_FILE = "kertransfer_search.json"
TRIAL_HISTORY_FILE = HISTORY_FILE  # in each trial_<id> folder of the tuner's project
TRIAL_PROCESS_FILE = "process.json"
CHILD_FOLDER = "child"  # the inputs of trials_per_process's search processes
CHILD_CONFIG_FILE = CONFIG_FILE
CHILD_DATA_FILE = "data.npz"
BACKBONE_FILE = "backbone.keras"  # the model of a pretraining folder
DEMO_TABLE_FILE = "table.txt"
DEMO_RESULTS_FILE = "results.json"
DEMO_SERVING_FOLDER = "serving"
DEMO_SAMPLES_FOLDER = "samples"
# (model, config) of a run folder, then of a search folder.
LAYOUTS = ((MODEL_FILE, CONFIG_FILE), (SEARCH_MODEL_FILE, SEARCH_CONFIG_FILE))


def save_run(model, out: str | os.PathLike, config: dict, history: dict,
             stages=None, model_file: str = MODEL_FILE) -> pathlib.Path:
    """Write a run folder atomically: a crash leaves the old folder or none.

    Files: ``model.keras`` (or ``model_file``), ``config.json``,
    ``history.json`` and ``learning_curve.png`` (with ``stages``,
    ``[(epoch, label), ...]``, its stage boundaries are marked).
    """

    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    usual_mode(tmp, directory=True)
    try:
        model.save(tmp / model_file)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
        (tmp / HISTORY_FILE).write_text(json.dumps(history, indent=2))
        # Loss terms that kertransfer.methods.with_regularizers logs.
        registered = loss_terms(model)
        terms = [t.name for t in registered.trackers] if registered else []
        plot_history(history, tmp / CURVE_FILE, stages=stages, terms=terms)
        if out.exists():
            backup = out.with_name(f".{out.name}.old")
            if backup.exists():
                shutil.rmtree(backup)
            out.rename(backup)
            tmp.rename(out)
            shutil.rmtree(backup)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def data_class_names(model, data) -> list[str] | dict[str, list[str]] | None:
    """The class names ``data`` gives ``model``'s head(s), for a run's config; None
    when the data names no classes or its names do not fit the head.

    A head fits ``n`` names when it has ``n`` units, or one unit and two names
    (a binary sigmoid head: negative, positive). For a multi-task bundle
    (`kertransfer.data.DataBundle.with_tasks`), the tasks that keep the
    bundle's own labels get its names.
    """
    names = getattr(data, "class_names", None)
    if not names or isinstance(names, str):
        return None
    names = [str(c) for c in names]
    try:
        structure = model.output
    except (AttributeError, ValueError):
        structure = None
    if isinstance(structure, dict):  # output_shape lists the heads by layer name
        shape = {str(k): tuple(v.shape) for k, v in structure.items()}
    else:
        shape = getattr(model, "output_shape", None)
    tables = getattr(data, "task_tables", None)

    def fits(units) -> bool:
        return isinstance(units, int) and (len(names) == units
                                           or (units == 1 and len(names) == 2))

    if isinstance(shape, dict):
        kept = {head: names for head, s in shape.items()
                if (not tables or tables.get(head, 0) is None) and fits(s[-1])}
        return kept or None
    if isinstance(shape, tuple) and shape and fits(shape[-1]):
        return names
    return None


def find_model(path: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path | None]:
    """``(model file, config file or None)`` for a ``.keras`` file or a run/search folder.

    Raises:
        InvalidArgumentError: ``path`` is neither.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        for model_name, config_name in LAYOUTS:
            if (p / model_name).is_file():
                config = p / config_name
                return p / model_name, config if config.is_file() else None
    elif p.is_file() and p.suffix == ".keras":
        for model_name, config_name in LAYOUTS:
            if p.name == model_name and (p.parent / config_name).is_file():
                return p, p.parent / config_name
        return p, None
    raise InvalidArgumentError(
        format_message("No Keras model there.",
                       expected=f"a .keras file, a run folder with {MODEL_FILE} (kertransfer "
                                f"train) or a search folder with {SEARCH_MODEL_FILE} "
                                "(kertransfer tune)",
                       received={"model": str(path)})
    )


def config_file(folder: str | os.PathLike) -> pathlib.Path | None:
    """The config of a run folder (``config.json``) or a search folder
    (``best_config.json``), or None."""
    folder = pathlib.Path(folder)
    for _, name in LAYOUTS:
        if (folder / name).is_file():
            return folder / name
    return None


def read_json(file: str | os.PathLike) -> Any:
    """One of the folder's JSON files; a clear error when it is not JSON."""
    try:
        return json.loads(pathlib.Path(file).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(format_message(
            f"The run's {pathlib.Path(file).name} cannot be read as JSON ({exc}).",
            fix="Write the run again, or repair or remove the file.",
            received={"file": str(file)})) from exc


def read_config(path: str | os.PathLike) -> dict:
    """The config of a run or search folder (or of the folder a ``.keras`` file is in
    when it is the folder's model); ``{}`` when there is none."""
    p = pathlib.Path(path)
    if p.is_dir():
        file = config_file(p)
    else:
        file = find_model(p)[1]
    if file is None:
        return {}
    config = read_json(file)
    return config if isinstance(config, dict) else {}


def read_history(folder: str | os.PathLike) -> dict[str, list[float]] | None:
    """``{metric: [value per epoch]}`` of a run folder, or None when it has none."""
    file = pathlib.Path(folder) / HISTORY_FILE
    return read_json(file) if file.is_file() else None


def read_class_names(path: str | os.PathLike) -> list[str] | dict[str, list[str]] | None:
    """The class names a run or search folder recorded (a dict per head), or None."""
    return read_config(path).get("class_names")


def load_model(path: str | os.PathLike):
    """The Keras model of a run or search folder, or of a ``.keras`` file (not compiled).

    Raises:
        InvalidArgumentError: There is no model there, or Keras cannot load it.
    """
    import keras

    model_file, _ = find_model(path)
    try:
        return keras.saving.load_model(model_file, compile=False)
    except Exception as exc:
        raise InvalidArgumentError(
            format_message(f"Keras could not load {model_file}: {exc}",
                           expected="a model saved by Keras (model.save('....keras'))",
                           received={"model": str(path)})
        ) from exc


def plot_history(history: dict[str, list[float]], path, title: str | None = None,
                 stages=None, terms=()) -> None:
    """Save learning curves (loss and accuracy, train and validation) as a PNG.

    Args:
        history: ``{metric: [value per epoch]}``.
        path: The PNG to write.
        title: Optional figure title.
        stages: Optional ``[(epoch, label), ...]`` (0-based epoch where each
            stage begins); each boundary after the first is marked.
        terms: Names of logged loss terms (``"l2sp"``, ...) drawn dashed on
            the loss panel, beside the loss that includes them.
    """
    from matplotlib.ticker import MaxNLocator


    metrics = [m for m in ("loss", "accuracy") if m in history]
    fig, axes = pyplot().subplots(1, max(len(metrics), 1), figsize=(5 * max(len(metrics), 1), 3.5))
    axes = [axes] if not hasattr(axes, "__len__") else list(axes)
    for ax, metric in zip(axes, metrics):
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], label=f"train {metric}")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], label=f"val {metric}")
        if metric == "loss":
            for term in terms:
                if term in history:
                    ax.plot(epochs, history[term], linestyle="--", label=f"{term} term")
        for epoch, label in list(stages or [])[1:]:
            ax.axvline(epoch + 0.5, color="gray", linestyle="--", linewidth=1)
            ax.annotate(label, (epoch + 0.5, 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=7, color="gray")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_title(metric)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, tight=False)
