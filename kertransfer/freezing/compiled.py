"""What a model's compiled steps were set up with: the one record, written in one place.

Keras collects the trainable variables when the train step is built, so a
flag flipped afterwards does not change what ``fit`` trains. Two facts about
the compiled state are kept on the model, outside Keras' tracking, and only
through these functions:

- the variables the compiled steps train (`record_step_variables`, written
  by `TransferModel.compile`, an in-place optimizer rebuild and a reset of the
  step functions; `kertransfer.lint` compares it with the trainable set now);
- whether kertransfer chose the compile settings (`mark_compiled_by_kertransfer`:
  `kertransfer.train` compiles such a model again, and `kertransfer.freeze`
  recompiles it without a warning; a model its user compiled keeps the user's
  settings).
"""

from __future__ import annotations

_STEP_VARIABLES = "_kt_compiled_trainable"
_OPTIMIZER = "_kt_compiled_optimizer"


def record_step_variables(model, variables=None) -> None:
    """Record the variables ``model``'s compiled steps train (default: its trainable ones)."""
    variables = model.trainable_variables if variables is None else variables
    model.__dict__[_STEP_VARIABLES] = tuple(v.path for v in variables)


def step_variables(model) -> tuple[str, ...] | None:
    """The paths recorded by `record_step_variables`, or None when nothing was recorded."""
    return model.__dict__.get(_STEP_VARIABLES)


def mark_compiled_by_kertransfer(model) -> None:
    """Record that kertransfer chose ``model``'s compile settings (loss, optimizer)."""
    model.__dict__[_OPTIMIZER] = getattr(model, "optimizer", None)


def compiled_by_kertransfer(model) -> bool:
    """Whether ``model``'s current optimizer is one kertransfer compiled it with."""
    optimizer = getattr(model, "optimizer", None)
    return optimizer is not None and model.__dict__.get(_OPTIMIZER) is optimizer
