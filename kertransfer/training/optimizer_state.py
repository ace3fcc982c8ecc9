"""Rebuilding an optimizer for a new trainable set while keeping its state.

Keras optimizers are built on a fixed list of variables and refuse others
("Unknown variable"), and recompiling loses their state. When the trainable
set changes inside one ``fit()``, kertransfer builds a fresh optimizer of the
same kind and configuration on the new set and copies, by name, every state
variable that still applies: the iteration count, the learning-rate variable,
and the slots (moments) of variables that were already training. Slots of
newly trainable variables start fresh. Slot variables are named after the
path of the variable they belong to, so matching by name is exact.
"""

from __future__ import annotations

import keras


def rebuild_optimizer(model, trainable_variables=None) -> keras.optimizers.Optimizer:
    """Give ``model`` a fresh optimizer built on its current trainable set, state kept.

    Args:
        model: A compiled Keras model.
        trainable_variables: The variables to build on (default: the model's
            trainable variables now).

    Returns:
        The new optimizer, already installed as ``model.optimizer``.
    """
    old = model.optimizer
    new = type(old).from_config(old.get_config())
    variables = list(model.trainable_variables if trainable_variables is None
                     else trainable_variables)
    bind = getattr(new, "bind_model", None)  # discriminative optimizers know the blocks
    if callable(bind):
        bind(model)
    new.build(variables)
    copy_optimizer_state(old, new)
    model.optimizer = new
    # The new trainable set is compiled in now (kt.lint checks against it).
    model.__dict__["_kt_compiled_trainable"] = tuple(v.path for v in variables)
    return new


def copy_optimizer_state(source, target) -> int:
    """Copy every state variable of ``source`` that ``target`` has too (by name and shape).

    Both must be built. Returns the number of variables copied.
    """
    if not getattr(source, "built", False):
        return 0
    by_name = {}
    for v in source.variables:
        by_name.setdefault(v.name, v)
    copied = 0
    for v in target.variables:
        src = by_name.get(v.name)
        if src is not None and tuple(src.shape) == tuple(v.shape):
            v.assign(src.value if hasattr(src, "value") else src)
            copied += 1
    return copied

