"""Learning-rate schedules against the published formulas."""

import math

import keras
import numpy as np
import pytest

from kertransfer.errors import InvalidArgumentError
from kertransfer.training.schedules import OneCycle, SlantedTriangular, WarmupCosine

pytestmark = pytest.mark.backend_agnostic


def _values(schedule, steps):
    return np.array([float(keras.ops.convert_to_numpy(schedule(t))) for t in steps])


def test_slanted_triangular_matches_ulmfit_equation():
    T, cut_frac, ratio, lr = 200, 0.1, 32, 0.01
    cut = math.floor(T * cut_frac)

    def reference(t):
        p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
        return lr * (1 + p * (ratio - 1)) / ratio

    steps = list(range(0, T + 1, 7)) + [cut]
    np.testing.assert_allclose(_values(SlantedTriangular(lr, T, cut_frac, ratio), steps),
                               [reference(t) for t in steps], rtol=1e-5)


def test_warmup_cosine_shape():
    s = WarmupCosine(1e-3, total_steps=110, warmup_steps=10, min_learning_rate=1e-5)
    v = _values(s, range(0, 130))
    np.testing.assert_allclose(v[:11], np.linspace(0, 1e-3, 11), rtol=1e-5, atol=1e-9)
    assert np.all(np.diff(v[10:111]) <= 1e-9)  # non-increasing after warmup
    np.testing.assert_allclose(v[60], 1e-5 + (1e-3 - 1e-5) * 0.5, rtol=1e-4)
    np.testing.assert_allclose(v[110:], 1e-5, rtol=1e-5)


def test_one_cycle_matches_pytorch_cosine_policy():
    s = OneCycle(0.1, total_steps=100, pct_start=0.3, div_factor=10, final_div_factor=100)
    v = _values(s, [0, 15, 30, 65, 100])
    np.testing.assert_allclose(v, [0.01, 0.055, 0.1, 0.1 * 0.5 + 1e-4 * 0.5, 1e-4], rtol=1e-4)


@pytest.mark.parametrize("schedule", [
    WarmupCosine(1e-3, 50, 5, 1e-6), OneCycle(1e-2, 40), SlantedTriangular(1e-2, 60),
])
def test_serializable_and_usable_by_optimizers(schedule, tmp_path):
    clone = type(schedule).from_config(schedule.get_config())
    np.testing.assert_allclose(_values(clone, range(0, 60, 3)), _values(schedule, range(0, 60, 3)))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(schedule), "mse")
    model.fit(np.ones((8, 3)), np.zeros((8, 2)), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer.learning_rate if not hasattr(loaded.optimizer, "_learning_rate")
                else loaded.optimizer._learning_rate) is type(schedule)


@pytest.mark.parametrize("make, pattern", [
    (lambda: WarmupCosine(0, 10), "Received: learning_rate=0"),
    (lambda: WarmupCosine(1e-3, 10, warmup_steps=10), "Received: warmup_steps=10"),
    (lambda: WarmupCosine(1e-3, 10, min_learning_rate=1.0), "Received: min_learning_rate=1.0"),
    (lambda: OneCycle(1e-3, 10, pct_start=1.5), "Received: pct_start=1.5"),
    (lambda: SlantedTriangular(1e-3, 0), "Received: total_steps=0"),
])
def test_bad_arguments(make, pattern):
    with pytest.raises(InvalidArgumentError, match=pattern):
        make()


@pytest.mark.parametrize("cls, legacy", [
    (WarmupCosine, {"base_lr": 1e-3, "total_steps": 50, "warmup_steps": 5, "min_lr": 1e-5}),
    (OneCycle, {"max_lr": 1e-3, "total_steps": 50}),
    (SlantedTriangular, {"max_lr": 1e-3, "total_steps": 50}),
])
def test_configs_saved_under_former_argument_names_still_load(cls, legacy):
    loaded = cls.from_config(legacy)
    assert loaded.get_config()["learning_rate"] == 1e-3
    assert "base_lr" not in loaded.get_config() and "max_lr" not in loaded.get_config()
    if cls is WarmupCosine:
        assert loaded.get_config()["min_learning_rate"] == 1e-5
