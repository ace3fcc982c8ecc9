"""A Griffe extension for the API pages (loaded by mkdocstrings, see ``mkdocs.yml``).

It adapts two habits of the docstrings to Griffe's Google parser, before the
docstrings are parsed:

- Sphinx roles (``:class:`X```) render as a literal ``:class:`` in Markdown,
  and their colon splits a ``Returns:`` line ("A :class:`X` ...") into a type
  and a description. They become plain code spans.
- Doctests render as code only in an ``Examples:`` section; a singular
  ``Example:`` becomes an admonition whose ``>>>`` lines turn into nested block
  quotes, and reStructuredText's ``Example::`` literal block becomes a plain
  paragraph. Both become an ``Examples:`` section (a literal block is fenced as
  Python).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example(::?)\s*$")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):(`[^`]+`)")


def strip_roles(text: str) -> str:
    """Return ``text`` with Sphinx roles turned into code spans (``:class:`X``` to ``X``)."""
    return _ROLE.sub(lambda m: "`" + m.group(1).strip("`").lstrip("~") + "`", text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rewrite_examples(text: str) -> str:
    """Return ``text`` with its ``Example:``/``Example::`` sections as ``Examples:``."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _HEADING.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, colons = match.groups()
        out.append(f"{indent}Examples:")
        i += 1
        if colons == ":":
            continue
        # A literal block: every following line that is blank or indented deeper.
        end = i
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > len(indent)):
            end += 1
        block = lines[i:end]
        trailing = 0
        while block and not block[-1].strip():
            block.pop()
            trailing += 1
        while block and not block[0].strip():
            block.pop(0)
        if block and not block[0].lstrip().startswith(">>>"):
            cut = min(_indent(line) for line in block if line.strip())
            inner = indent + "    "
            block = [f"{inner}```python"] + [
                inner + line[cut:] if line.strip() else "" for line in block
            ] + [f"{inner}```"]
        out.extend(block)
        out.extend([""] * trailing)
        i = end
    return "\n".join(out)


class DocstringCompat(griffe.Extension):
    """Strip Sphinx roles and rewrite ``Example:``/``Example::`` sections as ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        text = strip_roles(docstring.value)
        if "Example:" in text:
            text = rewrite_examples(text)
        docstring.value = text
