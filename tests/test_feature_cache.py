"""Feature caching: same result as training through the frozen backbone, stale-proof disk cache."""

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


def test_disk_cache_hits_and_invalidates(tmp_path, tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    cache = FeatureCache(tmp_path)
    feats, hit = cache.load_or_compute(model, x, y, verbose=0)
    assert not hit and feats.shape == (200, 16)
    again, hit = cache.load_or_compute(model, x, y, verbose=0)
    assert hit and np.array_equal(again, feats)
    assert len(list(tmp_path.iterdir())) == 1  # no temporary file left behind
    key = cache.key(model, x, y)
    assert cache.key(model, x[:-1], y[:-1]) != key          # other data
    assert cache.key(model, x, (y + 1) % 4) != key          # other labels
    conv = model.backbone.get_layer("stem_conv")
    conv.set_weights([w + 1 for w in conv.get_weights()])
    assert cache.key(model, x, y) != key                    # other weights
    other = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, pooling="max")
    other.set_weights(model.get_weights())
    assert cache.key(other, x, y) != cache.key(model, x, y)  # other pooling
