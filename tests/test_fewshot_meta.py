"""Episodic meta-training (prototypical networks) of a backbone's features."""

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.errors import DataError, InvalidArgumentError
from kertransfer.methods.fewshot import evaluate_episodes, meta_train
from kertransfer.methods.fewshot.episodic import EpisodeLogits

pytestmark = pytest.mark.backend_agnostic


def _channel_coded(levels, n_per_class, seed):
    """16x16 images whose class is the level of the red channel; green and blue are loud
    per-image noise that a random network's features mix in."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(levels)), n_per_class)
    x = np.empty((len(y), 16, 16, 3), "float32")
    x[..., 0] = np.asarray(levels, "float32")[y][:, None, None] + rng.normal(0, 6, (len(y), 16, 16))
    x[..., 1:] = rng.uniform(0, 255, (len(y), 1, 1, 2)) + rng.normal(0, 30, (len(y), 16, 16, 2))
    return np.clip(x, 0, 255), y


def test_episode_logits_are_scaled_negative_squared_distances_to_prototypes():
    features = keras.Sequential([keras.Input((1, 1, 2)), keras.layers.Reshape((2,))])
    layer = EpisodeLogits(features, ways=2, shots=2, queries=1, scale=3.0)
    support = [[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.0, -3.0]]  # class 0 twice, class 1 twice
    query = [[2.0, 2.0], [-1.0, -1.0]]
    episode = np.asarray(support + query, "float32").reshape(1, 6, 1, 1, 2)
    logits = keras.ops.convert_to_numpy(layer(episode))
    unit = lambda v: np.asarray(v) / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    s = unit(support)
    prototypes = np.stack([s[:2].mean(0), s[2:].mean(0)])
    expected = -3.0 * ((unit(query)[:, None] - prototypes[None]) ** 2).sum(-1)
    assert logits.shape == (1, 2, 2)
    np.testing.assert_allclose(logits[0], expected, rtol=1e-5, atol=1e-6)


def test_meta_training_makes_prototypes_separate_new_classes(tiny_backbone_name):
    base = _channel_coded([0, 50, 100, 150, 200], 20, seed=0)
    novel = _channel_coded([25, 75, 125, 175, 225], 20, seed=1)
    model = kt.build_transfer_model(tiny_backbone_name, 5, input_shape=(16, 16, 3), weights=None,
                                    freeze="none", bn="frozen")
    before = evaluate_episodes(model, *novel, ways=5, shots=1, queries=5, episodes=60).mean
    result = meta_train(model, base, ways=5, shots=2, queries=4, episodes=150,
                        episodes_per_epoch=50, learning_rate=3e-3, seed=0, verbose=0)
    after = evaluate_episodes(model, *novel, ways=5, shots=1, queries=5, episodes=60).mean
    assert after > before + 0.15, (before, after)
    assert len(result.history["loss"]) == 3 and result.best_epoch == 3
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.scale > 0 and result.model is model


def test_validation_keeps_the_weights_of_the_best_epoch(tiny_backbone_name):
    base = _channel_coded([0, 50, 100, 150, 200], 12, seed=2)
    val = _channel_coded([25, 75, 125, 175, 225], 12, seed=3)
    model = kt.build_transfer_model(tiny_backbone_name, 5, input_shape=(16, 16, 3), weights=None,
                                    freeze="none", bn="frozen")
    result = meta_train(model, base, ways=5, shots=2, queries=3, episodes=60,
                        episodes_per_epoch=20, learning_rate=1e-2, validation_data=val,
                        validation_episodes=30, seed=4, verbose=0)
    scores = result.history["val_accuracy"]
    assert len(scores) == 3 and result.best_epoch == int(np.argmax(scores)) + 1
    now = evaluate_episodes(model, *val, ways=5, shots=2, queries=3, episodes=30, seed=4).mean
    assert now == pytest.approx(max(scores))


class _Batches(keras.utils.PyDataset):
    """(x, y) batches of arrays; counts how many were read."""

    def __init__(self, x, y, batch):
        super().__init__()
        self.x, self.y, self.batch, self.read = x, y, batch, 0

    def __len__(self):
        return len(self.x) // self.batch

    def __getitem__(self, i):
        self.read += 1
        s = slice(i * self.batch, (i + 1) * self.batch)
        return self.x[s], self.y[s]


def test_streamed_data_is_drawn_from_a_bounded_pool(tiny_backbone_name):
    from kertransfer.methods.fewshot.episodic import _StreamPool

    x, y = _channel_coded([0, 50, 100, 150, 200], 30, seed=5)
    order = np.random.default_rng(0).permutation(len(y))
    stream = _Batches(x[order], y[order], batch=10)
    pool = _StreamPool(stream, "data", size=8, need=6, ways=5, rng=np.random.default_rng(0))
    assert all(len(items) <= 8 for items in pool.pool.values())
    assert stream.read < len(stream)  # filled before a whole pass
    for _ in range(2 * len(stream)):  # past the end: the stream restarts
        pool.refresh(np.random.default_rng(1))
    assert sorted(pool.pool) == [0, 1, 2, 3, 4]
    assert all(len(items) == 8 for items in pool.pool.values())
    few = _Batches(x[:16], y[:16], batch=4)  # class 0 alone, 16 images, read twice would be 32
    with pytest.raises(DataError, match="Only 0 classes of data have 20 images"):
        _StreamPool(few, "data", size=32, need=20, ways=1, rng=np.random.default_rng(0))
    model = kt.build_transfer_model(tiny_backbone_name, 5, input_shape=(16, 16, 3), weights=None,
                                    freeze="none")
    result = meta_train(model, _Batches(x[order], y[order], batch=10), ways=3, shots=1,
                        queries=2, episodes=4, pool_per_class=5, verbose=0)
    assert len(result.history["loss"]) == 1 and np.isfinite(result.history["loss"][0])


def test_meta_train_errors_name_the_argument(tiny_backbone_name):
    x, y = _channel_coded([0, 100, 200], 4, seed=6)
    model = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3), weights=None,
                                    freeze="none")
    with pytest.raises(DataError, match="Only 0 classes.*Received: ways=3"):
        meta_train(model, (x, y), ways=3, shots=2, queries=3, verbose=0)
    with pytest.raises(InvalidArgumentError, match="Received: ways=1"):
        meta_train(model, (x, y), ways=1, verbose=0)
    with pytest.raises(InvalidArgumentError, match="Received: learning_rate=0"):
        meta_train(model, (x, y), ways=3, shots=1, queries=1, learning_rate=0, verbose=0)
    with pytest.raises(InvalidArgumentError, match="labels= goes with an images array"):
        meta_train(model, (x, y), y, verbose=0)
    frozen = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3),
                                     weights=None, freeze="all")
    with pytest.raises(InvalidArgumentError, match="nothing to train"):
        meta_train(frozen, (x, y), ways=3, shots=1, queries=1, verbose=0)
    with pytest.raises(DataError, match="one label per image"):
        meta_train(model, x, y[:-1], ways=3, shots=1, queries=1, verbose=0)
