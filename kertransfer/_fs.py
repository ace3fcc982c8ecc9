"""File-system helpers shared by the layers (imports nothing from kertransfer)."""

from __future__ import annotations

import os


def usual_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by ``tempfile`` (mode 0600, or 0700 for a folder) the mode a
    plain ``open()`` or ``mkdir()`` would have given it under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)
