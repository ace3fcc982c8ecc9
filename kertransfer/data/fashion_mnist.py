"""Fashion-MNIST as a data source: ``"fashion_mnist"`` and ``"fashion_mnist_subset"``.

Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017; Zalando, MIT licence) holds
70,000 gray 28x28 images of clothing in ten classes: an official training
split of 60,000 and test split of 10,000, stored as four IDX files.

``"fashion_mnist"`` reads the first of these that exists, never downloading:

1. the folder given as ``data_dir=`` (the four files, gzipped or not);
2. Debian's ``dataset-fashion-mnist`` package, `DEBIAN_DIR`
   (``/usr/share/datasets/fashion-mnist``);
3. Keras' dataset cache, where ``keras.datasets.fashion_mnist.load_data()``
   stores them: ``$KERAS_HOME/datasets/fashion-mnist`` (``~/.keras`` without
   ``KERAS_HOME``, or ``/tmp/.keras`` when the home folder is not writable);
4. the embedded subset shipped with kertransfer (below).

``"fashion_mnist_subset"`` always reads the embedded subset, so a result does
not depend on what a machine has installed.

The embedded subset, ``fashion_mnist_subset.npz`` beside this module
(about 2.2 MB), holds 500 images of every class drawn from the *official
test split* without replacement by ``numpy.random.default_rng(2017)``, class
by class in label order, sorted by their index in the test split (stored as
``test_index``). ``python -m kertransfer.data._make_fashion_subset`` makes it
again from the Debian files. Because its images come from the test split, a
model trained on the official training split can be scored on it.

With the full data, the official split is respected: test examples are drawn
only from the official test images, validation examples only from the
official training images (see `kertransfer.data.splits.split_with_test_set`).
The images stay in memory as uint8 (55 MB for all 70,000) and are converted
per batch as the pipeline reads them, never cached as float32.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from kertransfer import _log
from kertransfer.data.fashion_files import (
    CLASS_NAMES,
    SUBSET_FILE,
    SUBSET_PER_CLASS,
    SUBSET_SEED,
    FashionArrays,
    read_folder,
    read_idx,
    read_subset,
)
from kertransfer.data.fingerprint import array_digest
from kertransfer.data.sources import SourceData, check_class_names
from kertransfer.errors import DataSourceNotFoundError, format_message

__all__ = [
    "CLASS_NAMES",
    "DEBIAN_DIR",
    "FASHION_SOURCES",
    "FILES",
    "SUBSET_FILE",
    "SUBSET_PER_CLASS",
    "SUBSET_SEED",
    "FashionArrays",
    "fashion_source",
    "find_folder",
    "keras_cache_dirs",
    "read_folder",
    "read_idx",
    "read_subset",
]

FASHION_SOURCES: dict[str, str] = {
    "fashion_mnist": "Fashion-MNIST, 70,000 28x28 clothing images (10 classes): Debian's "
    "dataset-fashion-mnist files, else Keras' dataset cache, else the embedded subset",
    "fashion_mnist_subset": "the embedded Fashion-MNIST subset: 5,000 images of the official "
    "test split, 500 per class",
}
#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
#: Where Keras writes its cache when the home folder is not writable.
KERAS_FALLBACK_HOME = "/tmp/.keras"
#: The folder below Keras' home that ``keras.datasets.fashion_mnist`` writes.
KERAS_SUBDIR = os.path.join("datasets", "fashion-mnist")
#: The four IDX files, by role, as Fashion-MNIST, Debian and Keras name them.
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
#: Images converted (resized, made RGB) together as the pipeline reads them.
CONVERT_BATCH = 256


def keras_cache_dirs() -> list[pathlib.Path]:
    """The folders where ``keras.datasets.fashion_mnist.load_data()`` keeps its files.

    Returns:
        ``$KERAS_HOME/datasets/fashion-mnist`` (``~/.keras`` without
        ``KERAS_HOME``), then ``/tmp/.keras/datasets/fashion-mnist``, where
        Keras writes when the first is not writable.
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    dirs = [pathlib.Path(home) / KERAS_SUBDIR, pathlib.Path(KERAS_FALLBACK_HOME) / KERAS_SUBDIR]
    return list(dict.fromkeys(dirs))


def _files_in(folder: pathlib.Path) -> dict[str, pathlib.Path] | None:
    """The four files in ``folder`` (each gzipped or not), or ``None`` if one is missing."""
    found = {}
    for role, name in FILES.items():
        for candidate in (folder / name, folder / name.removesuffix(".gz")):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            return None
    return found


def find_folder(
    data_dir: str | os.PathLike | None = None,
) -> tuple[str, pathlib.Path, dict[str, pathlib.Path]] | None:
    """Find the full Fashion-MNIST files, in the order the module docstring gives.

    Args:
        data_dir: A folder that must hold the four files, checked first.

    Returns:
        ``(kind, folder, {role: file})`` with ``kind`` one of ``"data_dir"``,
        ``"debian"``, ``"keras"``; ``None`` when only the embedded subset is left.

    Raises:
        DataSourceNotFoundError: If ``data_dir`` is given and lacks a file.
    """
    if data_dir is not None:
        folder = pathlib.Path(os.path.expanduser(os.fspath(data_dir)))
        files = _files_in(folder)
        if files is None:
            missing = [n for n in FILES.values()
                       if not (folder / n).is_file()
                       and not (folder / n.removesuffix(".gz")).is_file()]
            raise DataSourceNotFoundError(
                format_message(
                    f"The folder {str(folder)!r} lacks Fashion-MNIST files: {missing}.",
                    expected=f"the four IDX files {list(FILES.values())} (gzipped or not)",
                    fix="Pass data_dir=None to look in Debian's and Keras' folders, "
                    "then use the embedded subset.",
                    received={"data_dir": os.fspath(data_dir)},
                )
            )
        return "data_dir", folder, files
    candidates = [("debian", pathlib.Path(DEBIAN_DIR))]
    candidates += [("keras", folder) for folder in keras_cache_dirs()]
    for kind, folder in candidates:
        files = _files_in(folder)
        if files is not None:
            return kind, folder, files
    return None


def _load_arrays(source: str, data_dir: str | os.PathLike | None) -> FashionArrays:
    found = None if source == "fashion_mnist_subset" else find_folder(data_dir)
    if found is None:
        images, labels = read_subset()
        per_class = np.bincount(labels, minlength=len(CLASS_NAMES))
        spread = f"{per_class.min()}" if per_class.min() == per_class.max() else \
            f"{per_class.min()}-{per_class.max()}"
        return FashionArrays(
            images, labels, None,
            f"embedded subset, {len(labels):,} images of the official test split, "
            f"{spread} per class",
        )
    kind, folder, files = found
    images, labels, test_only = read_folder(files)
    origin = {"data_dir": "data_dir", "debian": "Debian's dataset-fashion-mnist",
              "keras": "Keras' dataset cache"}[kind]
    n_test = int(test_only.sum())
    return FashionArrays(
        images, labels, test_only,
        f"{origin} in {folder}, {len(labels) - n_test:,} train + {n_test:,} test images",
    )


def _convert_batch(image_size: tuple[int, int]):
    """Gray uint8 batches to RGB float32 at ``image_size``, as `to_model_image` converts.

    Bilinear resizing is antialiased only when a side shrinks: upsampling gives
    the same values either way (to 1e-4), and seven times faster without it.
    """

    def convert(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        gray = tf.cast(images[..., tf.newaxis], tf.float32)
        height, width = images.shape[1:3]
        if (height, width) != tuple(image_size):
            shrink = image_size[0] < height or image_size[1] < width
            gray = tf.image.resize(gray, image_size, method="bilinear", antialias=shrink)
            gray = tf.clip_by_value(gray, 0.0, 255.0)
        return tf.repeat(gray, 3, axis=-1), labels

    return convert


def fashion_source(
    source: str,
    image_size: tuple[int, int],
    class_names: Sequence[str] | None = None,
    data_dir: str | os.PathLike | None = None,
    verbose: int = 1,
) -> SourceData:
    """Fashion-MNIST as a source (see the module docstring for where it is read from).

    Args:
        source: ``"fashion_mnist"`` or ``"fashion_mnist_subset"``.
        image_size: Target ``(height, width)``.
        class_names: Optional new names for the ten classes.
        data_dir: A folder holding the four IDX files (``"fashion_mnist"`` only).
        verbose: Print which files were used.

    Returns:
        The source. For the full data its ``test_only`` marks the official
        test images; it is never cached as float32 (``cacheable=False``).

    Raises:
        DataSourceNotFoundError: If ``data_dir`` lacks a file, or the embedded
            subset is missing.
        DataError: If a file is not a valid IDX file.
    """
    names = check_class_names(class_names, expected=len(CLASS_NAMES)) or list(CLASS_NAMES)
    arrays = _load_arrays(source, data_dir)
    if verbose:
        _log.print_msg(f"Fashion-MNIST: {arrays.description}.")
    convert = _convert_batch(image_size)

    def make_dataset(indices: np.ndarray) -> tf.data.Dataset:
        indices = np.asarray(indices, dtype=np.int64)
        images = arrays.images[indices]
        labels = arrays.labels[indices].astype(np.int32)
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(CONVERT_BATCH)
        dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
        return dataset.apply(tf.data.experimental.assert_cardinality(len(indices)))

    return SourceData(
        labels=arrays.labels,
        class_names=names,
        description=f"{source} ({arrays.description})",
        make_dataset=make_dataset,
        test_only=arrays.test_only,
        cacheable=False,
        fingerprint=array_digest([arrays.images, arrays.labels]),
    )
