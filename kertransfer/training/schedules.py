"""Learning-rate schedules used in transfer learning.

All three are ``keras.optimizers.schedules.LearningRateSchedule`` subclasses,
written with ``keras.ops`` (every backend), registered for serialization, and
evaluated per optimizer step (``optimizer.iterations``).

- `WarmupCosine`: linear warmup, then cosine decay to a floor.
- `OneCycle`: Smith's one-cycle policy as in fastai / PyTorch ``OneCycleLR``
  (cosine annealing up, then down to a tiny rate).
- `SlantedTriangular`: ULMFiT's slanted triangular rate (Howard & Ruder 2018).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kertransfer.validation import check_fraction, check_int, check_number

#: Argument names of kertransfer 0.x before one learning-rate vocabulary; configs saved
#: with them (inside ``.keras`` files) still load.
_RENAMED = {"base_lr": "learning_rate", "max_lr": "learning_rate",
            "min_lr": "min_learning_rate"}


class _Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Loads configs saved under the former argument names."""

    @classmethod
    def from_config(cls, config):
        return cls(**{_RENAMED.get(k, k): v for k, v in config.items()})


def _cosine(start, end, fraction):
    """Cosine interpolation from ``start`` (fraction 0) to ``end`` (fraction 1)."""
    return end + (start - end) * 0.5 * (1.0 + ops.cos(math.pi * fraction))


@keras.saving.register_keras_serializable(package="kertransfer")
class WarmupCosine(_Schedule):
    """Linear warmup from 0 to ``learning_rate``, then cosine decay to a floor.

    Args:
        learning_rate: Peak learning rate, reached at the end of the warmup.
        total_steps: Steps of the whole schedule; past it the rate stays at
            ``min_learning_rate``.
        warmup_steps: Steps of linear warmup (0 for none).
        min_learning_rate: Final learning rate.

    Examples:
        >>> s = WarmupCosine(1e-3, total_steps=100, warmup_steps=10)
        >>> [round(float(s(t)), 6) for t in (0, 5, 10, 100)]
        [0.0, 0.0005, 0.001, 0.0]
    """

    def __init__(self, learning_rate: float, total_steps: int, warmup_steps: int = 0,
                 min_learning_rate: float = 0.0):
        self.learning_rate = check_number(learning_rate, "learning_rate", minimum=0,
                                          exclusive_minimum=True)
        self.total_steps = check_int(total_steps, "total_steps", minimum=1)
        self.warmup_steps = check_int(
            warmup_steps, "warmup_steps", minimum=0, maximum=self.total_steps - 1,
            fix=f"Warmup takes part of the schedule: fewer steps than total_steps="
                f"{self.total_steps}.")
        self.min_learning_rate = check_number(
            min_learning_rate, "min_learning_rate", minimum=0, maximum=self.learning_rate,
            fix=f"The floor lies between 0 and the peak, learning_rate={self.learning_rate:g}.")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        warmup = self.learning_rate * step / warm
        decay_len = float(self.total_steps - self.warmup_steps)
        frac = ops.clip((step - self.warmup_steps) / decay_len, 0.0, 1.0)
        decay = _cosine(self.learning_rate, self.min_learning_rate, frac)
        if self.warmup_steps == 0:
            return decay
        return ops.where(step < self.warmup_steps, warmup, decay)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "min_learning_rate": self.min_learning_rate}


@keras.saving.register_keras_serializable(package="kertransfer")
class OneCycle(_Schedule):
    """One-cycle policy (Smith 2018), cosine annealing, as fastai and PyTorch.

    The rate rises from ``learning_rate / div_factor`` to ``learning_rate`` over the first
    ``pct_start`` of the steps, then falls to
    ``learning_rate / (div_factor * final_div_factor)``.

    Args:
        learning_rate: Peak learning rate.
        total_steps: Steps of the cycle.
        pct_start: Fraction of the steps spent rising.
        div_factor: ``learning_rate / initial rate``.
        final_div_factor: ``initial rate / final rate``.
    """

    def __init__(self, learning_rate: float, total_steps: int, pct_start: float = 0.25,
                 div_factor: float = 25.0, final_div_factor: float = 1e4):
        self.learning_rate = check_number(learning_rate, "learning_rate", minimum=0,
                                          exclusive_minimum=True)
        self.total_steps = check_int(total_steps, "total_steps", minimum=1)
        self.pct_start = check_fraction(pct_start, "pct_start", open_low=True)
        self.div_factor = check_number(div_factor, "div_factor", minimum=0,
                                       exclusive_minimum=True)
        self.final_div_factor = check_number(final_div_factor, "final_div_factor", minimum=0,
                                             exclusive_minimum=True)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        initial = self.learning_rate / self.div_factor
        final = initial / self.final_div_factor
        up_len = max(self.pct_start * self.total_steps, 1.0)
        down_len = max(self.total_steps - up_len, 1.0)
        up = _cosine(initial, self.learning_rate, ops.clip(step / up_len, 0.0, 1.0))
        down = _cosine(self.learning_rate, final, ops.clip((step - up_len) / down_len, 0.0, 1.0))
        return ops.where(step < up_len, up, down)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor}


@keras.saving.register_keras_serializable(package="kertransfer")
class SlantedTriangular(_Schedule):
    """ULMFiT's slanted triangular learning rate (Howard & Ruder 2018, eq. 3).

    ``cut = floor(T * cut_frac)``; ``p = t / cut`` while ``t < cut``, else
    ``1 - (t - cut) / (cut * (1 / cut_frac - 1))``;
    ``lr = learning_rate * (1 + p * (ratio - 1)) / ratio``.

    Args:
        learning_rate: Peak learning rate (the paper's eta_max).
        total_steps: Training steps ``T``.
        cut_frac: Fraction of the steps spent increasing.
        ratio: How much smaller the lowest rate is than ``learning_rate``.

    Examples:
        >>> s = SlantedTriangular(0.01, total_steps=100, cut_frac=0.1, ratio=32)
        >>> [round(float(s(t)), 7) for t in (0, 10, 100)]
        [0.0003125, 0.01, 0.0003125]
    """

    def __init__(self, learning_rate: float, total_steps: int, cut_frac: float = 0.1,
                 ratio: float = 32.0):
        self.learning_rate = check_number(learning_rate, "learning_rate", minimum=0,
                                          exclusive_minimum=True)
        self.total_steps = check_int(total_steps, "total_steps", minimum=1)
        self.cut_frac = check_fraction(cut_frac, "cut_frac", open_low=True)
        self.ratio = check_number(ratio, "ratio", minimum=0, exclusive_minimum=True)

    def __call__(self, step):
        t = ops.cast(step, "float32")
        cut = float(max(math.floor(self.total_steps * self.cut_frac), 1))
        rising = t / cut
        falling = 1.0 - (t - cut) / (cut * (1.0 / self.cut_frac - 1.0))
        p = ops.clip(ops.where(t < cut, rising, falling), 0.0, 1.0)
        return self.learning_rate * (1.0 + p * (self.ratio - 1.0)) / self.ratio

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "cut_frac": self.cut_frac, "ratio": self.ratio}
