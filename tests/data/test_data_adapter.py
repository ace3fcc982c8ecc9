"""The data adapter: every accepted form to batches, arrays or splits; others refused."""

import math

import keras
import numpy as np
import pytest

from kertransfer.data import adapter
from kertransfer.data.batches import as_batches, iterate, num_batches
from kertransfer.data.forms import form_of
from kertransfer.data.gathering import as_arrays, example_shape, gather
from kertransfer.data.memory import from_arrays
from kertransfer.data.training_data import as_training_data, as_validation_data, unaugmented_train
from kertransfer.errors import DataError, InvalidArgumentError, InvalidTypeError

agnostic = pytest.mark.backend_agnostic


def _xy(n=10):
    x = np.arange(n * 4, dtype="float32").reshape(n, 2, 2, 1)
    return x, (np.arange(n) % 2).astype("int32")


class _Pairs(keras.utils.PyDataset):
    def __init__(self, x, y, size=4):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return math.ceil(len(self.x) / self.size)

    def __getitem__(self, i):
        rows = slice(i * self.size, (i + 1) * self.size)
        y = {k: v[rows] for k, v in self.y.items()} if isinstance(self.y, dict) else self.y[rows]
        return self.x[rows], y


def _rows(batches):
    return [np.asarray(b[0] if isinstance(b, tuple) else b) for b in iterate(batches)]


@agnostic
def test_forms_are_named():
    x, y = _xy()
    assert form_of(x) == "images"
    assert form_of((x, y)) == "xy"
    assert form_of((x, {"a": y})) == "xy"
    assert form_of(_Pairs(x, y)) == "py_dataset"
    assert form_of(from_arrays(x.reshape(10, -1), y)) == "array_data"
    assert form_of([x[:5], x[5:]]) == "list"
    assert form_of([(x[:5], y[:5])]) == "list"
    assert form_of(iter([x])) == "iterator"


@agnostic
@pytest.mark.parametrize("bad, shown", [("photos", "'photos'"), ([1, 2, 3], "'list'"),
                                        (3, "'int'"), (None, "'NoneType'"),
                                        ((1, 2), "'tuple'"), ({"x": 1}, "'dict'")])
def test_other_values_are_refused_naming_the_argument(bad, shown):
    with pytest.raises(InvalidTypeError, match=rf"^images .*Received: images={shown}$"):
        as_batches(bad, "images")


@agnostic
def test_arrays_become_batches_in_order_or_shuffled_by_their_own_seed():
    x, y = _xy()
    batches = as_batches((x, y), batch_size=4)
    assert num_batches(batches) == 3
    np.testing.assert_array_equal(np.concatenate(_rows(batches)), x)
    state = np.random.get_state()
    shuffled = as_batches((x, y), batch_size=4, training=True, seed=1)
    first = np.concatenate(_rows(shuffled))
    assert sorted(first[:, 0, 0, 0]) == sorted(x[:, 0, 0, 0]) and not np.array_equal(first, x)
    shuffled.on_epoch_end()
    assert not np.array_equal(np.concatenate(_rows(shuffled)), first)  # a new order each pass
    assert np.array_equal(np.random.get_state()[1], state[1])  # no global state touched
    images = as_batches((x, y), images_only=True, batch_size=4)
    assert all(isinstance(b, np.ndarray) for b in images)


@agnostic
def test_labels_are_required_where_asked():
    x, y = _xy()
    with pytest.raises(InvalidTypeError,
                       match=r"must be labelled.*without labels.*Received: data='ndarray'"):
        as_batches(x, labels=True)
    with pytest.raises(DataError, match=r"batches without labels.*Received: data='list'"):
        list(as_batches([x[:5]], labels=True))
    with pytest.raises(DataError, match=r"10 inputs and 9 labels.*Received: data="):
        as_batches((x, y[:9]))
    with pytest.raises(DataError, match=r"\[N, \.\.\.\].*Received: data='array of shape \(3,\)'"):
        as_batches(np.zeros(3))
    with pytest.raises(InvalidArgumentError, match="batch_size.*Received: batch_size=0"):
        as_batches(x, batch_size=0)


@agnostic
def test_a_pydataset_and_array_data_stream_with_labels_or_images():
    x, y = _xy()
    pairs = _Pairs(x, y)
    assert as_batches(pairs) is pairs
    np.testing.assert_array_equal(np.concatenate(_rows(as_batches(
        pairs, images_only=True))), x)
    data = from_arrays(x.reshape(10, -1), y, batch_size=3)
    clean = as_batches(data)  # in order, unshuffled: for statistics and features
    np.testing.assert_array_equal(np.concatenate(_rows(clean)), data.train.x)
    assert as_batches(data, training=True) is data.train  # as training sees it
    f, labels = gather(data, fn=lambda b: b.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(f[:, 0], data.train.x.sum(axis=1))
    np.testing.assert_array_equal(labels, data.train.y)
    assert example_shape(pairs) == (2, 2, 1) and example_shape(data) == (4,)


@agnostic
def test_gather_keeps_only_outputs_and_labels_in_one_pass():
    x, y = _xy()
    out, labels = gather(_Pairs(x, {"a": y, "b": 1 - y}),
                         fn=lambda b: (b[:, 0, 0, 0], b[:, 1, 1, 0]))
    np.testing.assert_array_equal(out[0], x[:, 0, 0, 0])
    assert set(labels) == {"a", "b"} and np.array_equal(labels["b"], 1 - y)
    out, none = gather(x, fn=lambda b: b[:, 0, 0, 0], labels="optional")
    assert none is None and out.shape == (10,)
    with pytest.raises(DataError, match="no batch"):
        gather([], fn=lambda b: b, labels=False)


@agnostic
def test_as_arrays_materialises_only_in_memory_data_unless_asked():
    x, y = _xy()
    got_x, got_y = as_arrays((x, y))
    assert got_x is x or np.shares_memory(got_x, x)
    data = from_arrays(x.reshape(10, -1), y)
    assert as_arrays(data)[0].shape == (10, 4)
    with pytest.raises(DataError, match=r"stream of batches.*Received: data='_Pairs'"):
        as_arrays(_Pairs(x, y))
    streamed_x, streamed_y = as_arrays(_Pairs(x, y), streams=True)
    np.testing.assert_array_equal(streamed_x, x)
    np.testing.assert_array_equal(streamed_y, y)
    assert as_arrays(x, labels=False) is x


@agnostic
def test_training_and_validation_data_have_splits():
    x, y = _xy()
    data = as_training_data((x.reshape(10, -1), y))
    assert data.counts["train"] == 10 and data.val is None
    assert as_training_data(data) is data
    pairs = _Pairs(x, y)
    splits = as_training_data(pairs)
    assert splits.val is None and splits.test is None
    np.testing.assert_array_equal(np.concatenate(_rows(splits.train)), x)
    with pytest.raises(InvalidTypeError, match=r"from_arrays.*Received: data='list'"):
        as_training_data([x, y])
    with pytest.raises(InvalidTypeError, match=r"Received: train='ndarray'"):
        as_training_data(x, "train")
    assert as_validation_data(None) is None
    assert as_validation_data(data) is None  # no val split
    with pytest.raises(InvalidTypeError, match=r"without labels.*Received: val='ndarray'"):
        as_validation_data(x)
    images = np.concatenate(_rows(unaugmented_train(splits)))
    np.testing.assert_array_equal(images, x)


def test_tensorflow_datasets_and_bundles_stream_unaugmented():
    import tensorflow as tf

    from kertransfer.data import load

    x, y = _xy(12)
    rgb = np.repeat(x, 3, axis=-1) * 5
    ds = tf.data.Dataset.from_tensor_slices((rgb, y)).batch(5)
    assert form_of(ds) == "tf_dataset" and num_batches(ds) == 3
    assert example_shape(ds) == (2, 2, 3)
    with pytest.raises(DataError, match=r"without labels.*Received: data='a dataset of"):
        as_batches(ds.map(lambda a, b: a), labels=True)
    bundle = load((rgb, y), image_size=(2, 2), batch_size=4, augment={"contrast": 0.5},
                  verbose=0)
    assert form_of(bundle) == "bundle" and example_shape(bundle) == (2, 2, 3)
    clean = np.concatenate(_rows(as_batches(bundle, images_only=True, batch_size=64)))
    np.testing.assert_allclose(clean, bundle.as_numpy("train")[0])  # unaugmented, in order
    assert as_batches(bundle, training=True) is bundle.train
    f, labels = gather(bundle.with_tasks({"k": None, "odd": [0, 1]}),
                       fn=lambda b: b[:, 0, 0, 0])
    assert set(labels) == {"k", "odd"} and len(f) == 12
    with pytest.raises(InvalidArgumentError, match=r"no 'val' split"):
        as_batches(bundle, split="val")


@agnostic
def test_the_adapter_module_is_the_documented_home_of_the_protocol():
    assert (adapter.as_batches, adapter.gather, adapter.as_arrays, adapter.as_training_data,
            adapter.as_validation_data) == (as_batches, gather, as_arrays, as_training_data,
                                            as_validation_data)
    assert set(adapter.__all__) == {"as_arrays", "as_batches", "as_training_data",
                                    "as_validation_data", "gather", "split_arrays"}
