"""The shared testing base: what every recipe and every model promises, checked in one place.

In the spirit of keras' ``run_layer_test`` and keras-hub's ``run_task_test``: a
test states what is particular to its case and calls one of these for the
rest, so the promises common to all recipes are checked the same way
everywhere (and a new recipe gets them by calling one function).

The tests folder is on ``sys.path`` under pytest: ``from testing import ...``.
"""

from __future__ import annotations

import contextlib
import io
import math
import pathlib

import keras
import numpy as np
from conftest import tiny_cnn

from kertransfer.training import RunResult, run_folder


def tiny_cnn_ctor():
    return tiny_cnn


def run_recipe_test(recipe, *args, expected_epochs: int | None = None,
                    expected_stages: list[str] | None = None, changes=None, **kwargs):
    """Call ``recipe(*args, verbose=0, **kwargs)`` as a user does, and check the promises
    every recipe's result makes (`kertransfer.training.results`); return the result.

    Checked: nothing reaches stdout at ``verbose=0``; the result is a `RunResult`;
    every history entry has one finite value per epoch that ran (``expected_epochs``
    when given); the stages begin at epoch 0, in order, inside the run, and carry
    ``expected_stages`` labels when given; the metrics are finite floats that the
    summary names, with the epoch they score; ``out``, when written, is a run
    folder whose config and history read back; and ``changes`` (a list of
    ``keras.Variable``) changed, i.e. the recipe trained what it should.
    """
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in (changes or [])]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = recipe(*args, verbose=0, **kwargs)
    assert printed.getvalue() == "", f"verbose=0 printed: {printed.getvalue()[:500]!r}"
    assert isinstance(result, RunResult), type(result)

    epochs = result.epochs
    if expected_epochs is not None:
        assert epochs == expected_epochs, (epochs, expected_epochs)
    for key, values in result.history.items():
        assert len(values) <= epochs and all(math.isfinite(v) for v in values), (key, values)
    assert any(len(v) == epochs for v in result.history.values()) or not result.history

    starts = [epoch for epoch, _ in result.stages]
    if starts:
        assert starts[0] == 0 and starts == sorted(starts) and starts[-1] < max(epochs, 1), \
            result.stages
    if expected_stages is not None:
        assert [label for _, label in result.stages] == expected_stages, result.stages

    summary = result.summary()
    assert type(result).__name__ in summary and f"{epochs} epochs" in summary
    for key, value in result.metrics.items():
        assert isinstance(value, float) and math.isfinite(value), (key, value)
        assert key in summary
    if result.metrics and epochs:
        assert f"epoch {result.scored_epoch}" in summary, summary
    assert result.seconds > 0

    if result.out is not None:
        out = pathlib.Path(result.out)
        assert out.is_dir()
        config = run_folder.read_config(out)
        assert isinstance(config, dict) and config
        history = run_folder.read_history(out)
        if history is not None and result.history:
            assert set(result.history) <= set(history)

    for variable, old in zip(changes or [], before):
        assert not np.array_equal(keras.ops.convert_to_numpy(variable), old), variable.path
    return result
