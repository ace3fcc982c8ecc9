"""Backbone features on disk: one streaming pass writes them, training reads them in batches.

`FeatureCache.features` runs the frozen part of a model (up to its pooling
layer, or any function of the images) once over the data, batch by batch,
and appends each batch's outputs to a file; the labels go beside them.
Nothing holds the whole split in memory: not the images (they stream), not
the features (they go to disk as they come). `StoredFeatures` reads an
entry back as a memory-mapped array (`StoredFeatures.array`) or as batches
read from the file with positioned reads (`StoredFeatures.batches`), so an
epoch over features of any size keeps one batch in memory.

An entry is a folder named by its key: the backbone's name and a digest of
its weights, the input size, the preprocessing, the pooling, the compute
dtype, the storage dtype and a fingerprint of the data
(`kertransfer.data.fingerprint`), so a change to any of them is another
entry and stale features are never read. It is written in a hidden
temporary folder and renamed when complete: a killed pass leaves no entry
(`FeatureCache.clear` removes what it left). Processes sharing a folder (the
workers of a search on one machine) take a lock per key, so one computes
and the others read its result. Past ``max_bytes`` the least recently used
entries are deleted. ``kertransfer cache list`` and ``kertransfer cache
clear`` show and empty the default folder (`default_cache_dir`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from kertransfer._fs import usual_mode
from kertransfer.data.fingerprint import array_digest, fingerprint
from kertransfer.data.gathering import each_batch
from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.models.surgery import feature_predictor
from kertransfer.validation import check_int

__all__ = ["DEFAULT_MAX_BYTES", "FeatureCache", "StoredFeatures", "default_cache_dir",
           "feature_key"]

#: The default size limit of a cache folder (least recently used entries go first).
DEFAULT_MAX_BYTES = 10 << 30
_DTYPES = ("float32", "float16")
_TMP = ".tmp-"


def default_cache_dir() -> pathlib.Path:
    """The default feature-cache folder: ``$KERTRANSFER_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/kertransfer/features`` (``~/.cache/kertransfer/features``)."""
    if os.environ.get("KERTRANSFER_CACHE_DIR"):
        return pathlib.Path(os.environ["KERTRANSFER_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "kertransfer" / "features"


def feature_key(model, data_fingerprint: str, weights_digest: str | None = None,
                extra: str = "") -> str:
    """A key that changes when anything that changes ``model``'s features does:
    backbone name, weights digest (``weights_digest``, default the backbone's), input
    size, preprocessing, pooling, compute dtype, the data's fingerprint and ``extra``."""
    parts = [
        getattr(model, "backbone_name", "custom"),
        weights_digest or array_digest(model.backbone.get_weights()),
        "x".join(str(d) for d in model.input_shape[1:]),
        getattr(model, "preprocessing", "none"),
        getattr(model, "pooling", "none"),
        model.backbone.compute_dtype,
        data_fingerprint,
    ]
    return "-".join(str(p) for p in parts) + (f"-{extra}" if extra else "")


class StoredFeatures:
    """One cache entry: ``rows`` feature rows of shape ``row_shape`` and their labels.

    Attributes:
        path: The entry's folder.
        rows: Number of examples.
        row_shape: Shape of one example's features.
        dtype: Storage dtype (``float32`` or ``float16``).
        labels: The labels (an array, a dict per task, or None).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        meta = json.loads((self.path / "meta.json").read_text())
        self.rows, self.row_shape = int(meta["rows"]), tuple(meta["row_shape"])
        self.dtype = np.dtype(meta["dtype"])
        self.labels = _read_labels(self.path / "labels.npz")

    @property
    def nbytes(self) -> int:
        return self.rows * int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    def array(self) -> np.ndarray:
        """The features as a read-only memory-mapped array ``[rows, *row_shape]``."""
        if self.rows == 0:
            return np.zeros((0, *self.row_shape), self.dtype)
        return np.memmap(self.path / "features.bin", self.dtype, "r",
                         shape=(self.rows, *self.row_shape))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Float32 features of ``rows`` (in that order), read from the file."""
        rows = np.asarray(rows, dtype=np.int64)
        width = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        out = np.empty((len(rows), *self.row_shape), self.dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        with open(self.path / "features.bin", "rb") as f:
            for run in np.split(np.arange(len(rows)), breaks):  # one read per run of rows
                if len(run):
                    f.seek(int(sorted_rows[run[0]]) * width)
                    chunk = np.frombuffer(f.read(len(run) * width), np.uint8)
                    flat[run[0]:run[-1] + 1] = chunk.reshape(len(run), -1)
        result = np.empty_like(out)
        result[order] = out
        return result.astype("float32", copy=False)

    def batches(self, batch_size: int, *, labels: Any = None, shuffle: bool = False,
                seed: int | None = None) -> FeatureBatches:
        """The entry as ``fit`` reads it: batches ``(features, labels)`` read from disk
        one at a time (``labels`` default the stored ones), reshuffled every epoch with
        ``shuffle`` by a generator of its own, seeded with ``seed`` (None: a seed drawn
        from NumPy's global generator, which is read, never reset)."""
        return FeatureBatches(self, self.labels if labels is None else labels, batch_size,
                              shuffle=shuffle, seed=seed)


class FeatureBatches(keras.utils.PyDataset):
    """Batches of stored features, in an order drawn from a seeded generator each epoch
    (``shuffle``) or in order. Labels may be an array or a dict of arrays (one per head)."""

    def __init__(self, stored: StoredFeatures, labels: Any, batch_size: int,
                 shuffle: bool = True, seed: int | None = None):
        super().__init__()
        self.stored, self.labels = stored, labels
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        # seed None: drawn from NumPy's global generator (read, never reset), so that
        # keras.utils.set_random_seed makes the order repeatable, as fit's own shuffling.
        if seed is None and shuffle:
            seed = np.random.randint(2**31 - 1)
        self._rng = np.random.default_rng(seed)
        self._order = self._new_order()

    def _new_order(self) -> np.ndarray:
        n = self.stored.rows
        return self._rng.permutation(n) if self.shuffle else np.arange(n)

    def __len__(self) -> int:
        return -(-self.stored.rows // self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        feats = self.stored.take(rows)
        if self.labels is None:
            return feats
        return feats, keras.tree.map_structure(lambda a: np.asarray(a)[rows], self.labels)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._new_order()


def _write_labels(path: pathlib.Path, labels: Any) -> None:
    if labels is None:
        np.savez(path, __none__=np.zeros(0))
    elif isinstance(labels, dict):
        np.savez(path, **{f"task:{k}": np.asarray(v) for k, v in labels.items()})
    else:
        np.savez(path, labels=np.asarray(labels))


def _read_labels(path: pathlib.Path) -> Any:
    with np.load(path) as f:
        names = list(f.files)
        if "__none__" in names:
            return None
        if "labels" in names:
            return f["labels"]
        return {k[len("task:"):]: f[k] for k in names}


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """Hold an exclusive lock on ``path`` (created) while the block runs; a no-op
    where the platform has no ``fcntl``."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class FeatureCache:
    """Features on disk, keyed so that stale features are never read (see the module notes).

    Args:
        directory: The cache folder (default: `default_cache_dir`).
        max_bytes: Size limit of the folder's entries; past it the least
            recently used ones are deleted after a write (None: no limit).
        dtype: ``"float32"`` or ``"float16"`` (half the disk and reads; features
            come back as float32 either way).
    """

    def __init__(self, directory: str | os.PathLike | None = None, *,
                 max_bytes: int | None = DEFAULT_MAX_BYTES, dtype: str = "float32"):
        self.directory = pathlib.Path(directory).expanduser() if directory is not None \
            else default_cache_dir()
        self.max_bytes = check_int(max_bytes, "max_bytes", minimum=0, allow_none=True)
        if dtype not in _DTYPES:
            raise InvalidArgumentError(format_message(
                "dtype must be 'float32' or 'float16'.", received={"dtype": dtype}))
        self.dtype = dtype

    def key(self, model, data: Any = None, *, argument: str = "data", split: str = "train",
            extra: str = "", weights_digest: str | None = None,
            data_fingerprint: str | None = None) -> str:
        """The key of ``model``'s features on ``data`` (one split of a bundle), or on
        the data whose fingerprint is ``data_fingerprint``."""
        fp = data_fingerprint or fingerprint(data, argument, split)
        return feature_key(model, fp, weights_digest, extra=f"{self.dtype}{extra}")

    def features(self, model, data: Any, *, argument: str = "data", split: str = "train",
                 function: Callable | None = None, key: str | None = None,
                 batch_size: int = 64, verbose: int = 1) -> tuple[StoredFeatures, bool]:
        """``model``'s pooled features on ``data`` (one split of a bundle, unaugmented),
        from disk when its key is there, else computed in one streaming pass and stored.

        Args:
            model: A model from ``build_transfer_model``.
            data: Any accepted form (see `kertransfer.data.adapter`), with labels.
            argument: The caller's argument name, for messages.
            split: The split of a bundle.
            function: Numpy images ``[B, ...]`` to outputs (default: the model up
                to its pooling layer, `kertransfer.models.surgery.batch_predictor`;
                pass one built once to reuse its compiled function across calls).
                Without ``key``, it must compute the model's pooled features.
            key: The entry's key (default `key` of ``model`` and ``data``).
            batch_size: Images per batch for arrays.
            verbose: A progress bar over the pass.

        Returns:
            ``(StoredFeatures, hit)``.
        """
        key = key or self.key(model, data, argument=argument, split=split)
        path = self.directory / key
        if (path / "meta.json").is_file():
            os.utime(path / "meta.json")  # last used, for the eviction
            return StoredFeatures(path), True
        self.directory.mkdir(parents=True, exist_ok=True)
        with _locked(self.directory / f".{key}.lock"):
            if (path / "meta.json").is_file():  # another process wrote it meanwhile
                return StoredFeatures(path), True
            if function is None:
                function = feature_predictor(model)
            self._write(path, data, argument, split, function, batch_size, verbose)
        with contextlib.suppress(OSError):
            os.remove(self.directory / f".{key}.lock")
        self.evict(keep=key)
        return StoredFeatures(path), False

    def _write(self, path: pathlib.Path, data, argument, split, function, batch_size,
               verbose) -> None:
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{_TMP}{path.name}.", dir=self.directory))
        try:
            rows, row_shape, labels = 0, None, []
            with open(tmp / "features.bin", "wb") as f:
                for x, y in each_batch(data, argument, labels="optional", batch_size=batch_size,
                                       split=split, verbose=verbose):
                    out = np.asarray(keras.ops.convert_to_numpy(function(x)))
                    row_shape = out.shape[1:]
                    f.write(np.ascontiguousarray(out, dtype=self.dtype).tobytes())
                    rows += len(out)
                    if y is not None:
                        labels.append(y)
            _write_labels(tmp / "labels.npz", _joined(labels))
            (tmp / "meta.json").write_text(json.dumps({
                "rows": rows, "row_shape": list(row_shape), "dtype": self.dtype,
                "created": time.time()}))
            usual_mode(tmp, directory=True)
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if (path / "meta.json").is_file():  # lost a race to an identical entry
                return
            raise

    def entries(self) -> list[dict]:
        """The complete entries, most recently used first: ``key``, ``rows``,
        ``row_shape``, ``dtype``, ``bytes`` and ``last_used`` (seconds since the epoch)."""
        found = []
        if not self.directory.is_dir():
            return found
        for path in self.directory.iterdir():
            meta = path / "meta.json"
            if path.name.startswith(".") or not meta.is_file():
                continue
            with contextlib.suppress(OSError, ValueError, KeyError):
                stored = StoredFeatures(path)
                found.append({"key": path.name, "rows": stored.rows,
                              "row_shape": stored.row_shape, "dtype": stored.dtype.name,
                              "bytes": _folder_bytes(path),
                              "last_used": meta.stat().st_mtime})
        return sorted(found, key=lambda e: -e["last_used"])

    def evict(self, keep: str | None = None) -> list[str]:
        """Delete the least recently used entries (never ``keep``) until the folder's
        entries fit ``max_bytes``, and what passes killed over a day ago left;
        returns the keys deleted."""
        self._remove_stale()
        if self.max_bytes is None:
            return []
        entries = self.entries()
        total, gone = sum(e["bytes"] for e in entries), []
        for entry in reversed(entries):
            if total <= self.max_bytes:
                break
            if entry["key"] == keep:
                continue
            shutil.rmtree(self.directory / entry["key"], ignore_errors=True)
            total -= entry["bytes"]
            gone.append(entry["key"])
        return gone

    def _remove_stale(self, age: float = 86400.0) -> None:
        """Remove what passes killed over ``age`` seconds ago left (hidden folders)."""
        if not self.directory.is_dir():
            return
        now = time.time()
        for path in self.directory.glob(f"{_TMP}*"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > age:
                    shutil.rmtree(path, ignore_errors=True)

    def clear(self) -> int:
        """Delete every entry and what killed passes left; returns the entries deleted."""
        count = len(self.entries())
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                if (path / "meta.json").is_file() or path.name.startswith(_TMP):
                    shutil.rmtree(path, ignore_errors=True)
                elif path.name.startswith(".") and path.name.endswith(".lock"):
                    path.unlink(missing_ok=True)  # a waiting process still holds its inode
        return count


def _folder_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def _joined(parts: list):
    if not parts:
        return None
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)
