"""`lr_find`: the learning-rate range test (Smith 2017; fastai's ``lr_find``).

The rate grows exponentially from ``start_learning_rate`` to ``end_learning_rate`` over ``steps``
training steps while the loss of each batch is recorded; the test stops early
when the smoothed loss diverges. It runs on a copy of the model with a fresh
optimizer of the same kind, so the model's weights and its optimizer state
are exactly as they were afterwards.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import keras
import numpy as np

from kertransfer._log import print_msg
from kertransfer._plot import pyplot, save_figure
from kertransfer.data.batches import as_batches, iterate
from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.training.optimizers import make_optimizer
from kertransfer.training.run import loss_for
from kertransfer.validation import check_choice, check_fraction, check_int, check_number

SUGGESTIONS = ("steep", "valley", "minimum")


@dataclasses.dataclass
class LRFindResult:
    """What :func:`lr_find` measured.

    Attributes:
        lrs: The learning rate of each step.
        losses: The raw loss of each step's batch.
        smoothed: The bias-corrected exponential moving average of the losses.
        suggestions: ``{"steep": lr, "valley": lr, "minimum": lr}``: the
            steepest descent of the smoothed loss, fastai's "valley" rule, and
            a tenth of the rate at the lowest loss.
        suggestion: The rate chosen by ``method``.
        plot: The PNG written, or None.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestions: dict[str, float]
    suggestion: float
    plot: str | None = None


def _cycle(data, batch_size: int):
    """``(x, y)`` batches of ``data`` as training sees them, pass after pass.

    A generator (one pass only) ends the test when it runs out."""

    batches = as_batches(data, "data", labels=True, training=True, batch_size=batch_size)
    passes = 0
    while True:
        count = 0
        for batch in iterate(batches):
            count += 1
            yield batch
        if count == 0:
            if passes == 0:
                raise InvalidArgumentError(
                    format_message("lr_find got no batch from the data.",
                                   expected="non-empty data of (images, labels) batches",
                                   received={"data": type(data).__name__}))
            return
        passes += 1
        end = getattr(batches, "on_epoch_end", None)
        if end is not None:
            end()  # reshuffles arrays and kertransfer's own batches


def _batch_size(batch) -> int:
    return int(keras.tree.flatten(batch[0])[0].shape[0])


def _next_full(batches, full: int, limit: int):
    """The next batch at least as large as the first, or None when the data ran out.

    A pass's smaller last batch is skipped, as fastai's training loader drops
    it: its new shape would compile the train step again (seconds) for one
    step. Data whose batches stay smaller is taken as it comes after ``limit``
    skips."""
    for _ in range(limit):
        batch = next(batches, None)
        if batch is None or _batch_size(batch) >= full:
            return batch
    return next(batches, None)


def _copy_for_search(model, start_learning_rate: float):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    optimizer = getattr(model, "optimizer", None) if getattr(model, "compiled", False) else None
    if optimizer is not None:
        config = optimizer.get_config()
        config["learning_rate"] = start_learning_rate
        new_optimizer = type(optimizer).from_config(config)
        loss = model.loss
    else:

        new_optimizer = make_optimizer("adam", start_learning_rate)
        loss = loss_for(model)
    clone.compile(optimizer=new_optimizer, loss=loss)
    return clone


def _suggest(lrs: np.ndarray, smoothed: np.ndarray) -> dict[str, float]:
    n = len(lrs)
    best = int(np.argmin(smoothed))
    log_lrs = np.log10(lrs)
    head = max(best, 2)
    grads = np.gradient(smoothed[:head], log_lrs[:head]) if head >= 2 else np.zeros(1)
    steep = float(lrs[int(np.argmin(grads))])
    # fastai's valley: the longest run of decreasing loss, 2/3 of the way down it.
    lengths = np.ones(n, dtype=int)
    starts = np.arange(n)
    for i in range(1, n):
        if smoothed[i] < smoothed[i - 1]:
            lengths[i] = lengths[i - 1] + 1
            starts[i] = starts[i - 1]
    end = int(np.argmax(lengths))
    start = int(starts[end])
    valley = float(lrs[start + (end - start) * 2 // 3])
    return {"steep": steep, "valley": valley, "minimum": float(lrs[best]) / 10.0}


def lr_find(model, data: Any, *, start_learning_rate: float = 1e-7, end_learning_rate: float = 10.0,
            steps: int = 100, method: str = "valley", smoothing: float = 0.98,
            diverge: float = 4.0, plot: str | os.PathLike | None = None,
            batch_size: int = 32, verbose: int = 1) -> LRFindResult:
    """Run an exponential learning-rate range test and suggest a rate.

    Args:
        model: A Keras model (compiled or not; uncompiled transfer models get
            the loss that matches their head and Adam).
        data: Labelled data in any form kertransfer reads (see
            `kertransfer.data.adapter`): ``(x, y)`` arrays (batches of
            ``batch_size``, reshuffled every pass), a ``tf.data.Dataset`` or
            ``keras.utils.PyDataset`` of ``(x, y)`` batches, a list of them, or a
            `DataBundle`/`ArrayData` (its ``train`` split, as training sees it).
            It is cycled as needed; a batch smaller than the first (the last
            of a pass) is skipped, as fastai's training loader drops it.
        start_learning_rate: First rate.
        end_learning_rate: Last rate.
        steps: Number of steps (a few hundred at most is plenty).
        method: Which suggestion to return: ``"valley"`` (fastai's default),
            ``"steep"`` or ``"minimum"``.
        smoothing: EMA factor of the loss (0 turns smoothing off).
        diverge: Stop when the smoothed loss exceeds this many times its best.
        plot: Where to write the loss-against-rate plot, e.g. ``"lr_find.png"``
            (None, the default: no file is written).
        batch_size: Batch size for ``(x, y)`` arrays.
        verbose: Print the suggestions.

    Returns:
        An `LRFindResult`; ``.suggestion`` is the rate to use.

    Raises:
        InvalidArgumentError: Bad rates, steps, method, or empty data.
        InvalidTypeError: ``data`` is not labelled data kertransfer reads.
    """
    low = check_number(start_learning_rate, "start_learning_rate", minimum=0,
                       exclusive_minimum=True)
    high = check_number(end_learning_rate, "end_learning_rate", minimum=0, exclusive_minimum=True)
    if low >= high:
        raise InvalidArgumentError(
            format_message("lr_find needs 0 < start_learning_rate < end_learning_rate.",
                           received={"start_learning_rate": start_learning_rate,
                                     "end_learning_rate": end_learning_rate})
        )
    start_learning_rate, end_learning_rate = low, high
    steps = check_int(steps, "steps", minimum=5)
    check_choice(method, "method", SUGGESTIONS, what="suggestion method")
    smoothing = check_fraction(smoothing, "smoothing",
                               fix="The EMA factor of the loss; 0 turns smoothing off.")
    diverge = check_number(diverge, "diverge", minimum=1,
                           fix="The test stops when the smoothed loss exceeds this many times "
                               "its best.")
    batches = _cycle(data, batch_size)
    first = next(batches)  # refuses bad data before the copy is made
    clone = _copy_for_search(model, start_learning_rate)
    factor = (end_learning_rate / start_learning_rate) ** (1.0 / (steps - 1))
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    progbar = keras.utils.Progbar(steps, verbose=1 if verbose else 0, unit_name="step")
    full = _batch_size(first)
    for i in range(steps):
        lr = start_learning_rate * factor**i
        clone.optimizer.learning_rate = lr
        batch = first if i == 0 else _next_full(batches, full, limit=steps)
        if batch is None:
            break  # a generator ran out
        x, y = batch[:2]
        clone.reset_metrics()
        out = clone.train_on_batch(x, y, return_dict=True)
        loss = float(out["loss"])
        lrs.append(lr)
        losses.append(loss)
        if not math.isfinite(loss):
            break
        avg = smoothing * avg + (1 - smoothing) * loss
        value = avg / (1 - smoothing ** (i + 1)) if smoothing else loss
        smoothed.append(value)
        best = min(best, value)
        progbar.update(i + 1, [("loss", value)])
        if i > 5 and value > diverge * best:
            break
    lrs, losses = lrs[: len(smoothed)], losses[: len(smoothed)]
    suggestions = _suggest(np.array(lrs), np.array(smoothed))
    result = LRFindResult(lrs, losses, smoothed, suggestions, suggestions[method])
    if plot is not None:
        result.plot = os.fspath(plot)
        _plot(result, plot)
    if verbose:
        shown = ", ".join(f"{k} {v:.2e}" for k, v in suggestions.items())
        print_msg(f"\nlr_find: {len(lrs)} steps; suggestions: {shown}; using {method} = "
              f"{result.suggestion:.2e}" + (f"; plot {result.plot}" if result.plot else ""))
    del clone
    return result


def _plot(result: LRFindResult, path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses, alpha=0.3, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed loss")
    for name, lr in result.suggestions.items():
        ax.axvline(lr, linestyle="--", linewidth=1, label=f"{name} {lr:.1e}",
                   color={"steep": "C2", "valley": "C3", "minimum": "C4"}[name])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    if result.smoothed:
        low = min(min(result.losses), min(result.smoothed))
        top = float(np.nanpercentile(result.smoothed, 95))
        pad = 0.1 * max(top - low, 1e-3)
        ax.set_ylim(low - pad, top + pad)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, tight=False)
