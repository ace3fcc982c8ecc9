"""Make ``kertransfer/data/fashion_mnist_subset.npz``, the embedded Fashion-MNIST subset.

Run ``python -m kertransfer.data._make_fashion_subset [FOLDER] [--out FILE]``
where FOLDER holds the official test files ``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz`` (default: Debian's ``dataset-fashion-mnist``
folder, ``/usr/share/datasets/fashion-mnist``).

From the official *test* split, ``numpy.random.default_rng(2017)`` draws 500
images of every class without replacement, class by class in label order;
they are stored sorted by their index in the test split. The file holds
``images`` (uint8 ``[5000, 28, 28]``), ``labels`` (uint8 ``[5000]``),
``test_index`` (uint16 ``[5000]``, the index of each image in the test split),
``seed`` and ``per_class``, compressed with ``numpy.savez_compressed``
(about 2.2 MB).
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from kertransfer.data.fashion_mnist import (
    DEBIAN_DIR,
    FILES,
    SUBSET_FILE,
    SUBSET_PER_CLASS,
    SUBSET_SEED,
    read_idx,
)

__all__ = ["main", "select_subset"]


def select_subset(
    labels: np.ndarray, per_class: int = SUBSET_PER_CLASS, seed: int = SUBSET_SEED
) -> np.ndarray:
    """The test-split indices of the subset: ``per_class`` of every class, sorted.

    Args:
        labels: The labels of the official test split.
        per_class: Images drawn per class.
        seed: Seed of ``numpy.random.default_rng``.

    Returns:
        Sorted int64 indices into the test split.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
              for c in range(int(labels.max()) + 1)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def make_subset(folder: str | pathlib.Path) -> dict[str, np.ndarray]:
    """The subset's arrays, drawn from the test files in ``folder``."""
    folder = pathlib.Path(folder)
    images = read_idx(folder / FILES["test_images"])
    labels = read_idx(folder / FILES["test_labels"])
    index = select_subset(labels)
    return {
        "images": np.ascontiguousarray(images[index]),
        "labels": labels[index].astype(np.uint8),
        "test_index": index.astype(np.uint16),
        "seed": np.int64(SUBSET_SEED),
        "per_class": np.int64(SUBSET_PER_CLASS),
    }


def main(argv: list[str] | None = None) -> pathlib.Path:
    """Write the subset file; returns its path."""
    parser = argparse.ArgumentParser(description="Make the embedded Fashion-MNIST subset.")
    parser.add_argument("folder", nargs="?", default=DEBIAN_DIR,
                        help="folder of the official Fashion-MNIST test files")
    parser.add_argument("--out", default=str(SUBSET_FILE), help="the .npz file to write")
    args = parser.parse_args(argv)
    arrays = make_subset(args.folder)
    out = pathlib.Path(args.out)
    np.savez_compressed(out, **arrays)
    print(f"Wrote {out} ({out.stat().st_size:,} bytes, {len(arrays['labels'])} images)")
    return out


if __name__ == "__main__":
    main()
