"""Staged unfreezing inside one ``fit()``: `StagedUnfreezing` and `GradualUnfreezing`.

At each stage boundary (the start of an epoch) the callback makes the top
blocks of the backbone trainable through the model's freeze machinery (so
the BatchNorm mode is respected), then rebuilds the optimizer on the new
trainable set with its state kept (iteration count, learning rate, moments of
variables that were already training; newly unfrozen variables start fresh)
and retraces the train step. The user does not recompile. Frozen blocks cost
no gradient computation: Keras differentiates only the trainable variables,
and the backbone's frozen bottom is never back-propagated through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from kertransfer import _log
from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.freezing.apply import apply_policy
from kertransfer.freezing.policies import FreezeBlocks
from kertransfer.freezing.protocol import block_context, require_transfer_model
from kertransfer.training.recipe import continue_training
from kertransfer.validation import check_int, check_number, is_int


def _check_schedule(schedule) -> list[tuple[int, Any, float | None]]:
    if not isinstance(schedule, (list, tuple)) or not schedule:
        raise InvalidArgumentError(
            format_message(
                "The unfreezing schedule must be a non-empty list of (epoch, blocks) pairs.",
                expected='e.g. [(0, "head"), (3, 2), (6, "all")], optionally with a third '
                "element, the learning-rate factor of the stage",
                received={"schedule": schedule},
            )
        )
    out = []
    last = -1
    for entry in schedule:
        if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
            raise InvalidArgumentError(
                format_message("Each schedule entry is (epoch, blocks) or "
                               "(epoch, blocks, learning_rate_multiplier).",
                               received={"entry": entry})
            )
        epoch, blocks = entry[0], entry[1]
        factor = entry[2] if len(entry) == 3 else None
        if not is_int(epoch) or epoch <= last:
            raise InvalidArgumentError(
                format_message("Schedule epochs must be integers in increasing order, from 0.",
                               received={"schedule": schedule})
            )
        if is_int(blocks) and blocks >= 0:
            blocks = int(blocks)
        elif not (isinstance(blocks, str) and blocks in ("head", "all")):
            raise InvalidArgumentError(
                format_message(
                    "A stage names how many blocks are trainable from the top.",
                    expected='"head" (backbone frozen), "all", or a number of blocks >= 0',
                    received={"blocks": blocks},
                )
            )
        if factor is not None:
            factor = check_number(factor, "learning_rate_multiplier", minimum=0,
                                  exclusive_minimum=True,
                                  fix="A stage's third element scales its learning rate.")
        out.append((int(epoch), blocks, factor))
        last = epoch
    return out


class StagedUnfreezing(keras.callbacks.Callback):
    """Unfreeze the backbone from the top in stages, inside one ``fit()``.

    Args:
        schedule: ``[(epoch, blocks), ...]`` or ``[(epoch, blocks, learning_rate_multiplier), ...]``
            in increasing epoch order. ``blocks`` is how many backbone blocks
            are trainable counted from the top: ``"head"`` (0, the backbone
            frozen), a number, or ``"all"``. Before the first listed epoch the
            model's own freeze state is used. ``learning_rate_multiplier`` multiplies the
            learning rate the optimizer had when training began (needs a
            float learning rate, not a schedule).
        verbose: Print a line at each stage boundary.

    With ``keras.callbacks.BackupAndRestore`` (listed before this callback),
    a run killed mid-stage resumes at the saved epoch in the right stage, with
    the right trainable set and weights. The optimizer's moments restart there:
    Keras skips loading a saved optimizer state whose variable count differs
    from the optimizer it builds at the start of ``fit`` (it warns so).

    Examples:
        ``model.fit(train, epochs=12, callbacks=[StagedUnfreezing([(0, "head"), (3, 2),
        (6, 4), (9, "all")])])``
    """

    def __init__(self, schedule: Sequence, verbose: int = 1):
        super().__init__()
        self.schedule = _check_schedule(schedule)
        self.verbose = verbose
        self.current: Any = None
        self.stage_epochs: list[int] = []
        self._learning_rate: float | None = None

    def _stages(self, num_blocks: int):
        return self.schedule

    def _trainable_blocks(self, blocks, num_blocks: int) -> int:
        if blocks == "head":
            return 0
        if blocks == "all":
            return num_blocks
        if blocks > num_blocks:
            raise InvalidArgumentError(
                format_message(
                    f"The schedule unfreezes {blocks} blocks but the backbone has "
                    f"{num_blocks}.",
                    expected=f'a number from 0 to {num_blocks}, or "all"',
                    received={"blocks": blocks},
                )
            )
        return int(blocks)

    def on_train_begin(self, logs=None):
        require_transfer_model(self.model, "Staged unfreezing")
        lr = self.model.optimizer._learning_rate if self.model.optimizer else None
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            if any(f is not None for _, _, f in self.schedule):
                raise InvalidArgumentError(
                    format_message(
                        "Learning-rate factors per stage need a float learning rate, and the "
                        "optimizer has a schedule.",
                        fix="Drop the factors, or compile with a float learning rate.",
                        received={"learning_rate": type(lr).__name__},
                    )
                )
            self._learning_rate = None
        elif self._learning_rate is None:
            rate = self.model.optimizer.learning_rate
            self._learning_rate = float(keras.ops.convert_to_numpy(rate))

    def stage_at(self, epoch: int):
        """The schedule entry in force at ``epoch`` (None before the first)."""
        num_blocks = len(block_context(self.model).block_names)
        active = None
        for entry in self._stages(num_blocks):
            if entry[0] <= epoch:
                active = entry
        return active, num_blocks

    def on_epoch_begin(self, epoch, logs=None):
        active, num_blocks = self.stage_at(epoch)
        if active is None or active == self.current:
            return
        start, blocks, factor = active
        k = self._trainable_blocks(blocks, num_blocks)
        before = {id(v) for v in self.model.trainable_variables}
        apply_policy(self.model, FreezeBlocks(num_blocks - k), self.model.bn_mode)
        after = {id(v) for v in self.model.trainable_variables}
        if after != before or self.current is None:
            continue_training(self.model)  # the same optimizer, rebuilt in place
        if self._learning_rate is not None:
            self.model.optimizer.learning_rate = self._learning_rate * (factor or 1.0)
        self.current = active
        self.stage_epochs.append(epoch)
        if self.verbose:
            label = "head only" if k == 0 else ("all blocks" if k == num_blocks
                                                 else f"top {k} of {num_blocks} blocks")
            extra = f", lr x{factor:g}" if factor else ""
            _log.print_msg(f"\nStagedUnfreezing: epoch {epoch + 1}: training {label}{extra}")


class GradualUnfreezing(StagedUnfreezing):
    """ULMFiT's gradual unfreezing: one more block from the top every ``every`` epochs.

    Epochs ``[0, every)`` train the head only, then ``blocks_per_step`` more
    blocks become trainable every ``every`` epochs until all are.

    Args:
        every: Epochs per stage.
        blocks_per_step: Blocks unfrozen at each step.
        verbose: Print a line at each stage boundary.
    """

    def __init__(self, every: int = 1, blocks_per_step: int = 1, verbose: int = 1):
        every = check_int(every, "every", minimum=1)
        blocks_per_step = check_int(blocks_per_step, "blocks_per_step", minimum=1)
        super().__init__([(0, "head")], verbose=verbose)
        self.every = every
        self.blocks_per_step = blocks_per_step

    def _stages(self, num_blocks: int):
        stages = []
        step = 0
        while True:
            k = min(step * self.blocks_per_step, num_blocks)
            stages.append((step * self.every, k, None))
            if k == num_blocks:
                return stages
            step += 1
