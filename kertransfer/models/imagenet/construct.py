"""ImageNet weights through the Keras cache: which file a backbone reads, and what to say
when it is missing (`construct_with_imagenet`)."""

from __future__ import annotations

import contextlib
import pathlib
import re
import warnings

import keras

from kertransfer._fs import keras_cache_dir
from kertransfer._log import print_msg
from kertransfer.backbones.efficientnet_lite import imagenet_weights_path
from kertransfer.errors import WeightsError, WeightsNotFoundError, format_message
from kertransfer.models.imagenet.install import install_command
from kertransfer.models.weights import _oneline

# Families whose Keras files exist per input size, where a cached 224-pixel file serves the
# sizes whose own file is missing: constructor name -> (Keras' file name, the 224 file's).
_PER_SIZE_FILES = {
    "MobileNet": (re.compile(r"^(mobilenet_\d_\d+)_(\d+)_tf(_no_top)?\.h5$"),
                  r"\1_224_tf\3.h5"),
}
_DEFAULT_SIZE_WARNING = re.compile(r"Weights for input shape \(224, 224\) will be loaded as "
                                   r"the default")
_ANNOUNCED: set[tuple] = set()


def _announce(spec, shape, fname: str, why: str) -> None:
    """Say once per process which ImageNet file a backbone uses at an input size."""
    key = (spec.name, tuple(shape[:2]), fname)
    if key in _ANNOUNCED:
        return
    _ANNOUNCED.add(key)

    print_msg(f"kertransfer: {spec.name} at {shape[0]}x{shape[1]} uses the ImageNet weights of "
              f"{fname}, trained at 224x224 ({why}).")


def _per_size(spec):
    """The ``_PER_SIZE_FILES`` entry of ``spec``'s constructor, or None."""
    ctor = spec.constructor if isinstance(spec.constructor, str) else getattr(
        spec.constructor, "__name__", "")
    return _PER_SIZE_FILES.get(ctor.rsplit(".", 1)[-1])


@contextlib.contextmanager
def _keras_get_file(spec, shape, record: list):
    """Route Keras' ``get_file`` calls while ``spec`` is constructed.

    Each call is recorded (file, origin, target path; ``path`` once found),
    reads the cache folder of `keras_cache_dir`, and for the families of
    ``_PER_SIZE_FILES`` a missing per-size file is replaced by the cached
    224-pixel file, without a download.
    """
    from keras.src.utils import file_utils

    original = file_utils.get_file
    per_size = _per_size(spec)

    def wrapper(fname=None, origin=None, *args, **kwargs):
        if not args and "cache_dir" not in kwargs:
            kwargs["cache_dir"] = str(keras_cache_dir().parent)
        base = pathlib.Path(kwargs.get("cache_dir") or keras_cache_dir().parent)
        name = fname or (origin.rsplit("/", 1)[-1] if origin else "?")
        target = base / kwargs.get("cache_subdir", "datasets") / name
        entry = {"fname": name, "origin": origin, "target": target, "path": None}
        record.append(entry)
        if per_size and not target.exists():
            match = per_size[0].match(name)
            fallback = target.with_name(per_size[0].sub(per_size[1], name)) if match else None
            if fallback is not None and fallback != target and fallback.is_file():
                _announce(spec, shape, fallback.name,
                          f"{name} is not in {target.parent}; put it there to use it")
                entry["path"] = str(fallback)
                return entry["path"]
        entry["path"] = original(fname, origin, *args, **kwargs)
        return entry["path"]

    file_utils.get_file = wrapper
    try:
        yield
    finally:
        file_utils.get_file = original


def _own_files(spec, include_top: bool) -> list[str]:
    """The ImageNet file a family reads itself, not through Keras' ``get_file``:
    EfficientNet-Lite's converted file (`kertransfer weights install`)."""
    if spec.family != "efficientnet_lite":
        return []
    path = imagenet_weights_path(int(spec.name.removeprefix("efficientnet_lite")), include_top)
    return [str(path)] if path.is_file() else []


def _install_hint(name: str) -> str | None:
    return install_command(name)


def construct_with_imagenet(spec, input_shape, include_top: bool = False,
                            files: list | None = None) -> keras.Model:
    """Construct ``spec`` with ImageNet weights through the Keras cache.

    Keras' file for the size (``get_file``, ``model.load_weights``) is read
    from `keras_cache_dir`. With ``include_top``, the whole ImageNet classifier
    at the family's own size (``input_shape`` then names the size asked for).
    At a size Keras has no file for, the 224-pixel
    file is used, and kertransfer says so once per process instead of Keras'
    warning on every build; for MobileNet v1 a missing 128/160/192 file is
    also replaced by a cached 224 file. ``files``, a list, receives the paths
    of the files read.

    Raises:
        WeightsNotFoundError: The weights are not cached and cannot be
            downloaded; the message names the file, where to put it, and
            ``kertransfer weights install NAME`` when that can install it.
        WeightsError: The cached file exists but does not load.
    """
    record: list = []
    shape = tuple(input_shape) if input_shape is not None else (spec.default_size,
                                                                spec.default_size, 3)
    try:
        with _keras_get_file(spec, shape, record), warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("always", message=_DEFAULT_SIZE_WARNING.pattern)
            model = spec.construct(None if include_top else shape, weights="imagenet",
                                   include_top=include_top)
    except Exception as exc:  # noqa: BLE001 - any download or load failure
        if not record:  # not Keras' loading path: the constructor's own error
            raise
        raise _not_loaded(spec, shape, record[-1], exc) from None
    if files is not None:
        files.extend(entry["path"] for entry in record if entry["path"])
        files.extend(_own_files(spec, include_top))
    for w in caught:
        if _DEFAULT_SIZE_WARNING.search(str(w.message)):
            used = record[-1]["fname"] if record else "the 224-pixel file"
            _announce(spec, shape, used, f"Keras has no file for {shape[0]}x{shape[1]}; "
                      "the convolutions fit any size")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model


def _not_loaded(spec, shape, entry: dict, exc: BaseException) -> WeightsError:
    """The error for Keras' ImageNet file of ``spec`` that is missing or does not load."""
    hint = _install_hint(spec.name)
    target = entry["target"]
    if entry["path"] is not None:  # the file was there; loading it failed
        again = f"`{hint} --force`" if hint else "delete it (Keras downloads it again)"
        return WeightsError(
            format_message(
                f"The cached ImageNet file {entry['path']} of {spec.name!r} does not load "
                f"({type(exc).__name__}: {_oneline(exc)}).",
                fix=f"Replace it: {again}.",
                received={"backbone": spec.name, "weights": "imagenet"},
            )
        )
    expected = f"the file {entry['fname']} at {target}"
    per_size = _per_size(spec)
    if per_size and per_size[0].match(entry["fname"]):
        default = per_size[0].sub(per_size[1], entry["fname"])
        if default != entry["fname"]:
            expected += f", or {default} (used at every size)"
    if hint:
        fix = (f"Run `{hint}` (offline: it converts the weights from a package of the "
               f"offline-weights extra, pip install -e \".[offline-weights]\") into "
               f"{target.parent}, or copy Keras' file {entry['origin']} to that path")
    else:
        fix = (f"Download {entry['origin']} on a machine with network and copy it to that "
               f"path")
    fix += ("; set KERAS_HOME to use another cache folder. Offline, use weights=None or a "
            "local weights file.")
    return WeightsNotFoundError(
        format_message(
            f"ImageNet weights for {spec.name!r} at {shape[0]}x{shape[1]} are not in the "
            f"Keras cache and could not be downloaded ({type(exc).__name__}: "
            f"{_oneline(exc)}).",
            expected=expected,
            fix=fix,
            received={"backbone": spec.name, "weights": "imagenet"},
        )
    )
