"""An embedded time-series source and target: generated waveforms, offline.

``waveforms(domain, n_per_class, ...)`` returns ``(x, y, class_names)`` with
``x`` of shape ``[N, timesteps, 1]`` (float32) and integer labels. The
process, fixed by ``seed``:

- each series is one window of ``timesteps`` samples over ``t`` in [0, 1);
- its class fixes the wave shape; frequency, phase and amplitude are drawn
  per series, and Gaussian noise is added;
- the **source** domain has six shapes (sine, square, triangle, sawtooth,
  chirp, damped sine), frequencies of 1 to 4 cycles per window, amplitude
  0.5 to 1.5 and noise 0.2;
- the **target** domain has four of them (sine, square, triangle,
  sawtooth) under a shift: faster waves (3 to 8 cycles), a random linear
  drift of up to ±1 across the window, a random offset, and noise 0.4.

A model trained on the source has seen the shapes; the target asks it to
recognise them at other speeds, under drift and more noise, from few
labels: the usual situation transfer learning is for.
"""

from __future__ import annotations

import numpy as np

from kertransfer.validation import check_choice, check_int

SOURCE_CLASSES = ("sine", "square", "triangle", "sawtooth", "chirp", "damped_sine")
TARGET_CLASSES = ("sine", "square", "triangle", "sawtooth")
DOMAINS = ("source", "target")


def _wave(shape: str, t: np.ndarray, freq: np.ndarray, phase: np.ndarray) -> np.ndarray:
    angle = 2 * np.pi * freq * t + phase
    cycle = (angle / (2 * np.pi)) % 1.0
    if shape == "sine":
        return np.sin(angle)
    if shape == "square":
        return np.where(cycle < 0.5, 1.0, -1.0)
    if shape == "triangle":
        return 4 * np.abs(cycle - 0.5) - 1
    if shape == "sawtooth":
        return 2 * cycle - 1
    if shape == "chirp":  # frequency rising from freq to 3 freq across the window
        return np.sin(2 * np.pi * freq * (t + t * t) + phase)
    if shape == "damped_sine":
        return np.sin(angle) * np.exp(-3 * t)
    raise ValueError(shape)


def waveforms(domain: str = "source", n_per_class: int = 200, *, timesteps: int = 64,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generated series of the ``"source"`` or ``"target"`` domain (see the module notes).

    Args:
        domain: ``"source"`` (six shapes) or ``"target"`` (four, shifted).
        n_per_class: Series per class.
        timesteps: Samples per series.
        seed: Seed of the generation.

    Returns:
        ``(x, y, class_names)``: ``x`` float32 ``[N, timesteps, 1]`` in class
        order, ``y`` int32 ``[N]``.
    """
    check_choice(domain, "domain", DOMAINS, what="waveform domain")
    n_per_class = check_int(n_per_class, "n_per_class", minimum=1)
    timesteps = check_int(timesteps, "timesteps", minimum=1)
    rng = np.random.default_rng([seed, DOMAINS.index(domain)])
    classes = SOURCE_CLASSES if domain == "source" else TARGET_CLASSES
    t = np.arange(timesteps, dtype="float64")[None, :] / timesteps
    xs, ys = [], []
    for label, shape in enumerate(classes):
        n = n_per_class
        if domain == "source":
            freq, noise = rng.uniform(1, 4, (n, 1)), 0.2
            drift, offset = np.zeros((n, 1)), np.zeros((n, 1))
        else:
            freq, noise = rng.uniform(3, 8, (n, 1)), 0.4
            drift, offset = rng.uniform(-1, 1, (n, 1)), rng.uniform(-0.5, 0.5, (n, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, 1))
        amplitude = rng.uniform(0.5, 1.5, (n, 1))
        x = amplitude * _wave(shape, t, freq, phase) + drift * t + offset
        xs.append(x + rng.normal(0, noise, x.shape))
        ys.append(np.full(n, label))
    x = np.concatenate(xs).astype("float32")[..., None]
    return x, np.concatenate(ys).astype("int32"), list(classes)
