"""TFDS sources, with mocked data (no network)."""

import numpy as np
import pytest

from kertransfer.data import load
from kertransfer.errors import DataError, DataUnavailableError, InvalidArgumentError

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def mnist_bundles():
    with tfds.testing.mock_data(num_examples=60):
        first = load("tfds:mnist", image_size=(16, 16), batch_size=16, validation_split=0.2, seed=1)
        again = load("tfds:mnist", image_size=(16, 16), batch_size=16, validation_split=0.2, seed=1)
        other = load("tfds:mnist", image_size=(16, 16), batch_size=16, validation_split=0.2, seed=2)
        arrays = {
            name: {split: bundle.as_numpy(split) for split in ("train", "val")}
            for name, bundle in (("first", first), ("again", again), ("other", other))
        }
        batches = [(x.numpy(), y.numpy()) for x, y in first.train]
        val_batches = [(x.numpy(), y.numpy()) for x, y in first.val]
        fingerprints = [b.fingerprints for b in (first, again, other)]
    first.fingerprints_seen = fingerprints
    return first, arrays, batches, val_batches


def test_tfds_bundle_shapes_and_classes(mnist_bundles):
    bundle, _, batches, _ = mnist_bundles
    assert bundle.class_names == [str(i) for i in range(10)]
    assert bundle.counts == {"train": 48, "val": 12, "test": 0} and bundle.test is None
    images, labels = batches[0]
    assert images.shape == (16, 16, 16, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # gray -> RGB
    assert sum(len(y) for _, y in batches) == 48
    assert "tfds:mnist" in bundle.source


def test_tfds_fingerprints_name_the_dataset_and_the_split(mnist_bundles):
    first, again, other = mnist_bundles[0].fingerprints_seen
    assert first == again and first["train"] != first["val"]
    assert other["train"] != first["train"]  # another split of the same dataset


def test_tfds_split_is_stratified_and_seeded(mnist_bundles):
    bundle, arrays, _, val_batches = mnist_bundles
    val_x, val_y = arrays["first"]["val"]
    assert np.bincount(val_y, minlength=10).tolist() == bundle.class_counts["val"]
    np.testing.assert_array_equal(np.concatenate([y for _, y in val_batches]), val_y)
    np.testing.assert_array_equal(val_x, arrays["again"]["val"][0])
    assert not np.array_equal(val_x, arrays["other"]["val"][0])
    train_x = arrays["first"]["train"][0]
    flat_val = val_x.reshape(len(val_x), -1)
    flat_train = train_x.reshape(len(train_x), -1)
    assert not any((flat_train == row).all(axis=1).any() for row in flat_val)  # disjoint


def test_unknown_tfds_name():
    with pytest.raises(DataError, match="mnistt.*Received: source='tfds:mnistt'"):
        load("tfds:mnistt")


def test_empty_tfds_name():
    with pytest.raises(InvalidArgumentError, match="no dataset name.*Received"):
        load("tfds:")


def test_offline_download_failure_says_how_to_prepare(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(
        DataUnavailableError, match=r"tfds build mnist.*Received: source='tfds:mnist', data_dir="
    ) as info:
        load("tfds:mnist", data_dir=tmp_path)
    assert isinstance(info.value, ConnectionError)
    assert str(tmp_path) in str(info.value)
