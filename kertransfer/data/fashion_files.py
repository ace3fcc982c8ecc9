"""Reading Fashion-MNIST into memory: the IDX files and the embedded subset.

`read_idx` reads one IDX file, `read_folder` the four files of a folder
(training split first, with the mask of the official test images) and
`read_subset` the embedded subset; each returns read-only arrays, checked
and cached in-process. Where the files are found is
`kertransfer.data.fashion_mnist`'s job.
"""

from __future__ import annotations

import functools
import gzip
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from kertransfer.errors import DataError, DataSourceNotFoundError, format_message

__all__ = [
    "CLASS_NAMES",
    "SUBSET_FILE",
    "SUBSET_PER_CLASS",
    "SUBSET_SEED",
    "FashionArrays",
    "read_folder",
    "read_idx",
    "read_subset",
]

CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
SUBSET_FILE = pathlib.Path(__file__).with_name("fashion_mnist_subset.npz")
SUBSET_SEED = 2017
SUBSET_PER_CLASS = 500

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not), as the MNIST family stores its arrays.

    The header is two zero bytes, a type code (``0x08`` for uint8), the number
    of dimensions, then each dimension as a big-endian uint32: 16 bytes for
    image files, 8 for label files.

    Args:
        path: The file.

    Returns:
        A read-only array of the file's type and shape.

    Raises:
        DataError: If the file is not a complete IDX file.
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
    except (OSError, EOFError) as err:
        raise _bad_file(path, f"it is not a complete gzip file ({err})") from err
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_TYPES:
        raise _bad_file(path, "it does not start with an IDX header")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise _bad_file(path, "its IDX header is cut short")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise _bad_file(path, f"its header promises {expected} bytes, it has {len(data)}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def _bad_file(path: str, why: str) -> DataError:
    return DataError(
        format_message(
            f"The Fashion-MNIST file {path!r} cannot be read: {why}.",
            fix="Replace or remove it (load('fashion_mnist_subset') reads the embedded subset).",
            received={"path": path},
        )
    )


@dataclass(frozen=True)
class FashionArrays:
    """Fashion-MNIST images in memory.

    Attributes:
        images: Read-only uint8 images ``[N, 28, 28]``.
        labels: Read-only int64 labels ``[N]`` in 0..9.
        test_only: Read-only bool ``[N]``: the images of the official test
            split, or ``None`` when the split does not apply (the subset).
        description: Text naming where the images came from.
    """

    images: np.ndarray
    labels: np.ndarray
    test_only: np.ndarray | None
    description: str


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _check_pair(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            format_message(
                f"The Fashion-MNIST files in {where} do not match: images "
                f"{images.shape}, labels {labels.shape}.",
                expected="images [N, 28, 28] and labels [N]",
                received={"folder": where},
            )
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise DataError(
            format_message(
                f"The Fashion-MNIST labels in {where} fall outside 0..9.",
                received={"folder": where, "labels": np.unique(labels)[:12].tolist()},
            )
        )


@functools.lru_cache(maxsize=2)
def _read_folder_cached(
    files: tuple[tuple[str, str], ...], stamp: tuple[tuple[int, int], ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    paths = dict(files)
    where = str(pathlib.Path(paths["train_images"]).parent)
    parts = []
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"])
        labels = read_idx(paths[f"{split}_labels"])
        _check_pair(images, labels, where)
        parts.append((images, labels))
    if parts[0][0].shape[1:] != parts[1][0].shape[1:]:
        raise DataError(
            format_message(
                f"The Fashion-MNIST train and test images in {where} differ in size.",
                received={"train": parts[0][0].shape, "test": parts[1][0].shape},
            )
        )
    images = np.concatenate([parts[0][0], parts[1][0]]).astype(np.uint8, copy=False)
    labels = np.concatenate([parts[0][1], parts[1][1]]).astype(np.int64)
    test_only = np.arange(len(labels)) >= len(parts[0][1])
    return _frozen(images), _frozen(labels), _frozen(test_only)


def read_folder(files: dict[str, pathlib.Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read the four files (cached in-process while they are unchanged).

    Args:
        files: ``{role: path}`` as `find_folder` returns it.

    Returns:
        ``(images, labels, test_only)``: read-only uint8 images
        ``[60000 + 10000, 28, 28]`` (training split first), int64 labels and
        the bool mask of the official test images.

    Raises:
        DataError: If a file is not a valid IDX file or the files do not match.
    """
    keys = tuple(sorted((role, str(path)) for role, path in files.items()))
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns)
                  for p in (pathlib.Path(path) for _, path in keys))
    return _read_folder_cached(keys, stamp)


@functools.lru_cache(maxsize=1)
def read_subset(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read the embedded subset (cached in-process).

    Args:
        path: The ``.npz`` file; default `SUBSET_FILE`.

    Returns:
        ``(images, labels)``: read-only uint8 images ``[5000, 28, 28]`` and
        int64 labels ``[5000]``.

    Raises:
        DataSourceNotFoundError: If the file is missing (a broken install).
    """
    path = pathlib.Path(path or SUBSET_FILE)
    if not path.is_file():
        raise DataSourceNotFoundError(
            format_message(
                f"kertransfer's embedded Fashion-MNIST subset {str(path)!r} is missing.",
                fix="Reinstall kertransfer (the file is package data), or install Debian's "
                "dataset-fashion-mnist.",
                received={"path": str(path)},
            )
        )
    with np.load(path) as archive:
        images, labels = archive["images"], archive["labels"].astype(np.int64)
    _check_pair(images, labels, str(path))
    return _frozen(images), _frozen(labels)

