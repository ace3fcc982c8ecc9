"""File-system helpers shared by the layers (imports nothing from kertransfer)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile


def usual_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by ``tempfile`` (mode 0600, or 0700 for a folder) the mode a
    plain ``open()`` or ``mkdir()`` would have given it under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; on success it becomes ``path`` (with the
    usual mode), on an error it is removed: a reader never sees a half-written file."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix,
                               dir=os.path.dirname(path) or ".")  # hidden if left by a kill
    os.close(fd)
    try:
        yield tmp
        usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def keras_cache_dir() -> pathlib.Path:
    """The folder of Keras' cached weights: ``$KERAS_HOME/models`` (``~/.keras/models``).

    ``KERAS_HOME`` is read when called. ``weights="imagenet"`` in kertransfer
    passes this folder to Keras' ``get_file``, so a ``KERAS_HOME`` set after
    Keras was imported is honoured too (Keras alone reads it at import).
    Without it, ``~/.keras``, or ``/tmp/.keras`` when the home folder is not
    writable, as Keras decides.
    """
    base = os.environ.get("KERAS_HOME")
    if not base:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    return pathlib.Path(base) / "models"
