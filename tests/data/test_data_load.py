"""load() on the embedded sources, its arguments, and the DataBundle."""

import pathlib

import numpy as np
import pytest

from kertransfer.data import DataBundle, list_sources, load
from kertransfer.data.embedded import embedded_arrays
from kertransfer.errors import (
    DataSourceNotFoundError,
    InvalidArgumentError,
    InvalidTypeError,
    KertransferError,
)


@pytest.fixture(scope="module")
def digits_m():
    return load(
        "digits_m", image_size=(16, 16), batch_size=32, validation_split=0.2, test_split=0.1
    )


@pytest.mark.backend_agnostic
def test_batches_have_the_promised_shapes_dtypes_and_range(digits_m):
    images, labels = next(iter(digits_m.train))
    assert images.shape == (32, 16, 16, 3) and images.dtype.name == "float32"
    assert labels.shape == (32,) and labels.dtype.name == "int32"
    values = images.numpy()
    assert values.min() >= 0.0 and values.max() <= 255.0 and values.max() > 200.0
    assert digits_m.class_names == [str(i) for i in range(10)] and digits_m.num_classes == 10
    assert sum(digits_m.counts.values()) == 1797
    assert digits_m.counts == {"train": 1258, "val": 359, "test": 180}


def test_bundle_metadata_summary_and_repr(digits_m):
    assert isinstance(digits_m, DataBundle)
    assert digits_m.image_size == (16, 16) and digits_m.batch_size == 32 and digits_m.seed == 0
    assert digits_m.skipped_files == []
    text = digits_m.summary()
    assert "digits_m" in text and "1258" in text and "val" in text and "16x16" in text
    assert "digits_m" in repr(digits_m) and "num_classes=10" in repr(digits_m)


def test_splits_are_stratified_and_as_numpy_matches_counts(digits_m):
    for split in ("train", "val", "test"):
        x, y = digits_m.as_numpy(split)
        assert x.shape == (digits_m.counts[split], 16, 16, 3) and x.dtype == np.float32
        assert np.bincount(y, minlength=10).tolist() == digits_m.class_counts[split]
    val_per_class = np.array(digits_m.class_counts["val"])
    assert val_per_class.max() - val_per_class.min() <= 2


def test_train_split_covers_all_batches_and_reshuffles_each_epoch(digits_m):
    first = np.concatenate([y.numpy() for _, y in digits_m.train])
    second = np.concatenate([y.numpy() for _, y in digits_m.train])
    assert len(first) == 1258
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


def test_digits_m_is_one_fixed_dataset_and_differs_from_digits():
    first, labels = embedded_arrays("digits_m", (16, 16))
    embedded_arrays.cache_clear()
    again, labels_again = embedded_arrays("digits_m", (16, 16))
    assert first is not again
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(labels, labels_again)
    clean, clean_labels = embedded_arrays("digits", (16, 16))
    np.testing.assert_array_equal(labels, clean_labels)
    assert np.abs(first.astype(float) - clean).mean() > 30
    assert np.abs(first[..., 0].astype(float) - first[..., 1]).mean() > 1  # colour, not gray
    np.testing.assert_array_equal(clean[..., 0], clean[..., 2])  # digits is gray
    assert not first.flags.writeable


def test_user_seed_does_not_change_embedded_content():
    a = load("digits_m", image_size=(8, 8), seed=1, shuffle=False).as_numpy()[0]
    b = load("digits_m", image_size=(8, 8), seed=2, shuffle=False).as_numpy()[0]
    np.testing.assert_array_equal(a, b)


def test_same_seed_same_split_other_seed_other_split():
    def val_images(seed):
        bundle = load("digits", image_size=(8, 8), validation_split=0.1, seed=seed)
        return bundle.as_numpy("val")

    a, b, c = val_images(5), val_images(5), val_images(6)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_same_seed_same_training_order():
    def order(seed):
        bundle = load("digits", image_size=(8, 8), batch_size=64, seed=seed)
        return next(iter(bundle.train))[1].numpy()

    np.testing.assert_array_equal(order(3), order(3))
    assert not np.array_equal(order(3), order(4))


def test_no_shuffle_no_augment_train_equals_as_numpy():
    bundle = load("digits", image_size=(8, 8), batch_size=100, shuffle=False, cache=False)
    x, y = bundle.as_numpy("train")
    images, labels = next(iter(bundle.train))
    np.testing.assert_array_equal(images.numpy(), x[:100])
    np.testing.assert_array_equal(labels.numpy(), y[:100])


def test_samples_per_class_keeps_k_train_examples_and_full_held_out_sets():
    full = load("digits", image_size=(8, 8), validation_split=0.2)
    few = load("digits", image_size=(8, 8), validation_split=0.2, samples_per_class=3)
    assert few.counts["train"] == 30 and few.class_counts["train"] == [3] * 10
    assert few.counts["val"] == full.counts["val"]
    np.testing.assert_array_equal(few.as_numpy("val")[0], full.as_numpy("val")[0])
    assert len(list(few.train)) == 1


def test_zero_fraction_means_no_split():
    bundle = load("digits", image_size=(8, 8))
    assert bundle.val is None and bundle.test is None
    assert bundle.counts == {"train": 1797, "val": 0, "test": 0}
    with pytest.raises(InvalidArgumentError, match="no 'val' split.*Received"):
        bundle.as_numpy("val")
    with pytest.raises(InvalidArgumentError, match="Unknown split.*Received"):
        bundle.as_numpy("validation")


def test_class_names_rename_embedded_classes():
    names = [f"d{i}" for i in range(10)]
    assert load("digits", image_size=(8, 8), class_names=names).class_names == names
    with pytest.raises(InvalidArgumentError, match="10 classes.*Received"):
        load("digits", image_size=(8, 8), class_names=["a", "b"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": (32,)}, "image_size.*Received"),
        ({"image_size": (0, 32)}, "image_size.*Received"),
        ({"image_size": 32}, "image_size.*Received"),
        ({"image_size": (32.0, 32)}, "image_size.*Received"),
        ({"batch_size": 0}, "batch_size.*Received"),
        ({"batch_size": True}, "batch_size.*Received"),
        ({"validation_split": 1.0}, r"\[0, 1\).*Received"),
        ({"test_split": -0.1}, r"\[0, 1\).*Received"),
        ({"validation_split": 0.6, "test_split": 0.5}, "below 1.*Received"),
        ({"samples_per_class": 0}, "samples_per_class.*Received"),
        ({"seed": -1}, "seed.*Received"),
        ({"augment": {"blur": 1}}, "blur.*Received"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"image_size": (8, 8), **kwargs}
    with pytest.raises(InvalidArgumentError, match=match):
        load("digits", **kwargs)


@pytest.mark.parametrize(
    ("source", "suggestion"),
    [("digit", "'digits'"), ("digitsm", "'digits_m'"), ("Digits", "'digits'")],
)
def test_unknown_source_suggests_a_name(source, suggestion):
    with pytest.raises(InvalidArgumentError, match=f"Did you mean.*{suggestion}.*Received"):
        load(source)


def test_unknown_source_names_allowed_sources():
    with pytest.raises(InvalidArgumentError, match=r"tfds:NAME.*folder.*\(x, y\).*Received"):
        load("zzzqqq")


def test_missing_path_like_source(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataSourceNotFoundError, match="does not exist.*Received"):
        load(str(missing))
    with pytest.raises(FileNotFoundError, match="Received"):
        load(pathlib.Path("./no_such_folder_here"))


def test_source_of_wrong_type():
    with pytest.raises(InvalidTypeError, match="Received: source=42"):
        load(42)
    with pytest.raises(KertransferError, match="pair.*Received"):
        load((np.zeros((2, 8, 8)),))


def test_list_sources_names_every_kind():
    sources = list_sources()
    assert "digits" in sources and "digits_m" in sources
    assert any(key.startswith("tfds:") for key in sources)
    assert len(sources) >= 5
