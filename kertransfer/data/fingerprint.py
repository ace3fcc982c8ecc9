"""Fingerprints of data: short digests that change when the examples do.

Caches (backbone features, a search's resume check) are keyed by what the
data holds, and a fingerprint must not cost loading the data:

- arrays (given in memory by the caller): a digest of their bytes;
- a `DataBundle` split: the source's own fingerprint (for a folder its files'
  paths, sizes and modification times; for TFDS the dataset's name, version
  and split sizes; for arrays their bytes), the split's example indices and
  the image size, all known when the bundle was loaded: nothing is read;
- any other stream (a ``tf.data.Dataset``, a ``PyDataset``): one pass over
  its batches, hashed batch by batch, so memory stays that of one batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from kertransfer.data.batches import as_batches, iterate
from kertransfer.data.forms import _check_xy, form_of

__all__ = ["array_digest", "file_digest", "fingerprint"]


def _update(h, value) -> None:
    if isinstance(value, dict):
        for k in sorted(value):
            h.update(str(k).encode())
            _update(h, value[k])
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _update(h, v)
        return
    a = np.ascontiguousarray(value)
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())


def array_digest(arrays: Iterable) -> str:
    """A short digest of the shapes, dtypes and bytes of ``arrays`` (dicts and
    tuples of arrays too)."""
    h = hashlib.sha256()
    for a in arrays:
        _update(h, a)
    return h.hexdigest()[:16]


def file_digest(paths: Iterable[str], root: str | os.PathLike | None = None) -> str:
    """A short digest of files' paths (relative to ``root``), sizes and modification
    times: it changes when a file is added, removed, renamed or rewritten, and reads
    no file's content."""
    h = hashlib.sha256()
    for path in paths:
        st = os.stat(path)
        name = os.path.relpath(path, root) if root is not None else path
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def fingerprint(data: Any, argument: str = "data", split: str = "train") -> str:
    """A fingerprint of ``data``'s examples (one split of a bundle), read without
    loading the data whole (see the module notes)."""
    form = form_of(data, argument)
    known = getattr(data, "fingerprints", None)
    if form == "bundle" and known and known.get(split):
        tables = getattr(data, "task_tables", None)  # labels per task: other labels, other key
        return known[split] if not tables else array_digest([np.array([known[split]]), tables])
    if form == "images":
        return array_digest([data])
    if form == "xy":
        return array_digest(_check_xy(data, argument))
    if form == "array_data":
        return array_digest(data.as_numpy(split))
    h = hashlib.sha256()
    for batch in iterate(as_batches(data, argument, split=split)):
        _update(h, batch if isinstance(batch, (tuple, list, dict)) else [batch])
    return h.hexdigest()[:16]
