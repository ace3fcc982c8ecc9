"""Grad-CAM: its arithmetic, its split of nested models, and where it points."""

import keras
import matplotlib.image
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.data import quadrant_shapes
from kertransfer.errors import InvalidArgumentError
from kertransfer.insight.gradcam import GradCamResult, grad_cam, save_overlays

agnostic = pytest.mark.backend_agnostic


def _model(name, size=32, **kwargs):
    return kt.build_transfer_model(name, 3, input_shape=(size, size, 3), weights=None,
                                   dropout=0.0, **kwargs)


def _quadrant_of_peak(heatmaps):
    half = heatmaps.shape[1] // 2
    peaks = [np.unravel_index(np.argmax(h), h.shape) for h in heatmaps]
    return np.array([(i // half) * 2 + (j // half) for i, j in peaks])


@agnostic
def test_maps_are_the_logit_weighted_feature_map_of_pool_and_dense(tiny_backbone_name):
    # Pooling then a dense layer: d logit_k / d A[h, w, c] = W[c, k] / (H W) everywhere,
    # so Grad-CAM is relu(A . W[:, k]), rescaled to a peak of 1.
    model = _model(tiny_backbone_name)
    x, _, _, _ = quadrant_shapes(2, size=32, seed=5)
    result = grad_cam(model, x, class_index=[0, 1, 2, 0, 1, 2])
    fmap = keras.Model(model.inputs, model.get_layer("pool").input).predict(x, verbose=0)
    kernel = model.get_layer("predictions").get_weights()[0]
    want = np.maximum(np.einsum("nhwc,nc->nhw", fmap, kernel[:, [0, 1, 2, 0, 1, 2]].T), 0)
    want /= np.maximum(want.max(axis=(1, 2), keepdims=True), 1e-12)
    np.testing.assert_allclose(result.coarse, want, atol=1e-4)
    assert result.heatmaps.shape == (6, 32, 32) and result.coarse.shape == (6, 8, 8)
    assert result.heatmaps.min() >= 0 and result.heatmaps.max() <= 1
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(result.probability, probs[np.arange(6), [0, 1, 2, 0, 1, 2]],
                               atol=1e-5)  # the softmax came back after the logits


def test_grad_cam_points_at_the_shape_and_writes_overlays(tiny_backbone_name, tmp_path):
    x, y, _, names = quadrant_shapes(100, size=32, seed=0)
    xt, _, quadrant, _ = quadrant_shapes(20, size=32, seed=1)
    keras.utils.set_random_seed(0)
    model = _model(tiny_backbone_name, freeze="none")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    result = grad_cam(model, xt)
    # The peak lies in the quadrant that holds the shape (0.9 measured at this seed).
    assert np.mean(_quadrant_of_peak(result.heatmaps) == quadrant) >= 0.75
    shown = grad_cam(model, xt[:3], out=tmp_path / "cams", names=["a", "b", "c"],
                     class_names=names)
    assert [p.name for p in shown.paths] == ["a.png", "b.png", "c.png"]
    assert all(p.stat().st_size > 0 for p in shown.paths)
    assert sorted(q.name for q in (tmp_path / "cams").iterdir()) == ["a.png", "b.png", "c.png"]


def test_inner_layers_and_bad_requests(tiny_backbone_name):
    model = _model(tiny_backbone_name)
    x, _, _, _ = quadrant_shapes(1, size=32, seed=5)
    # A layer inside the nested backbone: no "Graph disconnected".
    inner = grad_cam(model, x, layer="block1_conv")
    assert inner.coarse.shape == (3, 16, 16) and inner.layer == "block1_conv"
    np.testing.assert_array_equal(inner.class_index, model.predict(x, verbose=0).argmax(-1))
    with pytest.raises(InvalidArgumentError, match=r"block1_conv.*Received: layer='block1_cnv'"):
        grad_cam(model, x, layer="block1_cnv")
    with pytest.raises(InvalidArgumentError, match=r"0 to 2.*Received: class_index=3"):
        grad_cam(model, x, class_index=3)
    two = kt.build_transfer_model(tiny_backbone_name, {"digit": 10, "parity": 2},
                                  input_shape=(32, 32, 3), weights=None)
    with pytest.raises(InvalidArgumentError, match=r"several heads.*Received: head=None"):
        grad_cam(two, x)
    assert grad_cam(two, x, head="parity").coarse.shape == (3, 8, 8)


def test_a_one_unit_sigmoid_head_explains_its_positive_class(tiny_backbone_name):
    # One output: by default its logit (the positive class, 1) is explained, whatever
    # the prediction; class 0 (negative) is explained by the negated logit.
    model = kt.build_transfer_model(tiny_backbone_name, 1, activation="sigmoid",
                                    input_shape=(32, 32, 3), weights=None, dropout=0.0)
    x, _, _, _ = quadrant_shapes(2, size=32, seed=5)
    fmap = keras.Model(model.inputs, model.get_layer("pool").input).predict(x, verbose=0)
    kernel = model.get_layer("predictions").get_weights()[0][:, 0]
    p = model.predict(x, verbose=0)[:, 0]

    def cam(sign):
        want = np.maximum(sign * np.einsum("nhwc,c->nhw", fmap, kernel), 0)
        return want / np.maximum(want.max(axis=(1, 2), keepdims=True), 1e-12)

    positive = grad_cam(model, x)
    np.testing.assert_array_equal(positive.class_index, np.ones(6))
    np.testing.assert_allclose(positive.probability, p, atol=1e-5)
    np.testing.assert_allclose(positive.coarse, cam(1.0), atol=1e-4)
    negative = grad_cam(model, x, class_index=0)
    np.testing.assert_array_equal(negative.class_index, np.zeros(6))
    np.testing.assert_allclose(negative.probability, 1 - p, atol=1e-5)
    np.testing.assert_allclose(negative.coarse, cam(-1.0), atol=1e-4)
    with pytest.raises(InvalidArgumentError, match=r"0 to 1 \(a one-unit sigmoid.*Received"):
        grad_cam(model, x, class_index=2)


def _plain_cnn(size=32, classes=3):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_a")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name="plain")


def test_any_keras_image_classifier_is_explained():
    from kertransfer.insight import gradcam

    x, y, _, _ = quadrant_shapes(100, size=32, seed=0)
    xt, _, quadrant, _ = quadrant_shapes(20, size=32, seed=1)
    keras.utils.set_random_seed(0)
    model = _plain_cnn()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    result = grad_cam(model, xt)
    assert result.layer == "conv_b" and result.coarse.shape == (60, 16, 16)
    assert np.mean(_quadrant_of_peak(result.heatmaps) == quadrant) >= 0.75
    probs = model.predict(xt, verbose=0)
    np.testing.assert_allclose(result.probability, probs.max(axis=-1), atol=1e-5)
    # The split is made once per model and layer: a second call traces nothing new.
    split = gradcam._SPLITS[model][None]
    grad_cam(model, xt[:2])
    assert gradcam._SPLITS[model][None] is split
    assert grad_cam(model, xt[:2], layer="conv_a").coarse.shape == (2, 32, 32)
    with pytest.raises(InvalidArgumentError, match=r"conv_a.*Received: layer='conv_c'"):
        grad_cam(model, xt[:2], layer="conv_c")
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(InvalidArgumentError, match=r"no layer with a spatial output"):
        grad_cam(dense, np.zeros((1, 8, 8, 3), "float32"))


def test_each_overlay_shows_its_own_image_and_heatmap(tmp_path):
    images = np.stack([np.zeros((16, 16, 3)), np.full((16, 16, 3), 255.0), np.zeros((16, 16, 3))])
    heat = np.zeros((3, 16, 16), "float32")
    heat[2] = 1.0  # the last image: dark under a hot heatmap
    result = GradCamResult(heat, heat, np.array([0, 1, 0]), np.array([0.2, 0.9, 0.4]), "x", [])
    paths = save_overlays(images, result, tmp_path, class_names=["dark", "light"])
    centre = [matplotlib.image.imread(p)[120, 120, :3] for p in paths]
    assert centre[1].mean() > centre[0].mean() + 0.3  # the white image, not the first one again
    assert centre[2][0] > centre[0][0] + 0.2          # jet's red at 1.0 over the third
    assert len({p.read_bytes() for p in paths}) == 3  # the titles differ too
