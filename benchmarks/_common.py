"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import datetime
import pathlib
import platform

import keras

BENCHMARKS_MD = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "| date | benchmark | setup | toolkit | baseline | ratio | notes |"


def machine() -> str:
    """A short description of where this ran."""
    import os

    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, keras {keras.__version__}, "
            f"backend {keras.backend.backend()}")


def append_row(benchmark: str, setup: str, toolkit: str, baseline: str, ratio: float | None,
               notes: str = "") -> None:
    """Append one row to the table in docs/benchmarks.md (creating the table if needed)."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    if HEADER not in text:
        text = text.rstrip() + "\n\n" + HEADER + "\n|---|---|---|---|---|---|---|\n"
    date = datetime.date.today().isoformat()
    ratio_text = "-" if ratio is None else f"{ratio:.3f}"
    row = f"| {date} | {benchmark} | {setup} | {toolkit} | {baseline} | {ratio_text} | {notes} |"
    lines = text.rstrip("\n").split("\n")
    # Insert after the last row of the table that starts at HEADER.
    start = lines.index(HEADER)
    end = start + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines.insert(end, row)
    BENCHMARKS_MD.write_text("\n".join(lines) + "\n")
