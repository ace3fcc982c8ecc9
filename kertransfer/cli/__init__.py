"""The ``kertransfer`` command line: argument parsing only; the library does the work."""

from kertransfer.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
