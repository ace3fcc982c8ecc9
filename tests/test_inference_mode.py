"""Frozen parts of a backbone run in inference mode, dropout included; trained parts do not."""

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.freezing.inference import is_inference_locked
from kertransfer.models.surgery import compute_features, feature_extractor

# Every registry family with dropout or stochastic depth inside the backbone.
FAMILIES = {
    "efficientnet_b0": (32, 32, 3),
    "efficientnet_v2_b0": (32, 32, 3),
    "transformer": (12, 4),
}


def _inputs(shape, n=4):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255 if len(shape) == 3 else 1, (n, *shape)).astype("float32")


def _stochastic_layers(backbone):
    return [layer for layer in backbone._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.Dropout) and layer.rate > 0]


# The transformer also under JAX; EfficientNets are slow to build there.
AGNOSTIC = pytest.mark.backend_agnostic


@pytest.mark.parametrize("name", [pytest.param(n, marks=AGNOSTIC) if n == "transformer" else n
                                  for n in FAMILIES])
def test_frozen_backbone_features_equal_cached_features(name):
    shape = FAMILIES[name]
    model = kt.build_transfer_model(name, 3, input_shape=shape, weights=None, freeze="all")
    assert _stochastic_layers(model.backbone), "the family has dropout inside"
    x = _inputs(shape)
    extractor = feature_extractor(model)
    during_fit = np.asarray(extractor(x, training=True))
    cached = compute_features(model, x, verbose=0)
    np.testing.assert_allclose(during_fit, cached, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["efficientnet_v2_b0",
                                  pytest.param("transformer", marks=AGNOSTIC)])
def test_blocks_that_train_keep_their_dropout(name):
    shape = FAMILIES[name]
    model = kt.build_transfer_model(name, 3, input_shape=shape, weights=None, freeze="none",
                                    bn="frozen")
    x = _inputs(shape)
    extractor = feature_extractor(model)
    a = np.asarray(extractor(x, training=True))
    b = np.asarray(extractor(x, training=True))
    assert np.abs(a - b).max() > 1e-4  # two different dropout masks
    kt.freeze(model, "all")
    a = np.asarray(extractor(x, training=True))
    b = np.asarray(extractor(x, training=True))
    np.testing.assert_array_equal(a, b)


@pytest.mark.backend_agnostic
def test_the_mode_follows_trainable_flags_set_by_hand_at_compile():
    model = kt.build_transfer_model("transformer", 3, input_shape=(12, 4), weights=None,
                                    freeze="none")
    drops = _stochastic_layers(model.backbone)
    assert not any(is_inference_locked(d) for d in drops)
    for layer in model.backbone.layers:
        layer.trainable = False
    model.compile("adam", "sparse_categorical_crossentropy")
    assert all(is_inference_locked(d) for d in drops)


def test_a_loaded_model_keeps_the_mode(tmp_path):
    model = kt.build_transfer_model("transformer", 3, input_shape=(12, 4), weights=None,
                                    freeze=1)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for a, b in zip(model.backbone._flatten_layers(), loaded.backbone._flatten_layers()):
        assert is_inference_locked(a) == is_inference_locked(b), a.name
