"""Refresh the ``$ kertransfer ... --help`` blocks of docs/cli.md from the real parser.

    python docs/gen_cli.py          # rewrite the blocks
    python docs/gen_cli.py --check  # exit 1 if a block is stale
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import sys

CLI_MD = pathlib.Path(__file__).resolve().parent / "cli.md"
BLOCK = re.compile(r"(```text\n\$ kertransfer(?P<args>[^\n]*) --help\n)(?P<body>.*?)(```)",
                   re.DOTALL)


def help_text(args: list[str]) -> str:
    """The --help output of ``kertransfer ARGS`` at 80 columns."""
    from kertransfer.cli.main import build_parser

    os.environ["COLUMNS"] = "80"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args([*args, "--help"])
    return out.getvalue()


def render(text: str) -> str:
    """``text`` with every help block replaced by the current output."""
    return BLOCK.sub(
        lambda m: m.group(1) + help_text(m.group("args").split()) + m.group(4), text
    )


def main(argv: list[str]) -> int:
    text = CLI_MD.read_text()
    new = render(text)
    if "--check" in argv:
        return 0 if new == text else 1
    CLI_MD.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
