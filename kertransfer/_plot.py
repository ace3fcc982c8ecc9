"""Matplotlib without a display, and figures written as PNGs atomically."""

from __future__ import annotations

import os
import pathlib

from kertransfer._fs import atomic_file


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (unless a backend was chosen already)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 80, tight: bool = True,
                close: bool = True) -> pathlib.Path:
    """Write ``fig`` to ``path`` as a PNG (a reader never sees half of it), then close it
    (``close=False``: the caller draws it again and closes it)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None)
    finally:
        if close:
            pyplot().close(fig)
    return path
