"""The head-then-unfreeze recipe's moving parts, written once.

Every two-phase procedure in kertransfer (`kertransfer.fine_tune`, a
`kertransfer.TransferHyperModel` trial, `kertransfer.callbacks.StagedUnfreezing`,
the joint phase of LwF) is made of the same steps, and they all take them
from here:

- `phase_optimizer`: the optimizer of a run, from a name or an instance, with
  discriminative rates per block when asked (one rule for every caller);
- `adopt_head_state`: after the head trained as its own model on cached
  features, the full model's optimizer goes on from the head's state;
- `continue_training`: after the trainable set changed, the *same* optimizer
  is rebuilt in place on the new set (moments and step counts of what trained
  are kept, newly trainable variables start as a fresh optimizer would start
  them), the phase's learning rate is set, and the step functions retrace;
- `unfreeze_top`: the usual transition, the top blocks made trainable with a
  BatchNorm mode, then `continue_training`.
"""

from __future__ import annotations

from typing import Any

import keras

from kertransfer.errors import FreezeError
from kertransfer.freezing.apply import apply_policy, reset_step_functions
from kertransfer.freezing.policies import FreezeBlocks
from kertransfer.freezing.protocol import block_context
from kertransfer.training.discriminative import DiscriminativeMixin, discriminative
from kertransfer.training.optimizers import (
    build_optimizer,
    copy_optimizer_state,
    make_optimizer,
    rebuild_optimizer,
)
from kertransfer.validation import check_int, check_number


def phase_optimizer(optimizer: Any, learning_rate: Any = None, *, decay: float | None = None,
                    model=None, copy: bool = False) -> keras.optimizers.Optimizer:
    """The optimizer of a run: `kertransfer.training.optimizers.make_optimizer`, then
    discriminative rates when ``decay`` is given (> 1 slows each block down by ``decay``;
    ``None`` or 1 leaves one rate).

    ``model`` binds a discriminative optimizer to its blocks now (needed when
    another model than a transfer model, e.g. a head on cached features, trains
    with it). ``copy`` returns a new optimizer instead of the instance given.
    """
    decay = check_number(decay, "decay", minimum=0, exclusive_minimum=True, allow_none=True)
    opt = make_optimizer(optimizer, learning_rate, copy=copy)
    if decay is not None and decay != 1.0:
        opt = discriminative(opt, decay=decay)
    if model is not None and isinstance(opt, DiscriminativeMixin):
        opt.bind_model(model)
    return opt


def adopt_head_state(model, head, learning_rate: float | None = None) -> None:
    """Build ``model``'s optimizer on its trainable set with ``head``'s state in it.

    ``head`` trained ``model``'s own head layers as a separate model (on cached
    features): its moments, step counts and iteration count go on (its
    learning rate too, unless ``learning_rate`` is given). ``model`` may be
    another part of the same network (the top of a cut model): variables the
    head did not train start fresh.
    """
    build_optimizer(model.optimizer, model.trainable_variables, model)
    if head is not None:
        copy_optimizer_state(head.optimizer, model.optimizer)
    if learning_rate is not None:
        set_learning_rate(model.optimizer, learning_rate)


def set_learning_rate(optimizer, learning_rate: float) -> None:
    """Set a float learning rate (a schedule keeps its own course)."""
    lr = getattr(optimizer, "inner_optimizer", optimizer)._learning_rate
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return
    optimizer.learning_rate = float(learning_rate)


def continue_training(model, learning_rate: float | None = None) -> None:
    """Go on training ``model`` after its trainable set changed, with the same optimizer.

    The optimizer is rebuilt in place on the new trainable set (see
    `kertransfer.training.optimizers.rebuild_optimizer`), its rate set to
    ``learning_rate`` (unless None, or a schedule), and the step functions
    retrace at the next ``fit``. No recompilation: ``model.optimizer`` stays the
    object the model was compiled with.
    """
    rebuild_optimizer(model)
    if learning_rate is not None:
        set_learning_rate(model.optimizer, learning_rate)
    reset_step_functions(model)


def unfreeze_top(model, blocks: int | str, bn: str | None = None,
                 learning_rate: float | None = None) -> int:
    """Make the top ``blocks`` of the backbone trainable (``"all"``, or 0 for none), then
    `continue_training`. Returns the number of trainable blocks."""
    num_blocks = len(block_context(model).block_names)
    k = num_blocks if isinstance(blocks, str) and blocks == "all" else check_int(
        blocks, "blocks", minimum=0, maximum=num_blocks, error=FreezeError,
        fix=f'The backbone has {num_blocks} blocks; "all" unfreezes every one.')
    apply_policy(model, FreezeBlocks(num_blocks - k), model.bn_mode if bn is None else bn)
    continue_training(model, learning_rate)
    return k
