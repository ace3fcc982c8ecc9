"""The results the recipes return: one family, one set of names.

Every recipe (`kertransfer.train`, `kertransfer.fine_tune`, `kertransfer.tune`,
`kertransfer.pretrain`, `kertransfer.adapt`) returns a `RunResult` subclass
with the same core fields:

- ``model``: what was trained (the pretrained backbone for ``pretrain``, the
  best model for ``tune`` once loaded);
- ``history``: ``{metric: [value per epoch]}``;
- ``metrics``: the final evaluation, ``{"val_accuracy": ..., ...}`` (empty
  when there was nothing to evaluate on);
- ``stages``: ``[(epoch, label), ...]``, the epoch (0-based) where each phase
  began;
- ``seconds``: wall time;
- ``out``: the folder written, or None.

and the fields of its own recipe. ``str(result)`` is a short summary that says
which epoch the reported scores come from.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any


@dataclasses.dataclass
class RunResult:
    """The fields every recipe's result has (see the module docstring)."""

    model: Any
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    stages: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    out: pathlib.Path | None = None

    @property
    def epochs(self) -> int:
        """How many epochs ran (the longest history entry)."""
        return max((len(v) for v in self.history.values()), default=0)

    @property
    def scored_epoch(self) -> int:
        """The epoch (from 1) whose weights the model holds: the last one that ran."""
        return self.epochs

    def _score_note(self) -> str:
        if not self.epochs:
            return ""
        if self.scored_epoch != self.epochs:
            return (f"the weights of epoch {self.scored_epoch} of {self.epochs}, restored by "
                    "early stopping")
        return f"the weights after epoch {self.epochs}"

    def summary(self) -> str:
        """The metrics, which epoch's weights they score, a hint when no test split exists."""
        lines = [f"{type(self).__name__}: {self.epochs} epochs in {self.seconds:.1f} s"]
        note = self._score_note()
        for key, value in self.metrics.items():
            lines.append(f"  {key}: {value:.4f}")
        if self.metrics and note:
            lines.append(f"  (scores of {note})")
        if self.metrics and not any(k.startswith("test_") for k in self.metrics):
            lines.append("  No test split was held out: validation scores are optimistic "
                         "when they chose the epoch or the settings; hold one out "
                         "(test_split=..., --test-split) for an unbiased estimate.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclasses.dataclass
class TrainResult(RunResult):
    """What `kertransfer.train` returns: the `RunResult` fields."""


@dataclasses.dataclass
class FineTuneResult(RunResult):
    """What `kertransfer.fine_tune` returns.

    Attributes (beside `RunResult`'s):
        probe: The `ProbeFit` of phase 1 (its ``C`` and cross-validated
            accuracy) when the head was fitted as a linear probe, else None.
        cached_features: Whether phase 1 trained the head on cached features.
        stopped_epoch: The epoch (0-based) where early stopping ended the run,
            0 when it ran to the end.
        best_epoch: The epoch (from 1) whose weights early stopping restored,
            or None without early stopping (the model holds the last epoch's).
    """

    probe: Any = None
    cached_features: bool = False
    stopped_epoch: int = 0
    best_epoch: int | None = None

    @property
    def scored_epoch(self) -> int:
        return self.best_epoch if self.best_epoch is not None else self.epochs

    def _score_note(self) -> str:
        if self.best_epoch is not None:
            return (f"the weights of epoch {self.best_epoch} of {self.epochs}, the lowest "
                    "val_loss, restored by early stopping")
        return super()._score_note()
