"""Install converted ImageNet weights into the cache that ``weights="imagenet"`` reads.

``install_weights(name)`` runs the converter of ``name`` (`CONVERTERS`) into a
hidden temporary folder inside the cache folder, where the converter writes its
files under their final names and checks them; only when every check passed
are the files renamed into place (one ``os.replace`` each, on the same file
system), and the manifest ``kertransfer_weights.json`` records them last. A
failed check, an error or a kill leaves no file under a name that Keras reads;
a temporary folder left by a killed process is removed by the next install.

A converter is ``convert(destination_dir: pathlib.Path, *, name: str,
verbose: int) -> dict``: it writes into ``destination_dir`` (which exists and
is empty), raises `WeightsConversionError` when a check fails, and returns
``{"name", "source", "files", "checks"}`` with ``files`` the names it wrote.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable

from kertransfer._fs import atomic_file, keras_cache_dir, usual_mode
from kertransfer._log import print_msg
from kertransfer.backbones import list_backbones
from kertransfer.errors import (
    InvalidArgumentError,
    UnknownBackboneError,
    WeightsConversionError,
    format_message,
    suggest,
)
from kertransfer.models.imagenet import lite, mobilenet_v1

#: Backbone name: its converter, ``convert(destination_dir, *, name, verbose) -> report``.
CONVERTERS: dict[str, Callable[..., dict]] = {
    "mobilenet": mobilenet_v1.convert,
    "efficientnet_lite0": lite.convert,
    "efficientnet_lite1": lite.convert,
    "efficientnet_lite2": lite.convert,
}
MANIFEST = "kertransfer_weights.json"
_TMP_PREFIX = ".kertransfer-install-"
_LOCK = ".kertransfer_weights.lock"


def cache_folder(path: str | os.PathLike | None = None) -> pathlib.Path:
    """``path``, or the folder Keras caches weights in (``$KERAS_HOME/models``)."""

    return pathlib.Path(path) if path is not None else keras_cache_dir()


def installable() -> list[str]:
    """The backbones `install_weights` can install."""
    return sorted(CONVERTERS)


def install_command(name: str) -> str | None:
    """``kertransfer weights install NAME`` when ``name`` can be installed, else None."""
    return f"kertransfer weights install {name}" if name in CONVERTERS else None


def _check_name(name) -> str:
    key = str(name).strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key in CONVERTERS:
        return key

    if key in list_backbones():
        raise InvalidArgumentError(
            format_message(
                f"kertransfer has no offline converter for {key!r}.",
                expected=f"one of {installable()}",
                fix="Its weights='imagenet' downloads Keras' file into the Keras cache on a "
                    "machine with network; copy that file to the same folder offline "
                    "(see docs/offline-weights.md).",
                received={"name": name},
            )
        )
    raise UnknownBackboneError(
        format_message(f"Unknown backbone {name!r} for weights install."
                       + suggest(str(name), installable()),
                       expected=f"one of {installable()}", received={"name": name})
    )


def _digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(folder: pathlib.Path) -> dict:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(folder: pathlib.Path, data: dict) -> None:
    with atomic_file(folder / MANIFEST) as tmp:
        pathlib.Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _locked(folder: pathlib.Path):
    """Serialize installs into one folder (POSIX advisory lock; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / _LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _file_state(folder: pathlib.Path, fname: str, record: dict) -> str:
    """"ok", "missing" or "changed" for a file the manifest records."""
    path = folder / fname
    if not path.is_file():
        return "missing"
    if path.stat().st_size != record.get("size") or _digest(path) != record.get("sha256"):
        return "changed"
    return "ok"


def _valid(folder: pathlib.Path, entry: dict | None) -> bool:
    files = (entry or {}).get("files") or {}
    return bool(files) and all(_file_state(folder, f, r) == "ok" for f, r in files.items())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(folder: pathlib.Path) -> None:
    """Remove temporary folders of installs whose process is gone."""
    for tmp in folder.glob(_TMP_PREFIX + "*"):
        try:
            pid = int(tmp.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if tmp.is_dir() and not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _same_structure(a: pathlib.Path, b: pathlib.Path) -> bool:
    """Whether two weight files hold the same datasets with the same shapes."""
    if a.suffix not in (".h5", ".hdf5"):
        return a.stat().st_size == b.stat().st_size
    import h5py

    def layout(path):
        found = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda k, v: found.__setitem__(k, v.shape)
                         if isinstance(v, h5py.Dataset) else None)
        return found

    try:
        return layout(a) == layout(b)
    except OSError:
        return False


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def install_weights(name: str, *, cache_dir: str | os.PathLike | None = None,
                    force: bool = False, verbose: int = 1) -> dict:
    """Convert the ImageNet weights of ``name`` and install them where Keras reads them.

    Offline: the weights come from a package of the ``offline-weights`` extra
    (``pip install -e ".[offline-weights]"``), never from the network. The
    converted files are checked (top-1 on sample photos, and for MobileNet v1
    the outputs of the original graph) before they are installed, and
    ``weights="imagenet"`` then loads them like a download: for
    ``keras.applications`` families through Keras' own loader.

    Args:
        name: A backbone name, one of `installable()` (``"mobilenet"``, ...).
        cache_dir: The folder to install into; ``None``: ``$KERAS_HOME/models``
            (``~/.keras/models``), the folder ``weights="imagenet"`` reads.
        force: Convert and replace the files even when they are installed
            and unchanged, or present from another source.
        verbose: 0 silent; 1 progress and the checks' results.

    Returns:
        The converter's report (``name``, ``source``, ``checks``) with
        ``status`` (``"installed"`` or ``"already installed"``), ``path``
        (the folder), ``files`` (``[{"file", "path", "size", "kept"}]``;
        ``kept``: a valid file of the same name and layout from another
        source, a Keras download say, that was left in place).

    Raises:
        UnknownBackboneError: ``name`` is not a backbone.
        InvalidArgumentError: ``name`` has no offline converter.
        MissingDependencyError: The extra's package is not installed.
        WeightsConversionError: A check failed; nothing was installed.

    Example:
        >>> import kertransfer as kt
        >>> kt.models.install_weights("mobilenet")  # doctest: +SKIP
        Converting mobilenet from nudity 0.2.3 (nudity/files/retrained_graph.pb)
        ...
    """
    key = _check_name(name)
    folder = cache_folder(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        _sweep(folder)
        manifest = _read_manifest(folder)
        entry = manifest.get(key)
        if not force and _valid(folder, entry):
            if verbose:
                print_msg(f"{key}: already installed in {folder} "
                          f"({', '.join(entry['files'])}); force=True (--force) converts again.")
            return {**{k: v for k, v in entry.items() if k != "files"}, "name": key,
                    "status": "already installed", "path": str(folder),
                    "files": [{"file": f, "path": str(folder / f), "size": r["size"],
                               "kept": r.get("kept", False)} for f, r in entry["files"].items()]}
        ours = {f for e in manifest.values() if isinstance(e, dict) for f in e.get("files", {})}
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key}-{os.getpid()}-",
                                            dir=folder))
        try:
            report = CONVERTERS[key](tmp, name=key, verbose=verbose)
            # Names, or paths inside ``tmp``: the files keep their names in the cache.
            written = [pathlib.Path(f).name for f in report.get("files") or []]
            if not written or not all((tmp / f).is_file() for f in written):
                raise WeightsConversionError(
                    format_message(f"The converter of {key!r} did not write the files it "
                                   f"reports ({written}).", received={"name": key}))
            files = {}
            for fname in written:
                final = folder / fname
                kept = (not force and final.is_file() and fname not in ours
                        and _same_structure(final, tmp / fname))
                if not kept:
                    usual_mode(tmp / fname)
                    os.replace(tmp / fname, final)
                files[fname] = {"size": final.stat().st_size, "sha256": _digest(final),
                                "kept": kept}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        record = {"source": str(report.get("source")),
                  "checks": json.loads(json.dumps(report.get("checks", {}), default=str)),
                  "installed": datetime.datetime.now(datetime.timezone.utc)
                  .isoformat(timespec="seconds"),
                  "files": files}
        manifest = _read_manifest(folder)
        manifest[key] = record
        _write_manifest(folder, manifest)
    if verbose:
        for fname, r in files.items():
            how = "kept (already present, same layout)" if r["kept"] else "installed"
            print_msg(f"  {how}: {folder / fname} ({_size(r['size'])})")
        print_msg(f"{key}: ImageNet weights ready; weights='imagenet' reads them offline.")
    return {**report, "source": record["source"], "status": "installed", "path": str(folder),
            "files": [{"file": f, "path": str(folder / f), "size": r["size"], "kept": r["kept"]}
                      for f, r in files.items()]}


def installed_weights(cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """What the weights cache holds: kertransfer's installs, then Keras' other files.

    Args:
        cache_dir: The folder; ``None``: ``$KERAS_HOME/models``.

    Returns:
        One dict per file: ``backbone`` (None for a file kertransfer did not
        install), ``file``, ``path``, ``size`` (bytes; None when missing),
        ``source`` (the package it was converted from, or ``"keras cache"``),
        ``installed`` (when) and ``status``: ``"ok"``, ``"missing"``,
        ``"changed"`` (its content differs from what was installed: run the
        install again) or ``"present"`` (not installed by kertransfer).
    """
    folder = cache_folder(cache_dir)
    if not folder.is_dir():
        return []
    manifest = _read_manifest(folder)
    rows, seen = [], set()
    for backbone in sorted(manifest):
        entry = manifest[backbone]
        if not isinstance(entry, dict):
            continue
        for fname, record in sorted((entry.get("files") or {}).items()):
            path = folder / fname
            seen.add(fname)
            rows.append({"backbone": backbone, "file": fname, "path": str(path),
                         "size": path.stat().st_size if path.is_file() else None,
                         "source": entry.get("source"), "installed": entry.get("installed"),
                         "status": _file_state(folder, fname, record)})
    for path in sorted(folder.iterdir()):
        if (path.is_file() and path.name not in seen and not path.name.startswith(".")
                and path.name != MANIFEST):
            rows.append({"backbone": None, "file": path.name, "path": str(path),
                         "size": path.stat().st_size, "source": "keras cache",
                         "installed": None, "status": "present"})
    return rows
