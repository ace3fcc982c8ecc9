"""Seeding what a call creates, without resetting the caller's random state.

Keras draws the seeds of new layers' initializers, dropout and random
augmentation layers from Python's ``random`` module. `seeded` seeds that
module (and numpy's global generator) for the duration of a block, then puts
the caller's states back: a ``seed=`` argument makes what the call creates
reproducible, and the caller's own random streams go on as if the call had
not happened. ``keras.utils.set_random_seed`` would instead reset them for
everything that follows (DESIGN trap 10).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed Python's and numpy's global generators inside the block (None: leave them)."""
    if seed is None:
        yield
        return
    with random_state_kept():
        random.seed(int(seed))
        np.random.seed(int(seed) % 2**32)
        yield


@contextlib.contextmanager
def random_state_kept() -> Iterator[None]:
    """Put Python's and numpy's global generators back as they were after the block: what
    it draws does not move the caller's streams."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
