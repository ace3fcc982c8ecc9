"""Fashion-MNIST: the IDX reader, where the files are found, the embedded subset, the splits."""

import gzip
import logging
import pathlib

import keras
import numpy as np
import pytest

from kertransfer.data import fashion_mnist as fm
from kertransfer.data import list_sources, load
from kertransfer.data._make_fashion_subset import make_subset, select_subset
from kertransfer.data.splits import split_with_test_set
from kertransfer.errors import DataError, DataSourceNotFoundError, InvalidArgumentError

N_TRAIN, N_TEST = 60, 30  # 6 and 3 per class


def write_idx(path, array, compress=True):
    """Write ``array`` as an IDX file (uint8), gzipped when ``compress``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path = pathlib.Path(path)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def image_ids(images):
    """Synthetic images carry their example id in pixels (0, 0) and (0, 1)."""
    images = np.asarray(images)
    return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 1, 0].astype(int)


def make_folder(folder, compress=True):
    """Four synthetic files: ids 0..59 in the train split, 60..89 in the test split."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = np.arange(N_TRAIN + N_TEST)
    images = rng.integers(0, 256, (len(ids), 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = ids // 256, ids % 256
    labels = (ids % 10).astype(np.uint8)
    for split, part in (("train", slice(0, N_TRAIN)), ("test", slice(N_TRAIN, None))):
        name = fm.FILES[f"{split}_images"]
        write_idx(folder / (name if compress else name[:-3]), images[part], compress)
        name = fm.FILES[f"{split}_labels"]
        write_idx(folder / (name if compress else name[:-3]), labels[part], compress)
    return folder, images, labels


@pytest.fixture(autouse=True)
def no_real_files(tmp_path, monkeypatch):
    """Neither Debian's folder nor Keras' cache exist unless a test makes them."""
    monkeypatch.setattr(fm, "DEBIAN_DIR", str(tmp_path / "debian"))
    monkeypatch.setattr(fm, "KERAS_FALLBACK_HOME", str(tmp_path / "tmp-keras"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))


# The IDX reader ---------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_reads_images_and_labels_gzipped_or_not(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "images", images, compress)
    raw = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
    assert len(raw) == 16 + images.size  # 16 header bytes for three dimensions
    out = fm.read_idx(path)
    np.testing.assert_array_equal(out, images)
    assert out.dtype == np.uint8 and not out.flags.writeable
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = write_idx(tmp_path / "labels", labels, compress)
    raw = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
    assert len(raw) == 8 + labels.size  # 8 header bytes for one dimension
    np.testing.assert_array_equal(fm.read_idx(path), labels)


def test_read_idx_refuses_broken_files(tmp_path):
    good = write_idx(tmp_path / "good", np.zeros((4, 5, 5)), compress=False)
    cut = tmp_path / "cut"
    cut.write_bytes(good.read_bytes()[:-3])
    with pytest.raises(DataError, match="promises 116 bytes, it has 113.*Received: path="):
        fm.read_idx(cut)
    text = tmp_path / "text"
    text.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="IDX header.*fashion_mnist_subset"):
        fm.read_idx(text)
    bad_gzip = tmp_path / "bad.gz"
    bad_gzip.write_bytes(gzip.compress(good.read_bytes())[:-10])
    with pytest.raises(DataError, match="not a complete gzip file"):
        fm.read_idx(bad_gzip)


# Where the files are found -----------------------------------------------------------------


def test_debian_folder_is_used_when_present(tmp_path, capsys):
    _, images, labels = make_folder(tmp_path / "debian")
    data = load("fashion_mnist", image_size=(28, 28), verbose=1)
    out = capsys.readouterr().out
    assert "Fashion-MNIST: Debian's dataset-fashion-mnist in" in out
    assert str(tmp_path / "debian") in out and "60 train + 30 test images" in out
    assert data.source.startswith("fashion_mnist (Debian's") and "60 train" in data.summary()
    assert data.class_names == fm.CLASS_NAMES and data.class_names[0] == "T-shirt/top"
    x, y = data.as_numpy("train")
    ids = image_ids(x)
    np.testing.assert_array_equal(np.sort(ids), np.arange(N_TRAIN))  # no test split: no test
    order = np.argsort(ids)
    np.testing.assert_array_equal(y[order], labels[:N_TRAIN])
    np.testing.assert_array_equal(x[order][..., 0], images[:N_TRAIN])  # 28x28: exact pixels


def test_keras_cache_is_used_without_debian_and_debian_comes_first(tmp_path, capsys):
    make_folder(tmp_path / "keras-home" / "datasets" / "fashion-mnist")
    load("fashion_mnist", image_size=(28, 28))
    out = capsys.readouterr().out
    assert "Keras' dataset cache in" in out and "keras-home" in out
    make_folder(tmp_path / "debian")
    load("fashion_mnist", image_size=(28, 28))
    assert "Debian's dataset-fashion-mnist" in capsys.readouterr().out


def test_keras_fallback_home_and_the_keras_names(tmp_path, capsys, monkeypatch):
    # keras.datasets.fashion_mnist keeps these four names under datasets/fashion-mnist.
    assert str(pathlib.Path("datasets") / "fashion-mnist") == fm.KERAS_SUBDIR
    assert sorted(fm.FILES.values()) == sorted([
        "train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"])
    make_folder(tmp_path / "tmp-keras" / "datasets" / "fashion-mnist")
    load("fashion_mnist", image_size=(28, 28))
    assert "tmp-keras" in capsys.readouterr().out
    monkeypatch.delenv("KERAS_HOME")
    assert fm.keras_cache_dirs()[0] == pathlib.Path.home() / ".keras" / fm.KERAS_SUBDIR


def test_an_incomplete_folder_is_skipped(tmp_path, capsys):
    folder, _, _ = make_folder(tmp_path / "debian")
    (folder / fm.FILES["test_labels"]).unlink()
    load("fashion_mnist", image_size=(28, 28))
    assert "embedded subset" in capsys.readouterr().out


def test_data_dir_holds_the_files_gzipped_or_not(tmp_path, capsys):
    folder, _, _ = make_folder(tmp_path / "mine", compress=False)
    make_folder(tmp_path / "debian")
    data = load("fashion_mnist", image_size=(28, 28), test_split=0.1, data_dir=folder)
    assert "Fashion-MNIST: data_dir in" in capsys.readouterr().out
    assert data.counts["test"] == 9
    with pytest.raises(DataSourceNotFoundError, match="lacks Fashion-MNIST files.*"
                       "t10k-labels.*Received: data_dir="):
        load("fashion_mnist", data_dir=tmp_path / "debian-not")


def test_a_corrupt_file_is_an_error_not_a_silent_fallback(tmp_path):
    folder, _, _ = make_folder(tmp_path / "debian")
    (folder / fm.FILES["train_images"]).write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*cannot be read"):
        load("fashion_mnist", image_size=(28, 28))


def test_mismatched_files_are_an_error(tmp_path):
    folder, _, _ = make_folder(tmp_path / "debian")
    write_idx(folder / fm.FILES["test_labels"], np.zeros(7))
    with pytest.raises(DataError, match="do not match"):
        load("fashion_mnist", image_size=(28, 28))


# The message ------------------------------------------------------------------------------


def test_the_message_honours_verbose_and_keras_logging(capsys, caplog):
    load("fashion_mnist", image_size=(8, 8), verbose=0)
    assert capsys.readouterr().out == ""
    load("fashion_mnist", image_size=(8, 8))
    assert "Fashion-MNIST: embedded subset, 5,000 images of the official test split, " \
           "500 per class." in capsys.readouterr().out
    keras.config.disable_interactive_logging()
    try:
        with caplog.at_level(logging.INFO, logger="kertransfer"):
            load("fashion_mnist_subset", image_size=(8, 8))
    finally:
        keras.config.enable_interactive_logging()
    assert capsys.readouterr().out == ""
    assert "embedded subset" in caplog.text


# The embedded subset ----------------------------------------------------------------------


def test_embedded_subset_is_small_balanced_uint8_from_the_test_split():
    assert fm.SUBSET_FILE.is_file() and fm.SUBSET_FILE.stat().st_size < 2_500_000
    images, labels = fm.read_subset()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert not images.flags.writeable
    with np.load(fm.SUBSET_FILE) as archive:
        index = archive["test_index"]
        assert int(archive["seed"]) == fm.SUBSET_SEED == 2017
        assert int(archive["per_class"]) == fm.SUBSET_PER_CLASS == 500
    assert index.max() < 10000 and len(np.unique(index)) == 5000
    assert np.all(np.diff(index.astype(int)) > 0)


def test_embedded_subset_is_package_data():
    manifest = pathlib.Path(__file__).resolve().parents[2] / "MANIFEST.in"
    assert "include kertransfer/data/fashion_mnist_subset.npz" in manifest.read_text()


def test_selection_is_stratified_seeded_and_reproducible():
    labels = np.arange(10000) % 10
    index = select_subset(labels)
    assert len(index) == 5000 and np.bincount(labels[index]).tolist() == [500] * 10
    np.testing.assert_array_equal(index, select_subset(labels))
    assert not np.array_equal(index, select_subset(labels, seed=1))


def test_the_script_makes_the_subset_from_test_files(tmp_path):
    folder, images, labels = make_folder(tmp_path / "debian")
    labels_10k = np.arange(10000) % 10
    write_idx(folder / fm.FILES["test_labels"], labels_10k)
    test_images = np.random.default_rng(1).integers(0, 256, (10000, 28, 28), dtype=np.uint8)
    write_idx(folder / fm.FILES["test_images"], test_images)
    arrays = make_subset(folder)
    np.testing.assert_array_equal(arrays["images"], test_images[arrays["test_index"]])
    np.testing.assert_array_equal(arrays["labels"], labels_10k[arrays["test_index"]])


REAL = pathlib.Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (REAL / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_the_shipped_subset_is_the_one_the_script_makes_from_debian():
    arrays = make_subset(REAL)
    images, labels = fm.read_subset()
    with np.load(fm.SUBSET_FILE) as archive:
        np.testing.assert_array_equal(archive["test_index"], arrays["test_index"])
    np.testing.assert_array_equal(images, arrays["images"])
    np.testing.assert_array_equal(labels, arrays["labels"])


def test_subset_name_reads_the_subset_even_with_full_files(tmp_path, capsys):
    make_folder(tmp_path / "debian")
    data = load("fashion_mnist_subset", image_size=(8, 8))
    assert "embedded subset" in capsys.readouterr().out
    assert sum(data.counts.values()) == 5000


def test_subset_gives_gray_rgb_images_at_the_requested_size():
    data = load("fashion_mnist", image_size=(40, 36), batch_size=16, verbose=0)
    images, labels = next(iter(data.train))
    assert images.shape == (16, 40, 36, 3) and images.dtype.name == "float32"
    assert labels.dtype.name == "int32"
    x = images.numpy()
    assert x.min() >= 0 and x.max() <= 255 and x.max() > 200
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_subset_at_28_pixels_is_the_stored_images():
    data = load("fashion_mnist", image_size=(28, 28), shuffle=False, verbose=0)
    x, y = data.as_numpy("train")
    images, labels = fm.read_subset()
    np.testing.assert_array_equal(x[..., 0], images)
    np.testing.assert_array_equal(y, labels)


def test_subset_splits_and_samples_per_class_are_stratified_and_seeded():
    data = load("fashion_mnist", image_size=(8, 8), validation_split=0.2, test_split=0.1,
                samples_per_class=7, seed=3, verbose=0)
    assert data.class_counts["train"] == [7] * 10
    assert data.class_counts["val"] == [100] * 10 and data.class_counts["test"] == [50] * 10
    again = load("fashion_mnist", image_size=(8, 8), validation_split=0.2, test_split=0.1,
                 samples_per_class=7, seed=3, verbose=0)
    other = load("fashion_mnist", image_size=(8, 8), validation_split=0.2, test_split=0.1,
                 samples_per_class=7, seed=4, verbose=0)
    np.testing.assert_array_equal(data.as_numpy("train")[0], again.as_numpy("train")[0])
    assert not np.array_equal(data.as_numpy("train")[0], other.as_numpy("train")[0])
    assert len(list(data.train)) == 3  # 70 examples in batches of 32


def test_class_names_can_be_renamed():
    names = [f"c{i}" for i in range(10)]
    assert load("fashion_mnist", image_size=(8, 8), class_names=names,
                verbose=0).class_names == names
    with pytest.raises(InvalidArgumentError, match="10 classes.*Received"):
        load("fashion_mnist", image_size=(8, 8), class_names=["a"], verbose=0)


def test_sources_list_and_suggestions_name_fashion_mnist():
    sources = list_sources()
    assert "fashion_mnist" in sources and "fashion_mnist_subset" in sources
    with pytest.raises(InvalidArgumentError, match="Did you mean.*'fashion_mnist'"):
        load("fashion_mnst")


def test_full_data_is_not_cached_as_float32(tmp_path):
    make_folder(tmp_path / "debian")
    source = fm.fashion_source("fashion_mnist", (8, 8), verbose=0)
    assert source.cacheable is False and source.test_only.sum() == N_TEST


# The official test split stays apart -------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("validation_split", "test_split"), [(0.2, 0.1), (0.3, 0.0), (0.1, 0.5)])
def test_official_test_images_only_in_the_test_split(tmp_path, seed, validation_split,
                                                     test_split):
    make_folder(tmp_path / "debian")
    data = load("fashion_mnist", image_size=(28, 28), validation_split=validation_split,
                test_split=test_split, seed=seed, verbose=0)
    n = N_TRAIN + N_TEST
    ids = {split: image_ids(data.as_numpy(split)[0]) if getattr(data, split) is not None
           else np.zeros(0, int) for split in ("train", "val", "test")}
    assert np.all(ids["train"] < N_TRAIN) and np.all(ids["val"] < N_TRAIN)
    assert np.all(ids["test"] >= N_TRAIN)
    assert len(ids["val"]) == round(validation_split * n)
    assert len(ids["test"]) == min(N_TEST, round(test_split * n))
    assert len(ids["train"]) == N_TRAIN - len(ids["val"])
    all_ids = np.concatenate(list(ids.values()))
    assert len(np.unique(all_ids)) == len(all_ids)
    if len(ids["test"]):
        assert np.ptp(np.bincount(ids["test"] % 10, minlength=10)) <= 1  # stratified


def test_samples_per_class_on_full_data_draws_from_the_training_split(tmp_path):
    make_folder(tmp_path / "debian")
    data = load("fashion_mnist", image_size=(28, 28), validation_split=0.1, test_split=0.2,
                samples_per_class=2, verbose=0)
    assert data.class_counts["train"] == [2] * 10
    assert np.all(image_ids(data.as_numpy("train")[0]) < N_TRAIN)
    assert data.counts["test"] == 18


def test_split_with_test_set_sizes_and_edge_cases():
    labels = np.arange(700) % 10
    test_only = np.arange(700) >= 600
    train, val, test = split_with_test_set(labels, test_only, 0.1, 0.1, seed=0)
    assert len(val) == 70 and len(test) == 70 and len(train) == 530
    assert np.bincount(labels[val]).tolist() == [7] * 10
    assert np.bincount(labels[test]).tolist() == [7] * 10
    assert test_only[test].all() and not test_only[val].any() and not test_only[train].any()
    _, _, everything = split_with_test_set(labels, test_only, 0.0, 0.5, seed=0)
    np.testing.assert_array_equal(everything, np.arange(600, 700))
    _, _, none = split_with_test_set(labels, test_only, 0.2, 0.0, seed=0)
    assert len(none) == 0
    a = split_with_test_set(labels, test_only, 0.1, 0.05, seed=5)
    b = split_with_test_set(labels, test_only, 0.1, 0.05, seed=5)
    c = split_with_test_set(labels, test_only, 0.1, 0.05, seed=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[2], c[2])
