"""A folder of class subfolders as a data source.

Layout::

    photos/
        cats/   a.jpg  b.png  ...
        dogs/   c.jpeg d.bmp  ...

Subfolders (sorted by name) are the classes; files ending in jpg, jpeg, png,
bmp or gif (any case) anywhere below a class folder are its images, other
files are ignored. Every image is decoded once up front to find corrupt
files, which are skipped (with a warning) or, in strict mode, raise.
Training then decodes lazily in tf.data: grayscale and RGBA become RGB,
animated gifs give their first frame.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kertransfer._log import print_msg
from kertransfer.data.fingerprint import array_digest, file_digest
from kertransfer.data.images import decode_file, to_model_image
from kertransfer.data.sources import SourceData, check_class_names
from kertransfer.errors import (
    CorruptImageError,
    DataError,
    DataSourceNotFoundError,
    format_message,
)

__all__ = ["IMAGE_EXTENSIONS", "folder_source", "list_image_files"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
PROGRESS_MIN_FILES = 200


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_image_files(folder: Path) -> list[str]:
    """List the image files below ``folder``, recursively, in sorted order.

    Args:
        folder: A class folder.

    Returns:
        Paths (as strings) of files with an image extension; hidden files and
        folders are left out.
    """
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, name) for name in sorted(files) if _is_image(name))
    return found


def _class_folders(root: Path, class_names: list[str] | None) -> list[Path]:
    present = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        if not present:
            loose = [p.name for p in root.iterdir() if p.is_file() and _is_image(p.name)]
            hint = (
                f" It holds {len(loose)} image files directly; move them into one subfolder "
                "per class."
                if loose
                else ""
            )
            raise DataError(
                format_message(
                    f"The folder {str(root)!r} has no class subfolders.{hint}",
                    expected="a folder with one subfolder of images per class",
                    received={"source": str(root)},
                )
            )
        return present
    names = {p.name for p in present}
    missing = [name for name in class_names if name not in names]
    if missing:
        raise DataError(
            format_message(
                f"`class_names` lists folders that are not in {str(root)!r}: {missing}.",
                expected=f"names of its subfolders: {sorted(names)}",
                received={"source": str(root), "class_names": class_names},
            )
        )
    return [root / name for name in class_names]


def _find_corrupt(paths: list[str], verbose: int) -> list[str]:
    """Decode every file once (in parallel) and return the ones that fail."""

    def probe(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return path, tf.shape(decode_file(path))

    dataset = tf.data.Dataset.from_tensor_slices(paths)
    dataset = dataset.map(probe, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    dataset = dataset.ignore_errors()
    bar = (
        keras.utils.Progbar(len(paths), unit_name="file")
        if verbose and len(paths) >= PROGRESS_MIN_FILES
        else None
    )
    good = set()
    for count, (path, shape) in enumerate(dataset, start=1):
        if int(tf.reduce_min(shape)) > 0:
            good.add(path.numpy().decode())
        if bar is not None and count % 50 == 0:
            bar.update(count)
    if bar is not None:
        bar.update(len(paths), finalize=True)
    return [path for path in paths if path not in good]


def _without_corrupt(root: Path, folder, class_dirs: list[Path], files: list[list[str]],
                     corrupt: list[str], strict: bool) -> list[list[str]]:
    """``files`` without the ``corrupt`` ones (warned about), or a `CorruptImageError`
    in strict mode."""
    if corrupt and strict:
        raise CorruptImageError(
            format_message(
                f"The image file {corrupt[0]!r} cannot be decoded"
                + (f" ({len(corrupt) - 1} more files cannot either)." if len(corrupt) > 1 else "."),
                fix="Remove or replace it, or pass strict=False to skip corrupt files.",
                received={"source": str(folder), "strict": strict},
            )
        )
    if corrupt:
        bad = set(corrupt)
        files = [[path for path in group if path not in bad] for group in files]
        _check_not_empty(root, class_dirs, files, after_skipping=True)
        shown = ", ".join(repr(p) for p in corrupt[:3]) + (", ..." if len(corrupt) > 3 else "")
        warnings.warn(
            f"Skipped {len(corrupt)} corrupt image file(s) in {str(root)!r}: {shown}. "
            "Pass strict=True to raise instead; the list is in DataBundle.skipped_files.",
            stacklevel=5,
        )
    return files


def folder_source(
    folder: str | os.PathLike,
    image_size: tuple[int, int],
    class_names: Sequence[str] | None = None,
    strict: bool = False,
    verbose: int = 1,
) -> SourceData:
    """Read a folder of class subfolders.

    Args:
        folder: Path to the folder.
        image_size: Target ``(height, width)``.
        class_names: Subfolders to use, in label order; default all, sorted.
        strict: Raise on the first corrupt file instead of skipping it.
        verbose: Show a progress bar while checking many files, and a summary line.

    Returns:
        The source.

    Raises:
        DataSourceNotFoundError: If the folder does not exist.
        DataError: If it is not a folder, has no class subfolders, or a class
            folder holds no images (before or after skipping corrupt ones).
        CorruptImageError: In strict mode, naming the first corrupt file.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise DataSourceNotFoundError(
            format_message(
                f"The data folder {str(root)!r} does not exist.",
                expected="a folder with one subfolder of images per class",
                received={"source": str(folder)},
            )
        )
    if not root.is_dir():
        raise DataError(
            format_message(
                f"{str(root)!r} is a file, not a folder.",
                expected="a folder with one subfolder of images per class",
                received={"source": str(folder)},
            )
        )
    class_dirs = _class_folders(root, check_class_names(class_names))
    files = [list_image_files(d) for d in class_dirs]
    _check_not_empty(root, class_dirs, files, after_skipping=False)
    paths = [path for group in files for path in group]
    corrupt = _find_corrupt(paths, verbose)
    files = _without_corrupt(root, folder, class_dirs, files, corrupt, strict)
    paths = np.array([path for group in files for path in group])
    labels = np.concatenate(
        [np.full(len(group), i, dtype=np.int64) for i, group in enumerate(files)]
    )
    if verbose:
        print_msg(f"Found {len(paths)} images belonging to {len(class_dirs)} classes in "
                  f"{str(root)!r}.")

    def load_image(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return to_model_image(decode_file(path), image_size), label

    def make_dataset(indices: np.ndarray) -> tf.data.Dataset:
        dataset = tf.data.Dataset.from_tensor_slices(
            (paths[indices].astype(str), labels[indices].astype(np.int32))
        )
        return dataset.map(load_image, num_parallel_calls=tf.data.AUTOTUNE)

    return SourceData(
        labels=labels,
        class_names=[d.name for d in class_dirs],
        description=f"folder {str(root)!r}",
        make_dataset=make_dataset,
        skipped_files=corrupt,
        fingerprint=array_digest([np.array([d.name for d in class_dirs]),
                                  file_digest(paths.tolist(), root)]),
    )


def _check_not_empty(
    root: Path, class_dirs: list[Path], files: list[list[str]], after_skipping: bool
) -> None:
    empty = [d.name for d, group in zip(class_dirs, files) if not group]
    if not empty:
        return
    why = "no readable images left after skipping corrupt files" if after_skipping else "no images"
    raise DataError(
        format_message(
            f"Class folder(s) {empty} in {str(root)!r} hold {why}.",
            expected=f"at least one image ({', '.join(IMAGE_EXTENSIONS)}) in every class folder",
            fix="Add images, remove the empty folders, or pick classes with `class_names=`.",
            received={"source": str(root), "empty_classes": empty},
        )
    )
