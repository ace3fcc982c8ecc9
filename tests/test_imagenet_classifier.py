"""The ImageNet classifier as a transfer model: real predictions, Grad-CAM on a real photo, LEEP."""

import os

import keras
import numpy as np
import pytest
import skimage.data

import kertransfer as kt
from kertransfer.errors import InvalidArgumentError
from kertransfer.insight.gradcam import grad_cam
from kertransfer.insight.scores import leep, logme
from kertransfer.models.imagenet import classifier


def _photo(name, size=224):
    image = getattr(skimage.data, name)().astype("float32")
    return keras.ops.convert_to_numpy(
        keras.ops.image.resize(image[None], (size, size), antialias=True)), image.shape


@pytest.fixture
def mobilenet(keras_home):
    return kt.build_imagenet_classifier("mobilenet")


def test_the_classifier_predicts_imagenet_as_keras_own_model(mobilenet, keras_home):
    photos = np.concatenate([_photo("chelsea")[0], _photo("coffee")[0]])
    p = mobilenet.predict(photos, verbose=0)
    assert p.shape == (2, 1000)
    assert list(p.argmax(-1)) == [285, 967]  # Egyptian cat, espresso
    # Keras fixes its cache folder when it is imported, so its own model reads the
    # installed file by path (the KERAS_HOME of this test is set after the import).
    reference = keras.applications.MobileNet(
        weights=str(keras_home / "models" / "mobilenet_1_0_224_tf.h5"))
    x = keras.applications.mobilenet.preprocess_input(photos.copy())
    np.testing.assert_allclose(p, reference.predict(x, verbose=0), atol=1e-5)
    assert mobilenet.get_layer("predictions").kernel.shape == (1024, 1000)


def test_grad_cam_on_the_cat_photo_lies_mostly_on_the_cat(mobilenet):
    x, (height, width, _) = _photo("chelsea")
    result = grad_cam(mobilenet, x)
    assert result.class_index[0] == 285
    heat = result.heatmaps[0]
    # A box drawn by hand around the cat in the 451x300 photo: everything left of
    # x = 370 (the blurred room on the right is background).
    box = np.zeros_like(heat, dtype=bool)
    box[:, : int(370 * heat.shape[1] / width)] = True
    inside = heat[box].sum() / heat.sum()
    assert inside >= 0.8  # 0.89 measured, with the box 82% of the image
    assert heat[box].mean() >= 1.5 * heat[~box].mean()  # 1.8x measured


def test_leep_reads_the_real_imagenet_probabilities(mobilenet):
    data = kt.data.load("fashion_mnist_subset", image_size=(96, 96), samples_per_class=6,
                        validation_split=0.0, test_split=0.0, seed=0, verbose=0)
    small = kt.build_imagenet_classifier("mobilenet", input_shape=(96, 96, 3))
    ranking = kt.rank_backbones([small], data, metrics=("leep", "logme"), verbose=0)
    row = ranking.rows[0]
    assert row["leep"] is not None and row["leep"] < 0  # LEEP is a log-likelihood
    # One pass gives both: the features of the pooling layer and the head's probabilities.
    x, y = data.as_numpy("train")
    probs = small.predict(x, verbose=0)
    pooled = keras.Model(small.inputs, small.get_layer("pool").output).predict(x, verbose=0)
    np.testing.assert_allclose(row["leep"], leep(probs, y), rtol=1e-4)
    np.testing.assert_allclose(row["logme"], logme(pooled, y), rtol=1e-4)


def test_a_classifier_that_is_not_pooling_and_one_layer_is_refused(monkeypatch):
    spec = kt.get_backbone_spec("mobilenet_v3_small")
    monkeypatch.setattr(classifier, "_HEADS", {})
    monkeypatch.setattr(classifier, "construct_with_imagenet",
                        lambda spec, shape, include_top, files: keras.applications.MobileNetV3Small(
                            weights=None, include_top=True))
    with pytest.raises(InvalidArgumentError,
                       match=r"not global pooling and one dense.*Received: backbone="):
        classifier.imagenet_head_weights(spec)


@pytest.mark.parametrize("name", ["densenet121", "efficientnet_v2_b0"])
def test_the_top_is_found_in_families_with_generated_layer_names(monkeypatch, name):
    # Two constructions of these families name their unnamed layers apart (activation_12 vs
    # activation_240): the top is read from the classifier itself, not by comparing names.
    spec = kt.get_backbone_spec(name)
    full = spec.construct((64, 64, 3), weights=None, include_top=True)
    keras.backend.clear_session(free_memory=False)  # the next construction is named apart
    spec.construct((64, 64, 3), weights=None)
    monkeypatch.setattr(classifier, "_HEADS", {})
    monkeypatch.setattr(classifier, "construct_with_imagenet", lambda *a, **k: full)
    kernel, bias = classifier.imagenet_head_weights(spec)
    dense = full.get_layer("predictions")
    np.testing.assert_array_equal(kernel, keras.ops.convert_to_numpy(dense.kernel))
    np.testing.assert_array_equal(bias, keras.ops.convert_to_numpy(dense.bias))


def test_the_head_is_read_once_per_process_until_its_file_changes(keras_home, monkeypatch):
    monkeypatch.setattr(classifier, "_HEADS", {})
    built = []
    real = classifier.construct_with_imagenet

    def counting(*args, **kwargs):
        built.append(kwargs.get("include_top"))
        return real(*args, **kwargs)

    monkeypatch.setattr(classifier, "construct_with_imagenet", counting)
    spec = kt.get_backbone_spec("mobilenet")
    first, _ = classifier.imagenet_head_weights(spec)
    reference = first.copy()
    first[:] = 0.0  # a copy: the next reader gets the file's values
    again, _ = classifier.imagenet_head_weights(spec)
    model = kt.build_imagenet_classifier("mobilenet", input_shape=(96, 96, 3))
    assert built == [True]  # the whole classifier is built once
    np.testing.assert_array_equal(again, reference)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("predictions").kernel), reference)
    path = keras_home / "models" / "mobilenet_1_0_224_tf.h5"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    classifier.imagenet_head_weights(spec)
    assert built == [True, True]  # a changed file is read again
