"""`rank_backbones`: rank candidate backbones for a target by transferability.

Each candidate's features (and its source head's predictions, for LEEP) on
the target's labelled examples are read once, then scored with every metric
of `kertransfer.insight.scores` (LogME, LEEP, H-score) from the same
decomposition; the `Ranking` lists the candidates best first.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import keras
import numpy as np

from kertransfer._fs import atomic_file
from kertransfer._log import print_msg
from kertransfer._seeds import seeded
from kertransfer.backbones import get_backbone_spec, list_backbones
from kertransfer.data.forms import form_of
from kertransfer.data.gathering import as_arrays, example_shape, gather
from kertransfer.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    format_message,
    suggest,
)
from kertransfer.freezing.protocol import is_transfer_model
from kertransfer.insight.scores import METRICS, _check, _Features, _h_score, _logme, leep
from kertransfer.methods.fewshot.classifiers import (
    ModelFeatures,
    feature_function,
    flatten_features,
)
from kertransfer.models import build_transfer_model
from kertransfer.models.surgery import layer_outputs
from kertransfer.validation import check_int, is_int

__all__ = ["Ranking", "rank_backbones"]


@dataclasses.dataclass
class Ranking:
    """What `rank_backbones` returns: one row per candidate, best first.

    Attributes:
        rows: ``{"candidate", "logme", "leep", "hscore", "dim", "feature_seconds",
            "score_seconds", "note"}`` per candidate (a score is None where it
            does not apply, such as LEEP without a source head).
        metric: The score the rows are sorted by.
        examples: Labelled examples scored.
        classes: Classes among them.
    """

    rows: list[dict]
    metric: str
    examples: int
    classes: int

    @property
    def best(self) -> str:
        """The top candidate's name."""
        return self.rows[0]["candidate"]

    def table(self) -> str:
        """The rows as an aligned text table."""
        metrics = [m for m in METRICS if any(m in r for r in self.rows)]
        head = ["#", "candidate", *metrics, "dim", "features", "scores", "note"]
        cells = [head]
        for i, r in enumerate(self.rows, 1):
            cells.append([str(i), r["candidate"],
                          *("–" if r.get(m) is None else f"{r[m]:.4f}" for m in metrics),
                          str(r["dim"]), f"{r['feature_seconds']:.2f}s",
                          f"{r['score_seconds']:.3f}s", r.get("note", "")])
        widths = [max(len(row[c]) for row in cells) for c in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                 for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_csv(self, path) -> pathlib.Path:
        """Write the rows as CSV, atomically (a temporary file, then renamed)."""
        import csv
        import io


        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        keys = ["rank", "candidate", *[m for m in METRICS if any(m in r for r in self.rows)],
                "dim", "feature_seconds", "score_seconds", "note"]
        writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for i, row in enumerate(self.rows, 1):
            writer.writerow({**row, "rank": i})
        with atomic_file(path, suffix=".csv") as tmp:
            pathlib.Path(tmp).write_text(buf.getvalue(), newline="")
        return path


def _label_of(candidate, index: int) -> str:
    if isinstance(candidate, str):
        return candidate if candidate == "pixels" or not candidate.endswith(".keras") \
            else pathlib.Path(candidate).parent.name + "/" + pathlib.Path(candidate).name
    if isinstance(candidate, pathlib.Path):
        return _label_of(str(candidate), index)
    if _at_layer(candidate):
        return f"{_label_of(candidate[0], index)} at {candidate[1]}"
    if isinstance(candidate, tuple) and len(candidate) == 2:
        weights = candidate[1]
        tail = "random" if weights is None else pathlib.Path(str(weights)).name \
            if str(weights).endswith(".keras") else str(weights)
        return f"{candidate[0]} ({tail})"
    return getattr(candidate, "name", f"candidate {index}")


def _at_layer(candidate) -> bool:
    """A ``(keras.Model, layer name)`` candidate: the features at one of its layers."""
    return isinstance(candidate, tuple) and len(candidate) == 2 and \
        isinstance(candidate[0], keras.Model) and isinstance(candidate[1], str)


def _model_of(candidate):
    """The ``keras.Model`` object a candidate reads (several may share one), or None."""
    if _at_layer(candidate):
        return candidate[0]
    return candidate if isinstance(candidate, keras.Model) else None


def _source_head(model) -> bool:
    """A single softmax head (its class probabilities feed LEEP)."""
    return getattr(model, "activation", None) == "softmax" and \
        is_int(getattr(model, "num_classes", None))


def _resolve(candidate, input_shape, weights):
    """``(features source for extract_features, model with a source head or None, note)``."""

    if isinstance(candidate, str) and candidate == "pixels":
        return "pixels", None, "raw inputs"
    if isinstance(candidate, tuple) and len(candidate) == 2 and isinstance(candidate[0], str):
        name, w = candidate
        model = build_transfer_model(name, 2, input_shape=input_shape,
                                     weights=None if w is None else str(w))
        return model, None, "backbone only"
    if isinstance(candidate, (str, pathlib.Path)) and str(candidate).endswith(".keras"):
        if not pathlib.Path(candidate).is_file():
            raise InvalidArgumentError(format_message(
                "A candidate model file does not exist.", received={"candidate": str(candidate)}))
        model = keras.saving.load_model(candidate, compile=False)
        if not is_transfer_model(model):
            raise InvalidArgumentError(format_message(
                "This file holds a model without kertransfer's preprocessing (a bare backbone, "
                "such as kt.pretrain's backbone.keras): name its architecture.",
                expected=f"a (registry name, path) pair, e.g. ('mobilenet_v3_small', "
                         f"{str(candidate)!r})",
                received={"candidate": str(candidate)}))
        return model, model if _source_head(model) else None, "file"
    if isinstance(candidate, str):
        if candidate not in list_backbones():

            get_backbone_spec(candidate)  # raises, with close names
        model = build_transfer_model(candidate, 2, input_shape=input_shape, weights=weights)
        return model, None, f"weights={weights}"
    if isinstance(candidate, keras.Model):
        return candidate, candidate if _source_head(candidate) else None, "model"
    raise InvalidTypeError(format_message(
        "A candidate must be a registry name, a (name, weights) pair, a .keras file, a "
        "keras.Model or 'pixels'.", received={"candidate": type(candidate).__name__}))


def _sample(y: np.ndarray, max_examples: int | None, seed: int) -> np.ndarray | None:
    """Rows of a seeded, stratified sample of at most ``max_examples`` (None: all)."""
    if max_examples is None or len(y) <= max_examples:
        return None
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=max_examples, stratify=y,
                               random_state=seed)
    return np.sort(keep)


def _outputs(source, with_head: bool, data, labels: bool, verbose: int = 0):
    """``(features [N, D], source-head probabilities or None, labels or None)``: one pass
    over ``data`` (arrays in batches of 256, or any stream, through the data adapter)."""

    fn = feature_function(source, with_outputs=with_head)

    def outputs(xb):  # features, and the source head's probabilities from the same pass
        out = fn(np.asarray(xb, "float32"))
        return tuple(np.asarray(o) for o in out) if with_head else (np.asarray(out),)

    out, y = gather(data, "data", outputs, labels=labels, batch_size=256, verbose=verbose)
    return flatten_features(out[0]), (out[1] if len(out) > 1 else None), y


def _shared_outputs(model, members, with_head: bool, data, labels: bool, verbose: int = 0):
    """`_outputs` of every candidate reading ``model`` (itself, or one of its layers), from
    one pass: ``{index: (features, probabilities or None)}`` and the labels."""
    layers = [c[1] for _, c in members if _at_layer(c)]
    multi, missing = layer_outputs(model, layers)
    if missing:
        raise InvalidArgumentError(format_message(
            f"The model {model.name!r} has no layer {missing[0]!r}.",
            fix=suggest(missing[0], [layer.name for layer in model.layers] + [
                layer.name for layer in getattr(model, "backbone", model).layers]) or
            "Name a layer of the model or of its backbone.",
            received={"candidate": (model.name, missing[0])}))
    heads = len(model.outputs)
    fn = ModelFeatures(multi)

    def outputs(xb):
        return tuple(np.asarray(o) for o in fn(np.asarray(xb, "float32")))

    out, y = gather(data, "data", outputs, labels=labels, batch_size=256, verbose=verbose)
    found, maps = {}, iter(out[1 + heads:])
    for index, candidate in members:
        if _at_layer(candidate):
            found[index] = (flatten_features(next(maps)), None)
        else:
            found[index] = (flatten_features(out[0]), out[1] if with_head else None)
    return found, y


class _Passes:
    """The feature passes of `rank_backbones`: one per candidate, except that the
    candidates reading one model object (the model and its layers) share its pass."""

    def __init__(self, items, data, labels: bool, input_shape, weights, leep: bool,
                 seed: int, verbose: int):
        self.data, self.labels, self.input_shape, self.weights = data, labels, input_shape, weights
        self.leep, self.seed, self.verbose = leep, seed, verbose
        self.groups: dict[int, list] = {}
        for i, (_, candidate) in enumerate(items):
            if _model_of(candidate) is not None:
                self.groups.setdefault(id(_model_of(candidate)), []).append((i, candidate))
        self.shared: dict[int, tuple] = {}  # done by a pass shared with an earlier candidate

    def features(self, i: int, candidate):
        """``(features, probabilities or None, labels of the pass or None, seconds, note)``
        of candidate ``i`` (a shared pass's seconds split evenly among its candidates)."""
        start = time.perf_counter()
        model = _model_of(candidate)
        members = self.groups.get(id(model), []) if model is not None else []
        if i not in self.shared and (len(members) > 1 or _at_layer(candidate)):
            found, labels_seen = _shared_outputs(
                model, members, _source_head(model) and self.leep, self.data,
                labels=self.labels, verbose=self.verbose)
            seconds = (time.perf_counter() - start) / len(members)
            self.shared.update({j: (*out, labels_seen, seconds) for j, out in found.items()})
        if i in self.shared:
            note = f"layer {candidate[1]}" if _at_layer(candidate) else "model"
            note += f", one pass for {len(members)}" if len(members) > 1 else ""
            return (*self.shared.pop(i), note)
        with seeded(self.seed):  # a random-weights candidate's initialisation
            source, head_model, note = _resolve(candidate, self.input_shape, self.weights)
        out = _outputs(source, head_model is not None and self.leep, self.data,
                       labels=self.labels, verbose=self.verbose)
        return (*out, time.perf_counter() - start, note)


def rank_backbones(candidates, data, *, metrics=("logme", "leep", "hscore"),
                   input_shape=None, weights: Any = "imagenet", max_examples: int | None = None,
                   seed: int = 0, verbose: int = 1) -> Ranking:
    """Score candidate feature extractors on the target's labelled examples, best first.

    One feature pass per model; every metric reads the same features.
    Scoring takes a fraction of a fine-tuning run, so it picks which
    backbones are worth fine-tuning (see the guide for how well the scores
    track fine-tuned accuracy here).

    Args:
        candidates: A list of candidates or a mapping ``{label: candidate}``.
            A candidate is a registry name (built with ``weights``), a
            ``(name, weights)`` pair (a weights file, or None for random
            weights), a ``.keras`` file of a model from
            `kertransfer.build_transfer_model` (its head, when a softmax
            head, gives LEEP), a ``keras.Model``, a ``(keras.Model, layer
            name)`` pair (the features at that layer of the model or of its
            backbone, averaged over space: which depth transfers best), or
            ``"pixels"`` (the raw inputs: the baseline). Candidates that read
            one model object (the model and its layers) share one pass.
        data: The target's labelled examples, in any labelled form
            kertransfer reads (see `kertransfer.data.adapter`): ``(x, y)``
            arrays, a `kertransfer.data.DataBundle` or `ArrayData` (its train
            split; a bundle's unaugmented, in order), or a ``tf.data.Dataset``
            or ``keras.utils.PyDataset`` of ``(x, y)`` batches. Arrays are
            sampled before the feature passes; other data streams, one pass
            per candidate, and the sample is drawn from its features.
        metrics: Among ``"logme"``, ``"leep"``, ``"hscore"``; the rows are
            sorted by the first.
        input_shape: The model input (default: the data's).
        weights: Weights for candidates given by name alone.
        max_examples: Score a seeded, stratified sample of at most this many.
        seed: Seed of that sample and of the initialisation of candidates
            with random weights (``(name, None)``); the caller's random state
            is left as it was.
        verbose: Print each candidate's scores as it is done, and the table.

    Returns:
        A `Ranking`.
    """
    max_examples = check_int(max_examples, "max_examples", minimum=1, allow_none=True)
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if not metrics or unknown:
        raise InvalidArgumentError(format_message(
            "metrics must name scores kertransfer computes.", expected=f"some of {list(METRICS)}",
            received={"metrics": metrics}))
    items = list(candidates.items()) if isinstance(candidates, dict) else \
        [(_label_of(c, i), c) for i, c in enumerate(candidates or [])]
    if not items:
        raise InvalidArgumentError(format_message("candidates is empty.",
                                                  received={"candidates": candidates}))

    in_memory = form_of(data, "data") in ("images", "xy", "array_data")
    y = None
    if in_memory:  # arrays: sample the examples before any feature pass
        x, y = as_arrays(data, "data")
        _check(np.zeros((len(x), 1)), y)
        keep = _sample(y, max_examples, seed)
        if keep is not None:
            x, y = x[keep], y[keep]
    if input_shape is None:
        input_shape = example_shape(data, "data")
    passes = _Passes(items, x if in_memory else data, not in_memory, input_shape, weights,
                     "leep" in metrics, seed, verbose)
    rows = []
    for i, (label, candidate) in enumerate(items):
        features, probabilities, labels_seen, seconds, note = passes.features(i, candidate)
        if not in_memory:  # a stream: the labels of its pass, then the sample
            y = labels_seen
            _check(np.zeros((len(y), 1)), y)
            keep = _sample(y, max_examples, seed)
            if keep is not None:
                features, y = features[keep], y[keep]
                probabilities = None if probabilities is None else probabilities[keep]
        row: dict[str, Any] = {"candidate": str(label), "dim": int(features.shape[1]),
                               "feature_seconds": seconds, "note": note}
        start = time.perf_counter()
        feats = _Features(_check(features, y)[0])  # one Gram matrix for every score
        for m in metrics:
            if m == "leep":
                row[m] = None if probabilities is None else leep(probabilities, y)
            else:
                row[m] = _logme(feats, y) if m == "logme" else _h_score(feats, y)
        del feats
        row["score_seconds"] = time.perf_counter() - start
        rows.append(row)
        if verbose:
            scores = ", ".join(f"{m} {'–' if row[m] is None else f'{row[m]:.4f}'}"
                               for m in metrics)
            print_msg(f"{label}: {scores} ({row['feature_seconds']:.1f}s features, "
                      f"{row['score_seconds']:.2f}s scores)")
    first = metrics[0]
    rows.sort(key=lambda r: (r[first] is None, -(r[first] or 0.0)))
    ranking = Ranking(rows, first, len(y), len(np.unique(y)))
    if verbose:
        print_msg(f"\nRanked by {first} on {len(y)} examples of {ranking.classes} classes:\n"
                  f"{ranking.table()}")
    return ranking
