"""Graphs TensorFlow keeps for the life of a process, and letting go of them.

Every traced train step registers a ``tf.custom_gradient`` for good: Keras'
optimizer sums the gradients with ``ReplicaContext.all_reduce`` (also on one
device), whose gradient is a custom one, and TensorFlow's global gradient
registry keeps it and, in its closure, the whole traced graph. A process that
trains many models (a search, a loop of fine-tuning runs) grew by every run's
graphs. `releasing_graphs` around a run unregisters what the run added; a
graph already traced runs without its registry entry, so the model trains on
afterwards (a retrace registers anew). Under other backends nothing is kept,
and these do nothing.
"""

from __future__ import annotations

import contextlib
import functools

import keras


def _gradient_registry() -> dict | None:
    """TensorFlow's registry of gradient functions by op name (None under other
    backends, or a TensorFlow without it)."""
    if keras.backend.backend() != "tensorflow":
        return None
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError):
        return None
    return registry if isinstance(registry, dict) else None


def custom_gradients() -> set[str]:
    """The names of the ``tf.custom_gradient`` functions registered so far."""
    registry = _gradient_registry()
    return set() if registry is None else {
        name for name in registry if name.startswith("CustomGradient-")}


def release_custom_gradients(before: set[str]) -> int:
    """Unregister the ``tf.custom_gradient`` functions registered since ``before``;
    how many.

    Call it when the graphs traced since ``before`` are no longer traced into
    (see the module notes): a graph already traced runs without its entry.
    """
    registry = _gradient_registry()
    if registry is None:
        return 0
    stale = [name for name in list(registry)
             if name.startswith("CustomGradient-") and name not in before]
    for name in stale:
        registry.pop(name, None)
    return len(stale)


@contextlib.contextmanager
def releasing_graphs():
    """Unregister, on the way out, the custom gradients registered inside."""
    before = custom_gradients()
    try:
        yield
    finally:
        release_custom_gradients(before)


def releases_graphs(fn):
    """``fn`` run inside `releasing_graphs` (for the library's whole training runs)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with releasing_graphs():
            return fn(*args, **kwargs)

    return run
