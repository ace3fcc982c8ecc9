"""Reading a PyTorch state dict into numpy, without torch and without running its code.

``torch.save`` writes a pickle, and unpickling an arbitrary pickle runs
arbitrary code. This reader unpickles with an allow-list: the only globals a
file may name are ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``
(``_rebuild_parameter`` as well) and the typed storage classes
(``torch.FloatStorage``, ``torch.LongStorage``, ...). Each maps to a harmless
stand-in here; anything else is refused with a `WeightsError` before it is
resolved, so nothing from the file is imported or called.

Two layouts are read:

- the legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``,
  and every file written before torch 1.6): five pickles in a row (magic
  number, protocol version, system info, the object, the list of storage keys),
  then each storage as a little-endian int64 element count and its raw bytes;
- the zip format (torch 1.6 and later): ``<archive>/data.pkl`` with one
  ``<archive>/data/<key>`` entry of raw bytes per storage.

Example::

    from kertransfer.models.imagenet.torch_pickle import load_state_dict
    tensors = load_state_dict("efficientnet-lite0-57934424.pth")
    tensors["_conv_stem.weight"].shape   # (32, 3, 3, 3), OIHW
"""

from __future__ import annotations

import collections
import io
import os
import pathlib
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

from kertransfer.errors import WeightsError, WeightsNotFoundError, format_message
from kertransfer.validation import is_int

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch's typed storage names and the little-endian dtype of their elements.
_STORAGE_DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _StorageType:
    """Stands in for ``torch.<X>Storage``: only its element dtype is kept."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _StorageRef:
    """A storage named by the pickle, filled from the raw bytes afterwards."""

    __slots__ = ("key", "dtype", "numel", "data")

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor: a strided view of a storage, made into an array at the end."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride


def _refuse(what: str, source: str) -> WeightsError:
    return WeightsError(
        format_message(
            f"{source} is not a plain PyTorch state dict: it names {what}, which this reader "
            "does not load (unpickling it could run code from the file).",
            expected="a state dict of tensors (collections.OrderedDict, "
            "torch._utils._rebuild_tensor_v2 and torch.<Type>Storage only)",
            fix="Load the checkpoint with torch in a trusted environment and save "
            "model.state_dict() again.",
            received={"path": source},
        )
    )


def _ints(value: Any) -> bool:
    return isinstance(value, tuple) and all(is_int(v) and v >= 0 for v in value)


def _rebuild_tensor(storage, storage_offset, size, stride, *_rest):
    if not isinstance(storage, _StorageRef) or not is_int(storage_offset) \
            or not _ints(tuple(size)) or not _ints(tuple(stride)) or len(size) != len(stride):
        raise ValueError("malformed tensor record")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, _requires_grad=False, _backward_hooks=None, *_rest):
    if not isinstance(data, _TensorRef):
        raise ValueError("malformed parameter record")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals come from the allow-list only."""

    def __init__(self, file: BinaryIO, source: str, storages: dict | None):
        super().__init__(file)
        self._source = source
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES and self._storages is not None:
            return _StorageType(name)
        raise _refuse(f"the global {module}.{name}", self._source)

    def persistent_load(self, pid):
        if self._storages is None:
            raise _refuse("a persistent object", self._source)
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and is_int(pid[4]) and pid[4] >= 0):
            raise _refuse(f"the persistent record {str(pid)[:80]}", self._source)
        if len(pid) == 6 and pid[5] is not None:
            raise _refuse("a storage view (an old format this reader does not cover)",
                          self._source)
        key = pid[2]
        ref = self._storages.get(key)
        if ref is None:
            ref = self._storages[key] = _StorageRef(key, pid[1].dtype, pid[4])
        elif ref.dtype != pid[1].dtype or ref.numel != pid[4]:
            raise _refuse(f"storage {key!r} with two types", self._source)
        return ref


def _unpickle(file: BinaryIO, source: str, storages: dict | None = None) -> Any:
    try:
        return _RestrictedUnpickler(file, source, storages).load()
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - any malformed pickle
        raise WeightsError(
            format_message(
                f"{source} could not be read as a PyTorch checkpoint "
                f"({type(exc).__name__}: {exc}).",
                expected="a file written by torch.save(state_dict)",
                received={"path": source},
            )
        ) from None


def _truncated(source: str, key: str) -> WeightsError:
    return WeightsError(
        format_message(f"{source} ends inside the data of storage {key!r}.",
                       expected="the complete file written by torch.save",
                       fix="Reinstall or download the file again.",
                       received={"path": source}))


def _read_legacy(file: BinaryIO, source: str) -> tuple[Any, dict]:
    magic = _unpickle(file, source)
    if magic != _LEGACY_MAGIC:
        raise WeightsError(format_message(
            f"{source} is not a PyTorch checkpoint (no torch.save magic number).",
            expected="a .pth/.pt file written by torch.save", received={"path": source}))
    protocol = _unpickle(file, source)
    if protocol != _LEGACY_PROTOCOL:
        raise WeightsError(format_message(
            f"{source} uses torch serialization protocol {protocol!r}, which this reader "
            "does not know.", expected=f"protocol {_LEGACY_PROTOCOL}",
            received={"path": source}))
    info = _unpickle(file, source)
    if not isinstance(info, dict) or not info.get("little_endian", True):
        raise WeightsError(format_message(
            f"{source} was written on a big-endian machine.",
            expected="a little-endian checkpoint", received={"path": source}))
    storages: dict[str, _StorageRef] = {}
    obj = _unpickle(file, source, storages)
    keys = _unpickle(file, source)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) \
            or set(keys) != set(storages):
        raise _refuse("a storage list that does not match its tensors", source)
    for key in keys:
        ref = storages[key]
        head = file.read(8)
        if len(head) != 8:
            raise _truncated(source, key)
        (numel,) = struct.unpack("<q", head)
        if numel != ref.numel:
            raise _refuse(f"storage {key!r} with {numel} elements instead of {ref.numel}",
                          source)
        raw = file.read(numel * ref.dtype.itemsize)
        if len(raw) != numel * ref.dtype.itemsize:
            raise _truncated(source, key)
        ref.data = np.frombuffer(raw, dtype=ref.dtype)
    return obj, storages


def _read_zip(path: pathlib.Path, source: str) -> tuple[Any, dict]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise WeightsError(format_message(
                f"{source} is a zip file without one <archive>/data.pkl.",
                expected="a file written by torch.save", received={"path": source}))
        root = pkl[0].split("/", 1)[0]
        storages: dict[str, _StorageRef] = {}
        obj = _unpickle(io.BytesIO(archive.read(pkl[0])), source, storages)
        for key, ref in storages.items():
            entry = f"{root}/data/{key}"
            if entry not in names:
                raise _truncated(source, key)
            raw = archive.read(entry)
            if len(raw) < ref.numel * ref.dtype.itemsize:
                raise _truncated(source, key)
            ref.data = np.frombuffer(raw[: ref.numel * ref.dtype.itemsize], dtype=ref.dtype)
    return obj, storages


def _materialize(name: str, ref: _TensorRef, source: str) -> np.ndarray:
    data = ref.storage.data
    span = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride) if n > 0)
    if any(n == 0 for n in ref.shape):
        return np.zeros(ref.shape, dtype=data.dtype)
    if span >= data.size:
        raise _refuse(f"tensor {name!r} reaching past its storage", source)
    item = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[ref.offset:], shape=ref.shape, strides=tuple(s * item for s in ref.stride),
        writeable=False)
    return np.array(view, copy=True)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict saved with ``torch.save`` into numpy arrays.

    Args:
        path: A ``.pth``/``.pt`` file, legacy or zip format.

    Returns:
        ``{parameter name: array}`` in the file's order, with torch's layouts
        (a convolution kernel is ``(out, in, height, width)``) and dtypes
        (``float32`` weights, ``int64`` counters such as BatchNorm's
        ``num_batches_tracked``).

    Raises:
        WeightsNotFoundError: The file does not exist.
        WeightsError: The file names anything but tensors, storages and an
            ordered dict (nothing it names is imported or run), or it is not
            a complete checkpoint.
    """

    path = pathlib.Path(path)
    source = str(path)
    if not path.is_file():
        raise WeightsNotFoundError(format_message(
            f"The checkpoint {source!r} does not exist.",
            expected="the path of a file written by torch.save", received={"path": source}))
    if zipfile.is_zipfile(path):
        obj, _ = _read_zip(path, source)
    else:
        with open(path, "rb") as file:
            obj, _ = _read_legacy(file, source)
    if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, _TensorRef) for k, v in obj.items()):
        raise _refuse("an object other than a flat {name: tensor} state dict", source)
    return {name: _materialize(name, ref, source) for name, ref in obj.items()}
