"""The ``kertransfer`` command: parse (``parser.py``, ``training_parser.py``), import
the backend, dispatch to the commands (``commands.py``, ``training.py``)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from kertransfer.cli.parser import build_parser


def _import_backend(quiet: bool) -> None:
    """Import Keras and its backend, with the backend's C++ start-up lines off stderr if quiet.

    TensorFlow's native libraries write their start-up lines (absl, cuInit, CPU
    features) to file descriptor 2 while they load, whatever
    ``TF_CPP_MIN_LOG_LEVEL`` says; quiet, that descriptor points at a scratch
    file during the import, whose text is shown after all if the import fails.
    """
    if not quiet:
        import keras  # noqa: F401

        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import keras  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if not args.backend_logs:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # TensorFlow's Python warnings too, such as "triggered tf.function retracing" when a
        # command builds several models in turn (the demo's arms, a search's trials).
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    _import_backend(quiet=not args.backend_logs)
    from kertransfer import _serializables

    _serializables.register()
    from kertransfer.cli import commands, training
    from kertransfer.errors import KertransferError

    name = f"run_{args.command}"
    run = getattr(training, name, None) or getattr(commands, name)
    try:
        return run(args)
    except KertransferError as exc:
        print(f"kertransfer {args.command}: error: {exc}", file=sys.stderr)
        return 2
