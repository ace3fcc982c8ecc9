"""Regenerate the backbone table of ``docs/backbones.md`` from the registry.

Usage::

    python docs/gen_backbones.py          # rewrite the table in place
    python docs/gen_backbones.py --check  # exit 1 if the committed table is stale

The table lists every backbone kertransfer registers itself when imported.
Those specs name their constructor by dotted path (``"keras.applications.ResNet50"``,
imported lazily); backbones registered at run time with a callable (a user's
own, or the ones tests register) are left out, so the table does not depend on
what else ran in the process. The registry is data: nothing is built here.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

START = "<!-- backbones-table:start -->"
END = "<!-- backbones-table:end -->"
DOC = pathlib.Path(__file__).resolve().parent / "backbones.md"
HEADER = (
    "| name | family | default size | min size | preprocessing | blocks | block names |",
    "| --- | --- | ---: | ---: | --- | ---: | --- |",
)


def _import_registry():
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from kertransfer.backbones import get_backbone_spec, list_backbones

    return get_backbone_spec, list_backbones


def is_shipped(spec) -> bool:
    """Whether kertransfer registers ``spec`` itself (a dotted-path constructor)."""
    return isinstance(spec.constructor, str) and spec.constructor.startswith(
        ("keras.", "kertransfer.")
    )


def shipped_specs() -> list:
    """The specs of the backbones kertransfer registers, sorted by name."""
    get_backbone_spec, list_backbones = _import_registry()
    specs = [get_backbone_spec(name) for name in list_backbones()]
    return [spec for spec in specs if is_shipped(spec)]


def backbone_table() -> str:
    """Render the markdown table (header, rule and one row per backbone)."""
    rows = list(HEADER)
    for spec in shipped_specs():
        rows.append(
            f"| `{spec.name}` | {spec.family} | {spec.default_size} | {spec.min_size} "
            f"| {spec.preprocessing} | {len(spec.blocks)} | {', '.join(spec.block_names)} |"
        )
    return "\n".join(rows)


def table_section(text: str) -> str:
    """Return what lies between the markers of ``text`` (without the markers)."""
    try:
        start = text.index(START) + len(START)
        end = text.index(END, start)
    except ValueError:
        raise ValueError(f"{DOC} must contain the markers {START} and {END}") from None
    return text[start:end].strip("\n")


def render(text: str) -> str:
    """Return ``text`` with the section between the markers replaced by a fresh table."""
    table_section(text)  # checks the markers
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{backbone_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when the table is out of date")
    args = parser.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print(f"{DOC} is out of date: run python docs/gen_backbones.py", file=sys.stderr)
            return 1
        print(f"{DOC} is up to date")
        return 0
    if new != text:
        DOC.write_text(new, encoding="utf-8")
        print(f"Updated the backbone table in {DOC}")
    else:
        print(f"{DOC} already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
