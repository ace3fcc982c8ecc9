"""Arrays ``(x, y)`` as a source."""

import numpy as np
import pytest

from kertransfer.data import load
from kertransfer.errors import DataError, LabelError

RNG = np.random.default_rng(0)


def _labels(n=20, classes=4):
    return np.arange(n) % classes


def test_grayscale_rank3_becomes_rgb_and_resized():
    x = RNG.integers(0, 256, (20, 10, 12), dtype=np.uint8)
    bundle = load((x, _labels()), image_size=(16, 16), batch_size=8, shuffle=False)
    images, labels = next(iter(bundle.train))
    assert images.shape == (8, 16, 16, 3) and images.dtype.name == "float32"
    assert labels.dtype.name == "int32"
    arr = images.numpy()
    np.testing.assert_array_equal(arr[..., 0], arr[..., 1])
    np.testing.assert_array_equal(arr[..., 0], arr[..., 2])
    assert arr.min() >= 0 and arr.max() <= 255
    assert bundle.class_names == ["0", "1", "2", "3"]


def test_rgba_drops_alpha_and_same_size_is_untouched():
    x = RNG.integers(0, 256, (20, 16, 16, 4)).astype(np.float64)
    bundle = load((x, _labels()), image_size=(16, 16), shuffle=False)
    got, labels = bundle.as_numpy("train")
    np.testing.assert_allclose(got, x[..., :3].astype(np.float32))
    np.testing.assert_array_equal(labels, _labels())


def test_labels_of_shape_n1_and_class_names():
    x = RNG.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    bundle = load((x, _labels()[:, None]), image_size=(8, 8), class_names=list("abcdef"))
    assert bundle.num_classes == 6 and bundle.class_names[:2] == ["a", "b"]


def test_labels_outside_classes_are_named():
    x = np.zeros((5, 8, 8), np.uint8)
    with pytest.raises(LabelError, match=r"\[-1, 7\].*Received"):
        load((x, np.array([0, 1, -1, 7, 1])), image_size=(8, 8), class_names=["a", "b"])


def test_float_labels_that_are_not_integers():
    x = np.zeros((3, 8, 8), np.uint8)
    with pytest.raises(LabelError, match="integer.*Received"):
        load((x, np.array([0.5, 1.0, 0.0])), image_size=(8, 8))


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros((5, 8, 8), np.uint8), np.zeros(4, int), "5 images but `y` has 4.*Received"),
        (np.zeros((5, 8), np.uint8), np.zeros(5, int), "wrong shape.*Received"),
        (np.zeros((5, 8, 8, 2), np.uint8), np.zeros(5, int), "wrong shape.*Received"),
        (np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0, int), "empty.*Received"),
        (np.array([["a"]]), np.zeros(1, int), "numeric.*Received"),
        (np.zeros((5, 8, 8), np.uint8), np.zeros((5, 3)), "argmax.*Received"),
    ],
)
def test_malformed_arrays(x, y, match):
    with pytest.raises(DataError, match=match):
        load((x, y), image_size=(8, 8))


def test_warns_on_zero_one_images():
    x = RNG.random((8, 8, 8, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match="0..1"):
        load((x, np.arange(8) % 2), image_size=(8, 8))


def test_samples_per_class_warns_when_a_class_is_short():
    x = np.zeros((12, 8, 8), np.uint8)
    y = np.array([0] * 9 + [1] * 3)
    with pytest.warns(UserWarning, match="fewer than samples_per_class=5"):
        bundle = load((x, y), image_size=(8, 8), samples_per_class=5)
    assert bundle.class_counts["train"] == [5, 3]
