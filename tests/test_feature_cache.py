"""Feature caching: same result as training through the frozen backbone, stale-proof disk cache."""

import os

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.training import FeatureCache, train_head_on_features


def _pair(name):
    a = kt.build_transfer_model(name, 4, input_shape=(16, 16, 3), weights=None, freeze="all",
                                dropout=0.0, head_units=(8,))
    b = kt.build_transfer_model(name, 4, input_shape=(16, 16, 3), weights=None, freeze="all",
                                dropout=0.0, head_units=(8,))
    b.set_weights(a.get_weights())
    return a, b


@pytest.mark.backend_agnostic
def test_cached_head_training_equals_training_through_the_frozen_backbone(tiny_backbone_name,
                                                                          tiny_data):
    x, y = tiny_data
    cached, full = _pair(tiny_backbone_name)
    train_head_on_features(cached, (x, y), epochs=2, learning_rate=1e-2, batch_size=25,
                           shuffle=False, verbose=0)
    full.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    full.fit(x, y, epochs=2, batch_size=25, shuffle=False, verbose=0)
    for name in ("head_dense_0", "predictions"):
        for a, b in zip(cached.get_layer(name).get_weights(), full.get_layer(name).get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # The backbone did not move, and the head did.
    for a, b in zip(cached.backbone.get_weights(), full.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)


def _model(name, **kw):
    return kt.build_transfer_model(name, 4, input_shape=(16, 16, 3), weights=None, **kw)


def test_disk_cache_hits_and_invalidates(tmp_path, tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = _model(tiny_backbone_name)
    cache = FeatureCache(tmp_path)
    stored, hit = cache.features(model, (x, y), verbose=0)
    expected = kt.models.compute_features(model, x, verbose=0)
    assert not hit and stored.rows == 200 and stored.row_shape == (16,)
    np.testing.assert_allclose(stored.array(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(stored.labels, y)
    again, hit = cache.features(model, (x, y), verbose=0)
    assert hit and np.array_equal(again.array(), stored.array())
    assert [p.name for p in tmp_path.iterdir()] == [stored.path.name]  # nothing else left
    key = cache.key(model, (x, y))
    assert cache.key(model, (x[:-1], y[:-1])) != key          # other data
    assert cache.key(model, (x, (y + 1) % 4)) != key          # other labels
    assert FeatureCache(tmp_path, dtype="float16").key(model, (x, y)) != key  # other storage
    conv = model.backbone.get_layer("stem_conv")
    conv.set_weights([w + 1 for w in conv.get_weights()])
    assert cache.key(model, (x, y)) != key                    # other weights
    other = _model(tiny_backbone_name, pooling="max")
    other.set_weights(model.get_weights())
    assert cache.key(other, (x, y)) != cache.key(model, (x, y))  # other pooling
    assert [e["key"] for e in cache.entries()] == [key]
    assert cache.clear() == 1 and not cache.entries()


def test_stored_features_read_back_in_batches_and_half_precision(tmp_path, tiny_backbone_name,
                                                                 tiny_data):
    x, y = tiny_data
    model = _model(tiny_backbone_name)
    full, _ = FeatureCache(tmp_path / "a").features(model, (x, y), verbose=0)
    half, _ = FeatureCache(tmp_path / "b", dtype="float16").features(model, (x, y), verbose=0)
    assert half.nbytes * 2 == full.nbytes
    np.testing.assert_allclose(half.array().astype("float32"), full.array(), rtol=1e-2,
                               atol=1e-2)
    batches = full.batches(64, shuffle=True, seed=3)
    seen = [batches[i] for i in range(len(batches))]
    order = batches._order
    np.testing.assert_array_equal(np.concatenate([f for f, _ in seen]), full.array()[order])
    np.testing.assert_array_equal(np.concatenate([t for _, t in seen]), y[order])
    batches.on_epoch_end()
    assert not np.array_equal(order, batches._order)  # a new order each epoch


def test_a_failed_pass_leaves_no_entry_and_the_oldest_entries_are_evicted(tmp_path,
                                                                         tiny_backbone_name,
                                                                         tiny_data):
    x, y = tiny_data
    model = _model(tiny_backbone_name)
    calls = []

    def dies(batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return np.zeros((len(batch), 8), "float32")

    cache = FeatureCache(tmp_path, max_bytes=20_000)  # an entry is about 8,400 bytes
    with pytest.raises(KeyboardInterrupt):
        cache.features(model, (x, y), function=dies, key="k0", verbose=0)
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]

    def zeros(batch):
        return np.zeros((len(batch), 8), "float32")

    for key in ("k0", "k1"):
        cache.features(model, (x, y), function=zeros, key=key, verbose=0)
    os.utime(tmp_path / "k0" / "meta.json", (1e9, 1e9))
    os.utime(tmp_path / "k1" / "meta.json", (1e9 + 1, 1e9 + 1))
    assert cache.features(model, (x, y), key="k0", verbose=0)[1]  # a hit makes k0 recent
    cache.features(model, (x, y), function=zeros, key="k2", verbose=0)
    assert sorted(e["key"] for e in cache.entries()) == ["k0", "k2"]
    killed = tmp_path / ".tmp-k3.abc"  # what a killed pass left a day ago, and just now
    killed.mkdir()
    os.utime(killed, (1e9, 1e9))
    (tmp_path / ".tmp-k4.abc").mkdir()
    cache.evict()
    assert not killed.exists() and (tmp_path / ".tmp-k4.abc").exists()


def test_workers_sharing_a_folder_compute_each_entry_once(tmp_path, tiny_backbone_name,
                                                          tiny_data):
    import threading

    x, y = tiny_data
    model = _model(tiny_backbone_name)
    passes, results = [], []

    def slow(batch):
        passes.append(1)
        threading.Event().wait(0.01)
        return np.ones((len(batch), 4), "float32")

    def worker():
        stored, hit = FeatureCache(tmp_path).features(model, (x, y), function=slow, key="k",
                                                      verbose=0)
        results.append((stored.rows, hit))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [(200, False), (200, True), (200, True)]
    assert len(passes) == 4  # one pass: 4 batches of 64


def test_cache_command_lists_and_clears(tmp_path, tiny_backbone_name, tiny_data, capsys,
                                        monkeypatch):
    import json

    from kertransfer.cli import main

    x, y = tiny_data
    monkeypatch.setenv("KERTRANSFER_CACHE_DIR", str(tmp_path))
    stored, _ = FeatureCache().features(_model(tiny_backbone_name), (x, y), verbose=0)
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert stored.path.name in out and "200" in out and "1 entries" in out
    assert main(["cache", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["directory"] == str(tmp_path) and listed["entries"][0]["rows"] == 200
    (tmp_path / ".tmp-left-by-a-kill").mkdir()
    (tmp_path / ".some-key.lock").touch()  # left by a pass that failed
    assert main(["cache", "clear"]) == 0
    assert "Deleted 1 entries" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
    assert main(["cache", "list"]) == 0
    assert "No cached features" in capsys.readouterr().out
