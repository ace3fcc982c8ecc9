"""Few-shot classifiers on fixed features, and N-way K-shot episodes."""

import math

import numpy as np
import pytest

import kertransfer as kt
from kertransfer.errors import DataError, InvalidArgumentError
from kertransfer.methods.fewshot import (
    LogisticClassifier,
    PrototypeClassifier,
    evaluate_episodes,
    extract_features,
)

pytestmark = pytest.mark.backend_agnostic


def _identity(x):
    return np.asarray(x).reshape(len(x), -1)


def _as_images(features):
    return np.asarray(features, "float32").reshape(len(features), 1, 1, -1)


def test_prototype_classifier_on_a_hand_built_case():
    support = _as_images([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    labels = np.array(["a", "a", "b", "b"])
    clf = PrototypeClassifier(_identity).fit(support, labels)
    np.testing.assert_array_equal(clf.classes_, ["a", "b"])
    np.testing.assert_allclose(clf.prototypes_, [[0.9, 0.3], [-0.3, 0.9]], atol=1e-6)
    # A query of norm 5 is normalised to (0.6, 0.8): squared distances 0.34 and 0.82.
    query = _as_images([[3.0, 4.0]])
    p = clf.predict_proba(query)[0]
    expected = np.exp([-0.34, -0.82]) / np.exp([-0.34, -0.82]).sum()
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    assert clf.predict(query).tolist() == ["a"]
    assert clf.score(_as_images([[0.0, 2.0]]), ["b"]) == 1.0
    # Without normalisation the raw means are the prototypes.
    raw = PrototypeClassifier(_identity, normalize=False).fit(_as_images([[0, 0], [4, 0]]),
                                                               [0, 1])
    assert raw.predict(_as_images([[1.0, 0.0], [3.0, 0.0]])).tolist() == [0, 1]


def test_logistic_classifier_and_unfitted_errors():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal((3, 0), 0.3, (20, 2)), rng.normal((0, 3), 0.3, (20, 2))])
    y = np.repeat([5, 7], 20)
    clf = LogisticClassifier(_identity).fit(_as_images(x), y)
    assert clf.score(_as_images(x), y) == 1.0
    assert clf.predict_proba(_as_images(x)).shape == (40, 2)
    with pytest.raises(InvalidArgumentError, match=r"not fitted.*Received"):
        PrototypeClassifier(_identity).predict(_as_images(x))
    with pytest.raises(DataError, match=r"two classes.*Received"):
        PrototypeClassifier(_identity).fit(_as_images(x), np.zeros(40))
    with pytest.raises(InvalidArgumentError, match=r"C must.*Received: C=0"):
        LogisticClassifier(_identity, C=0)


def _coloured(n_per_class, classes, rng):
    """Images whose class is their colour, plus noise."""
    y = np.repeat(np.arange(classes), n_per_class)
    palette = rng.uniform(0, 255, (classes, 3))
    x = palette[y][:, None, None, :] + rng.normal(0, 20, (len(y), 8, 8, 3))
    return np.clip(x, 0, 255).astype("float32"), y


@pytest.mark.parametrize("classifier", ["prototype", "logistic"])
def test_episodes_score_informative_features_above_noise(classifier):
    rng = np.random.default_rng(1)
    x, y = _coloured(20, 8, rng)
    good = evaluate_episodes("pixels", x, y, ways=5, shots=1, queries=5, episodes=40,
                             classifier=classifier, normalize=False)
    assert good.mean > 0.9 and len(good.accuracies) == 40
    sd = np.std(good.accuracies, ddof=1)
    assert good.ci95 == pytest.approx(1.96 * sd / math.sqrt(40))
    noise = evaluate_episodes(lambda imgs: rng.normal(size=(len(imgs), 16)), x, y, ways=5,
                              shots=1, queries=5, episodes=40, classifier=classifier)
    assert noise.mean < 0.45  # chance is 0.2
    assert "5-way 1-shot" in str(good)


def test_episodes_on_a_transfer_model_use_its_pooled_features(tiny_backbone_name):
    rng = np.random.default_rng(2)
    x, y = _coloured(6, 5, rng)
    x = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)  # 16x16
    model = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3), weights=None)
    f = extract_features(model, x)
    assert f.shape == (30, model.get_layer("pool").output.shape[-1])
    result = evaluate_episodes(model, x, y, ways=3, shots=2, queries=3, episodes=5)
    assert 0.0 <= result.mean <= 1.0 and result.shots == 2


def test_features_are_the_same_from_direct_calls_and_from_predict(tiny_backbone_name):
    # The first batches are direct calls, the rest go through predict: both in
    # inference mode, so trainable BatchNorm uses its moving statistics.
    import keras

    x = np.random.default_rng(3).uniform(0, 255, (30, 16, 16, 3)).astype("float32")
    model = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3), weights=None,
                                    freeze="none", bn="trainable")
    for layer in model.backbone.layers:  # statistics far from a batch's own
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 5.0, "float32"))
    f = extract_features(model, x, batch_size=4)  # 8 batches: 4 direct, 4 by predict
    pool = keras.Model(model.inputs, model.get_layer("pool").output)
    np.testing.assert_allclose(f, pool.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_episode_arguments_are_checked():
    x, y = _coloured(3, 4, np.random.default_rng(3))
    with pytest.raises(DataError, match=r"Only 0 classes have 6 images.*Received"):
        evaluate_episodes("pixels", x, y, ways=2, shots=1, queries=5)
    with pytest.raises(InvalidArgumentError, match=r"shots.*Received: shots=0"):
        evaluate_episodes("pixels", x, y, shots=0)
    with pytest.raises(InvalidArgumentError, match=r"classifier.*Received: classifier='knn'"):
        evaluate_episodes("pixels", x, y, ways=2, shots=1, queries=1, classifier="knn")
    with pytest.raises(InvalidArgumentError, match=r"pixels.*Received: backbone='resnet'"):
        evaluate_episodes("resnet", x, y, ways=2, shots=1, queries=1)
