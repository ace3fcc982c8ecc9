"""Generated images where the class is a shape in a random quadrant, offline.

``quadrant_shapes(n_per_class, ...)`` returns ``(x, y, quadrant, class_names)``:
``x`` float32 RGB images ``[N, size, size, 3]`` in 0..255, integer labels, and
the quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) where
each image's shape is. The process, fixed by ``seed``:

- a dark background of uniform noise (0 to 60 in each channel);
- one shape per image, its class: a filled ``square``, a ``cross`` (a plus
  sign) or a ``frame`` (the outline of a square), bright (200 to 255) in a
  random colour channel mix;
- its size is a fraction of the quadrant (0.5 to 0.8 of its side), at a
  random place inside a quadrant drawn uniformly.

Only the shape tells the class, and where it is is known: the set a saliency
method is checked on (does the heatmap peak in the right quadrant?).
"""

from __future__ import annotations

import numpy as np

from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.validation import check_int, is_int

SHAPES = ("square", "cross", "frame")


def _mask(shape: str, side: int) -> np.ndarray:
    m = np.zeros((side, side), bool)
    third = max(side // 3, 1)
    if shape == "square":
        m[:] = True
    elif shape == "cross":
        m[third:side - third, :] = True
        m[:, third:side - third] = True
    else:  # frame
        edge = max(side // 5, 1)
        m[:edge, :] = m[-edge:, :] = m[:, :edge] = m[:, -edge:] = True
    return m


def quadrant_shapes(n_per_class: int = 100, *, size: int = 32, seed: int = 0):
    """Images of a square, cross or frame in a random quadrant (see the module notes).

    Args:
        n_per_class: Images per shape.
        size: Image side in pixels (at least 16, even).
        seed: Seed of the whole process.

    Returns:
        ``(x, y, quadrant, class_names)``.
    """
    n_per_class = check_int(n_per_class, "n_per_class", minimum=1)
    if not is_int(size) or size < 16 or size % 2:
        raise InvalidArgumentError(format_message("size must be an even integer >= 16.",
                                                  received={"size": size}))
    rng = np.random.default_rng(seed)
    n = n_per_class * len(SHAPES)
    y = np.repeat(np.arange(len(SHAPES)), n_per_class)
    quadrant = rng.integers(0, 4, n)
    x = rng.uniform(0, 60, (n, size, size, 3)).astype("float32")
    half = size // 2
    for i in range(n):
        side = int(rng.integers(int(0.5 * half), int(0.8 * half) + 1))
        top = (quadrant[i] // 2) * half + int(rng.integers(0, half - side + 1))
        left = (quadrant[i] % 2) * half + int(rng.integers(0, half - side + 1))
        colour = rng.uniform(200, 255, 3) * rng.uniform(0.6, 1.0, 3)
        patch = x[i, top:top + side, left:left + side]
        patch[_mask(SHAPES[y[i]], side)] = colour
    order = rng.permutation(n)
    return x[order], y[order].astype("int32"), quadrant[order].astype("int32"), list(SHAPES)
