"""A folder of class subfolders as a source."""

import numpy as np
import pytest
from PIL import Image

from kertransfer.data import load
from kertransfer.errors import CorruptImageError, DataError, DataSourceNotFoundError


def _solid(color, size=(12, 10), mode="RGB"):
    return Image.new(mode, size, color)


@pytest.fixture()
def photos(tmp_path):
    """Two classes in every format; solid colours make decoded values exact."""
    a, b = tmp_path / "a_cls", tmp_path / "b_cls"
    a.mkdir()
    b.mkdir()
    _solid((255, 0, 0)).save(a / "img0.png")
    _solid((0, 0, 255), size=(20, 7)).save(a / "img1.JPG", quality=100)
    _solid((0, 255, 0)).save(a / "img2.bmp")
    (a / "notes.txt").write_text("not an image")
    frames = [_solid((255, 255, 255)), _solid((0, 0, 0))]
    frames[0].save(b / "anim.gif", save_all=True, append_images=frames[1:])
    _solid(100, mode="L").save(b / "gray.png")
    _solid((10, 20, 30, 0), mode="RGBA").save(b / "rgba.png")
    return tmp_path


def test_every_format_becomes_rgb(photos):
    bundle = load(photos, image_size=(8, 8), batch_size=4, verbose=0)
    assert bundle.class_names == ["a_cls", "b_cls"]
    assert bundle.counts["train"] == 6 and bundle.class_counts["train"] == [3, 3]
    images, labels = bundle.as_numpy("train")  # source order: sorted files per class
    assert images.shape == (6, 8, 8, 3) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    means = images.mean(axis=(1, 2))
    np.testing.assert_allclose(means[0], [255, 0, 0], atol=1)  # png
    np.testing.assert_allclose(means[1], [0, 0, 255], atol=6)  # jpg, other size
    np.testing.assert_allclose(means[2], [0, 255, 0], atol=1)  # bmp
    np.testing.assert_allclose(means[3], [255, 255, 255], atol=1)  # gif: first frame
    np.testing.assert_allclose(means[4], [100, 100, 100], atol=1)  # grayscale
    np.testing.assert_allclose(means[5], [10, 20, 30], atol=1)  # rgba: alpha dropped
    batch, batch_labels = next(iter(bundle.train))
    assert batch.shape == (4, 8, 8, 3) and batch_labels.dtype.name == "int32"


def test_str_path_and_class_names_selection(photos):
    bundle = load(str(photos), image_size=(8, 8), class_names=["b_cls"], verbose=0)
    assert bundle.class_names == ["b_cls"] and bundle.counts["train"] == 3
    with pytest.raises(DataError, match="zzz.*Received"):
        load(photos, image_size=(8, 8), class_names=["zzz"], verbose=0)


def test_corrupt_file_is_skipped_and_counted(photos):
    bad = photos / "a_cls" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.warns(UserWarning, match="Skipped 1 corrupt.*broken.jpg"):
        bundle = load(photos, image_size=(8, 8), verbose=0)
    assert bundle.skipped_files == [str(bad)]
    assert bundle.counts["train"] == 6
    assert "skipped" in bundle.summary()
    assert sum(len(y) for _, y in bundle.train) == 6


def test_strict_mode_names_the_corrupt_file(photos):
    (photos / "b_cls" / "truncated.png").write_bytes(
        (photos / "b_cls" / "gray.png").read_bytes()[:30]
    )
    with pytest.raises(CorruptImageError, match=r"truncated\.png.*Received"):
        load(photos, image_size=(8, 8), strict=True, verbose=0)


def test_empty_class_folder_is_named(photos):
    (photos / "c_empty").mkdir()
    (photos / "c_empty" / "readme.md").write_text("nothing")
    with pytest.raises(DataError, match="c_empty.*Received"):
        load(photos, image_size=(8, 8), verbose=0)


def test_class_left_empty_by_corrupt_files(tmp_path):
    (tmp_path / "ok").mkdir()
    _solid((1, 2, 3)).save(tmp_path / "ok" / "x.png")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.*corrupt.*Received"):
        load(tmp_path, image_size=(8, 8), verbose=0)


def test_folder_without_class_subfolders(tmp_path):
    _solid((1, 2, 3)).save(tmp_path / "loose.png")
    with pytest.raises(DataError, match="no class subfolders.*1 image files.*Received"):
        load(tmp_path, image_size=(8, 8), verbose=0)


def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(DataSourceNotFoundError, match="does not exist.*Received"):
        load(tmp_path / "missing", image_size=(8, 8))
    path = tmp_path / "file.png"
    _solid((1, 2, 3)).save(path)
    with pytest.raises(DataError, match="not a folder.*Received"):
        load(path, image_size=(8, 8))


def test_split_on_a_folder_is_stratified(tmp_path):
    for cls in ("x", "y"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            _solid((i * 20, 0, 0), size=(6, 6)).save(tmp_path / cls / f"{i}.png")
    bundle = load(tmp_path, image_size=(6, 6), validation_split=0.2, verbose=0)
    assert bundle.class_counts == {"train": [8, 8], "val": [2, 2], "test": [0, 0]}
    assert sum(len(y) for _, y in bundle.val) == 4
