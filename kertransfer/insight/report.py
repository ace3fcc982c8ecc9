"""Plots and a one-file report for a run: confusion matrix, per-class accuracy, curves.

- `confusion_matrix` counts ``[true class, predicted class]``;
  `per_class_accuracy` is each class's share of correct predictions (its
  recall), and the two ``plot_`` functions draw them.
- `evaluate_run` predicts a split of the data with a run's model, decides
  classes by the head's rule (`kertransfer.models.decisions`: the most
  probable class, a binary head's threshold, or a multi-label head's labels
  above it) and writes ``confusion_matrix.png`` and ``per_class_accuracy.png``
  into the run folder (a multi-label head: accuracy per label only).
- `run_report` gathers what a run or a search folder holds into one HTML
  file with the images inside it: the learning curves with their stage
  markers, the learning-rate range test (when the run recorded one), the
  confusion matrix and per-class accuracy (with data), and, for a search, the
  trials plot and the results table.

Every file is written atomically: a reader never sees half of one.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import pathlib
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from kertransfer._fs import atomic_file
from kertransfer._plot import pyplot, save_figure
from kertransfer.data.gathering import split_arrays
from kertransfer.errors import DataError, InvalidArgumentError, LabelError, format_message
from kertransfer.models.decisions import DEFAULT_THRESHOLD, check_threshold, decided, head_rule
from kertransfer.training import run_folder
from kertransfer.training.run_folder import plot_history
from kertransfer.validation import check_int

__all__ = ["confusion_matrix", "evaluate_run", "per_class_accuracy", "plot_confusion_matrix",
           "plot_per_class_accuracy", "run_report"]


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Counts ``[num_classes, num_classes]``: row = true class, column = predicted class."""
    num_classes = check_int(num_classes, "num_classes", minimum=1, allow_none=True)
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1 or not len(t):
        raise LabelError(format_message(
            "y_true and y_pred must be 1-D class labels of the same length.",
            received={"y_true": f"shape {t.shape}", "y_pred": f"shape {p.shape}"}))
    if not (np.issubdtype(t.dtype, np.integer) and np.issubdtype(p.dtype, np.integer)) \
            or min(t.min(), p.min()) < 0:
        raise LabelError(format_message("Labels must be integers from 0.",
                                        received={"y_true": str(t.dtype),
                                                  "y_pred": str(p.dtype)}))
    n = int(max(t.max(), p.max())) + 1 if num_classes is None else num_classes
    if max(t.max(), p.max()) >= n:
        raise LabelError(format_message(f"A label is not below num_classes={n}.",
                                        received={"num_classes": num_classes}))
    matrix = np.zeros((n, n), dtype="int64")
    np.add.at(matrix, (t, p), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Each class's share of its examples predicted right (NaN for a class with none)."""
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)


def _names(class_names, n: int) -> list[str]:
    names = [str(c) for c in class_names] if class_names is not None else []
    return names[:n] + [str(k) for k in range(len(names), n)]


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str] | None = None,
                          path=None, *, normalize: bool = True, title: str | None = None):
    """Draw the matrix (rows normalised to 1 by default, counts written in the cells).

    Returns the figure, or the path it was saved to when ``path`` is given.
    """
    plt = pyplot()
    matrix = np.asarray(matrix)
    n = len(matrix)
    names = _names(class_names, n)
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
    side = min(max(4.0, 0.45 * n + 2), 14)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                 label="share of the true class" if normalize else "examples")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    dark = shown[i, j] > (0.5 if normalize else shown.max() / 2)
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
    ax.set_xticks(range(n), names, rotation=90 if n > 10 else 0, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(title or f"confusion matrix (accuracy {accuracy:.3f}, {matrix.sum()} examples)",
                 fontsize=10)
    return save_figure(fig, path) if path is not None else fig


def plot_per_class_accuracy(accuracy: Sequence[float], class_names: Sequence[str] | None = None,
                            path=None, *, title: str | None = None):
    """A bar per class, lowest first (where to look); the mean is a dashed line."""
    plt = pyplot()
    acc = np.asarray(accuracy, dtype="float64")
    names = _names(class_names, len(acc))
    order = np.argsort(np.nan_to_num(acc, nan=-1.0))
    fig, ax = plt.subplots(figsize=(min(max(4.0, 0.35 * len(acc) + 2), 14), 3.5))
    ax.bar(range(len(acc)), np.nan_to_num(acc[order]), color="tab:blue")
    ax.axhline(np.nanmean(acc), color="gray", linestyle="--", linewidth=1,
               label=f"mean {np.nanmean(acc):.3f}")
    ax.set_xticks(range(len(acc)), [names[k] for k in order],
                  rotation=90 if len(acc) > 10 else 0, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax.set_title(title or "accuracy per class, lowest first", fontsize=10)
    return save_figure(fig, path) if path is not None else fig


def _run_folder(run) -> tuple[pathlib.Path, dict]:
    path = pathlib.Path(run)
    if not path.is_dir():
        raise InvalidArgumentError(format_message(
            "run must be a run folder (kertransfer train, kt.training.train(out=...)) or a "
            "search folder (kt.tune).", received={"run": str(run)}))
    return path, run_folder.read_config(path)


def _model_of(folder: pathlib.Path):
    if not any((folder / model_file).is_file() for model_file, _ in run_folder.LAYOUTS):
        raise DataError(format_message(
            f"The folder has no {run_folder.MODEL_FILE} or {run_folder.SEARCH_MODEL_FILE} to "
            "evaluate.", received={"run": str(folder)}))
    return run_folder.load_model(folder)


def evaluate_run(run, data, *, split: str = "test", model=None, head: str | None = None,
                 threshold: float | None = None) -> dict[str, Any]:
    """Predict ``split`` of ``data`` with the run's model; write its plots into the run.

    What the model predicts is what its head decides
    (`kertransfer.models.decisions`, the rule its exports use):

    - a softmax or logits head: the most probable class; ``matrix`` is
      ``[classes, classes]``;
    - a binary head (one sigmoid unit): the positive class (1) when
      ``p > threshold``, else the negative one (0); ``matrix`` is 2×2
      (negative, positive) and ``per_class`` is the share of negatives and of
      positives decided right;
    - a multi-label head (several sigmoid units, multi-hot labels
      ``[N, labels]``): every label above the threshold. An image may hold
      several labels, so a label-by-label confusion matrix means nothing:
      ``matrix`` holds each label's 2×2 counts ``[label, true, predicted]``
      (0: absent, 1: present), ``per_class`` each label's accuracy (the share
      of images whose presence or absence of the label is decided right),
      ``accuracy`` their mean (Keras' ``binary_accuracy`` at the threshold),
      and only ``per_class_accuracy.png`` is written.

    Args:
        run: A run or search folder.
        data: A `kertransfer.data.DataBundle` or `ArrayData` (its ``split``), or
            ``(x, y)`` arrays.
        split: Which split of a bundle.
        model: The model (default: the folder's ``model.keras`` or ``best_model.keras``).
        head: For a multi-task model, the head to evaluate.
        threshold: The probability a sigmoid head's class must exceed
            (default 0.5); softmax and logits heads ignore it.

    Returns:
        ``{"matrix", "per_class", "accuracy", "class_names", "paths", "rule",
        "threshold"}``; ``rule`` is ``"argmax"``, ``"binary"`` or
        ``"multi_label"``.

    Raises:
        LabelError: The labels do not fit the head (multi-hot labels of the
            head's width for a multi-label head, 0 or 1 for a binary head).
    """
    threshold = DEFAULT_THRESHOLD if threshold is None else check_threshold(threshold)
    folder, config = _run_folder(run)
    model = _model_of(folder) if model is None else model
    x, y = split_arrays(data, split)
    probs = model.predict(x, verbose=0, batch_size=64)
    if isinstance(probs, dict):
        if head not in probs:
            raise InvalidArgumentError(format_message(
                "This model has several heads: name the one to evaluate.",
                expected=f"head= one of {sorted(probs)}", received={"head": head}))
        probs = probs[head]
        y = data.task_labels(y)[head] if hasattr(data, "task_labels") and \
            getattr(data, "task_tables", None) else y
    probs = np.asarray(probs)
    rule = head_rule(model, head, probs.shape[-1])
    pred = decided(probs, rule, threshold)
    names = getattr(data, "class_names", None) or config.get("class_names")
    if isinstance(names, dict):
        names = names.get(head)
    if rule == "multi_label":
        matrix = _label_matrices(np.asarray(y), pred)
        acc = np.trace(matrix, axis1=1, axis2=2) / len(pred)
        names = _names(names, len(acc))
        paths = [plot_per_class_accuracy(acc, names, folder / run_folder.PER_CLASS_FILE,
                                         title="accuracy per label, lowest first")]
        return {"matrix": matrix, "per_class": acc, "accuracy": float(acc.mean()),
                "class_names": names, "paths": paths, "rule": rule, "threshold": threshold}
    y = np.asarray(y)
    if rule == "binary":
        y = y[:, 0] if y.ndim == 2 and y.shape[-1] == 1 else y  # [N, 1] labels
    matrix = confusion_matrix(y.astype("int64"), pred,
                              num_classes=2 if rule == "binary" else probs.shape[-1])
    acc = per_class_accuracy(matrix)
    paths = [plot_confusion_matrix(matrix, names, folder / run_folder.CONFUSION_FILE),
             plot_per_class_accuracy(acc, names, folder / run_folder.PER_CLASS_FILE)]
    return {"matrix": matrix, "per_class": acc, "accuracy": float(np.trace(matrix) / len(y)),
            "class_names": _names(names, len(matrix)), "paths": paths, "rule": rule,
            "threshold": threshold}


def _label_matrices(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Each label's 2×2 counts ``[label, true, predicted]`` from multi-hot labels."""
    if y.shape != pred.shape or not np.isin(y, (0, 1)).all():
        raise LabelError(format_message(
            "A multi-label head (several sigmoid units) is evaluated on multi-hot labels: "
            "one 0 or 1 per image and label.",
            expected=f"labels of shape {pred.shape}",
            received={"labels": f"shape {y.shape}, dtype {y.dtype}"}))
    labels = np.broadcast_to(np.arange(y.shape[1]), y.shape)
    matrix = np.zeros((y.shape[1], 2, 2), dtype="int64")
    np.add.at(matrix, (labels, y.astype("int64"), pred.astype("int64")), 1)
    return matrix


def _png(fig_or_path) -> str:
    """An ``<img>`` with the PNG inside it."""
    if isinstance(fig_or_path, (str, pathlib.Path)):
        data = pathlib.Path(fig_or_path).read_bytes()
    else:
        plt = pyplot()
        buf = io.BytesIO()
        fig_or_path.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        plt.close(fig_or_path)
        data = buf.getvalue()
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _lr_find_figure(record: dict):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(record["lrs"], record.get("smoothed") or record["losses"])
    ax.set_xscale("log")
    if record.get("suggestion"):
        ax.axvline(record["suggestion"], color="red", linestyle="--",
                   label=f"suggestion {record['suggestion']:.2e}")
        ax.legend(fontsize=8)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    ax.set_title("learning-rate range test", fontsize=10)
    return fig


Section = tuple[str, str]  # (heading, HTML)


def _summary_sections(folder: pathlib.Path, config: dict) -> list[Section]:
    """The run's settings and scores, its learning curves and its lr_find curve."""
    sections: list[Section] = []
    facts = {k: config[k] for k in ("backbone", "weights", "freeze", "bn", "learning_rate",
                                    "epochs", "freeze_epochs", "objective", "score")
             if config.get(k) is not None}
    facts.update({k: v for k, v in (config.get("metrics") or {}).items()})
    if config.get("hypermodel"):
        facts["backbones"] = config["hypermodel"].get("backbones")
    if facts:
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>"
                       f"{html.escape(f'{v:.4f}' if isinstance(v, float) else str(v))}</td></tr>"
                       for k, v in facts.items())
        sections.append(("Summary", f"<table>{rows}</table>"))
    history = run_folder.read_history(folder)
    if history is not None:
        stages = [tuple(s) for s in config.get("stages") or []]
        with tempfile.TemporaryDirectory() as scratch:
            curve = pathlib.Path(scratch) / "curve.png"
            plot_history(history, curve, stages=stages)
            sections.append(("Learning curves", _png(curve)
                             + ("<p>Dashed lines mark where each stage began: "
                                + html.escape(", ".join(f"epoch {e + 1}: {label}"
                                                        for e, label in stages)) + "</p>"
                                if stages else "")))
    if config.get("lr_find"):
        sections.append(("Learning-rate range test", _png(_lr_find_figure(config["lr_find"]))))
    return sections


def _evaluation_sections(folder: pathlib.Path, data, split: str, head, threshold) -> list[Section]:
    """The confusion matrix (or per-label accuracy) and per-class accuracy on ``split``."""
    result = evaluate_run(folder, data, split=split, head=head, threshold=threshold)
    worst = np.argsort(np.nan_to_num(result["per_class"], nan=2.0))[:3]
    lowest = ", ".join(f"{result['class_names'][k]} ({result['per_class'][k]:.3f})"
                       for k in worst)
    if result["rule"] == "multi_label":
        return [(f"Accuracy per label ({split} split)", _png(result["paths"][0])
                 + f"<p>Labels above the threshold {result['threshold']:g}; mean "
                   f"accuracy per label {result['accuracy']:.4f}; lowest labels: "
                   f"{html.escape(lowest)}.</p>")]
    rule = (f"; positive above the threshold {result['threshold']:g}"
            if result["rule"] == "binary" else "")
    return [(f"Confusion matrix ({split} split)", _png(result["paths"][0])
             + f"<p>Accuracy {result['accuracy']:.4f}{rule}; lowest classes: "
               f"{html.escape(lowest)}.</p>"),
            ("Accuracy per class", _png(result["paths"][1]))]


def _search_sections(folder: pathlib.Path) -> list[Section]:
    """A search folder's trials plot and results table."""
    trials, results = folder / run_folder.TRIALS_FILE, folder / run_folder.RESULTS_FILE
    if not trials.is_file():
        return []
    table = ""
    if results.is_file():
        rows = list(csv.reader(io.StringIO(results.read_text())))
        table = "<table>" + "".join(
            "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}"
                             f"</{'th' if i == 0 else 'td'}>" for c in row) + "</tr>"
            for i, row in enumerate(rows)) + "</table>"
    return [("Search trials", _png(trials) + table)]


def run_report(run, data=None, *, split: str = "test", out=None, head: str | None = None,
               title: str | None = None, threshold: float | None = None) -> pathlib.Path:
    """Write one self-contained HTML page about a run or a search folder.

    Args:
        run: The folder.
        data: With data, the page also has the confusion matrix and
            per-class accuracy on ``split`` (see `evaluate_run`).
        split: Which split of a bundle to evaluate.
        out: The HTML file (default: ``report.html`` in the folder).
        head: For a multi-task model, the head to evaluate.
        title: The page's title (default: the folder's name).
        threshold: For a sigmoid head, the probability its class must exceed
            (default 0.5; see `evaluate_run`).

    Returns:
        The path of the page.
    """

    folder, config = _run_folder(run)
    sections = [*_summary_sections(folder, config)]
    if data is not None:
        sections += _evaluation_sections(folder, data, split, head, threshold)
    sections += _search_sections(folder)
    if not sections:
        raise DataError(format_message(
            "The folder holds nothing to report: no config, history, or search results.",
            received={"run": str(folder)}))
    name = html.escape(title or folder.name)
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{name}</title><style>"
            "body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
            "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:2px 8px;"
            "text-align:left}img{max-width:100%}</style></head><body>"
            f"<h1>kertransfer report: {name}</h1>{body}</body></html>")
    out = pathlib.Path(out) if out is not None else folder / run_folder.REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out, suffix=".html") as tmp:
        pathlib.Path(tmp).write_text(page, encoding="utf-8")
    return out
