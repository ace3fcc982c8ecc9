"""The learning-rate range test."""

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.errors import InvalidArgumentError
from kertransfer.training import lr_find


@pytest.mark.backend_agnostic
def test_lr_find_suggests_a_sane_rate_and_leaves_the_model_alone(tmp_path, tiny_backbone_name,
                                                                  tiny_data):
    x, y = tiny_data
    batches = [(x[i:i + 25], y[i:i + 25]) for i in range(0, 200, 25)]
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="none", bn="trainable")
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)  # the optimizer has state now
    weights = [w.copy() for w in model.get_weights()]
    opt_state = [np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables]
    result = lr_find(model, batches, steps=60, end_learning_rate=1e4, plot=tmp_path / "lr.png",
                     verbose=0)
    assert (tmp_path / "lr.png").stat().st_size > 0
    assert 1e-6 < result.suggestion < 1.0
    assert result.lrs == sorted(result.lrs) and len(result.lrs) == len(result.smoothed)
    assert len(result.lrs) < 60, "the loss diverges at huge rates and stops the test early"
    assert min(result.smoothed) < result.smoothed[0]
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    for v, before in zip(model.optimizer.variables, opt_state):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), before)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_lr_find_rejects_bad_arguments(tiny_backbone_name):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    with pytest.raises(InvalidArgumentError,
                       match="Received: start_learning_rate=1.0, end_learning_rate=0.1"):
        lr_find(model, [], start_learning_rate=1.0, end_learning_rate=0.1)
    with pytest.raises(InvalidArgumentError, match="Received: method='best'"):
        lr_find(model, [], method="best")
    with pytest.raises(InvalidArgumentError, match="no batch"):
        lr_find(model, [], plot=None, verbose=0)


def test_suggestions_on_a_known_curve():
    from kertransfer.training.lr_find import _suggest

    lrs = np.logspace(-6, 0, 121)  # 0.05 decades a step
    x = np.log10(lrs)
    # Flat up to 1e-4, then a tanh drop steepest at 1e-3, then a rise past 1e-1.
    loss = np.where(x <= -4, 2.0, 1.5 - 0.5 * np.tanh(2 * (x + 3)))
    loss = loss + np.where(x > -1, 5 * (x + 1) ** 2, 0.0)
    got = _suggest(lrs, loss)
    best = int(np.argmin(loss))
    assert x[best] == pytest.approx(-1, abs=0.051)
    assert np.log10(got["steep"]) == pytest.approx(-3, abs=0.051)  # the steepest descent
    assert got["minimum"] == pytest.approx(lrs[best] / 10)
    # fastai's valley: 2/3 down the longest decreasing run (from 1e-4 to the minimum).
    start = int(np.flatnonzero(x <= -4)[-1])
    assert got["valley"] == pytest.approx(lrs[start + (best - start) * 2 // 3])
    assert 1e-3 < got["valley"] < lrs[best]


def test_lr_find_writes_no_file_unless_asked(tmp_path, monkeypatch, tiny_backbone_name,
                                             tiny_data):
    x, y = tiny_data
    monkeypatch.chdir(tmp_path)
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    result = lr_find(model, [(x[:25], y[:25])], steps=5, verbose=0)
    assert result.plot is None and list(tmp_path.iterdir()) == []


def test_a_pass_s_smaller_last_batch_is_skipped(tiny_backbone_name, tiny_data, monkeypatch):
    # A smaller batch would compile the train step again for one step.
    x, y = tiny_data
    sizes = []
    original = keras.Model.train_on_batch

    def recording(self, x, y=None, **kwargs):
        sizes.append(len(x))
        return original(self, x, y, **kwargs)

    monkeypatch.setattr(keras.Model, "train_on_batch", recording)
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="none")
    result = lr_find(model, (x[:70], y[:70]), batch_size=32, steps=7, verbose=0)
    assert sizes == [32] * 7 and len(result.lrs) == 7
    # Data that never fills the first batch's size again is taken as it comes.
    sizes.clear()
    batches = [(x[:8], y[:8])] + [(x[i:i + 4], y[i:i + 4]) for i in range(0, 40, 4)]
    result = lr_find(model, batches, steps=5, verbose=0)
    assert sizes[0] == 8 and len(sizes) == len(result.lrs) >= 1
