"""Augmentation specs and where augmentation is applied."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from kertransfer.data import build_augmentation, load
from kertransfer.errors import InvalidArgumentError, InvalidTypeError

REPO = Path(__file__).resolve().parents[2]

# tf.data pipelines must also work when Keras runs on JAX (the tests_jax session).
pytestmark = pytest.mark.backend_agnostic


def _layer_types(layer):
    return [type(item).__name__ for item in layer.layers]


def test_none_and_false_mean_no_augmentation():
    assert build_augmentation(None) is None
    assert build_augmentation(False) is None
    assert build_augmentation({"rotation": 0, "flip": None}) is None


@pytest.mark.parametrize("spec", [True, "default"])
def test_default_augmentation(spec):
    layer = build_augmentation(spec, seed=1)
    assert _layer_types(layer) == ["RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast"]


def test_dict_picks_a_subset():
    layer = build_augmentation({"flip": "vertical", "zoom": 0.2}, seed=1)
    assert _layer_types(layer) == ["RandomFlip", "RandomZoom"]


def test_a_layer_is_used_as_is():
    layer = keras.layers.RandomFlip("horizontal")
    assert build_augmentation(layer) is layer


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(InvalidArgumentError, match=r"'rotate'.*'rotation'.*Received"):
        build_augmentation({"rotate": 0.1})


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ({"rotation": 1.5}, InvalidArgumentError, r"\[0, 1\).*Received"),
        ({"flip": "diagonal"}, InvalidArgumentError, "horizontal.*Received"),
        ("defualt", InvalidArgumentError, "Did you mean 'default'.*Received"),
        (3, InvalidTypeError, "Received: augment=3"),
    ],
)
def test_bad_specs(spec, error, match):
    with pytest.raises(error, match=match):
        build_augmentation(spec)


def test_augmentation_changes_train_but_never_val_or_test():
    bundle = load(
        "digits",
        image_size=(16, 16),
        batch_size=64,
        validation_split=0.2,
        test_split=0.1,
        augment={"rotation": 0.2, "zoom": 0.2, "contrast": 0.3},
        shuffle=False,
    )
    plain_train, _ = bundle.as_numpy("train")
    augmented = next(iter(bundle.train))[0].numpy()
    assert augmented.shape == (64, 16, 16, 3)
    assert np.abs(augmented - plain_train[:64]).mean() > 1.0
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    for split in ("val", "test"):
        expected, _ = bundle.as_numpy(split)
        for _ in range(2):
            got = np.concatenate([x.numpy() for x, _ in getattr(bundle, split)])
            np.testing.assert_array_equal(got, expected)


def test_a_user_sequential_works_in_the_pipeline():
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=3)])
    bundle = load("digits", image_size=(8, 8), batch_size=16, augment=augment)
    images, _ = next(iter(bundle.train))
    assert images.shape == (16, 8, 8, 3)


def test_augmentation_runs_in_tf_data_under_jax_backend():
    pytest.importorskip("jax")
    code = textwrap.dedent(
        """
        import keras
        from kertransfer.data import load
        assert keras.backend.backend() == "jax"
        bundle = load("digits", image_size=(16, 16), batch_size=8, augment=True, shuffle=False)
        images, labels = next(iter(bundle.train))
        plain, _ = bundle.as_numpy("train")
        assert images.shape == (8, 16, 16, 3), images.shape
        assert abs(images.numpy() - plain[:8]).mean() > 0.5
        print("ok")
        """
    )
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
