"""Messages to the user, as Keras prints its own.

`print_msg` writes to standard output while Keras' interactive logging is on
(the default) and to the ``kertransfer`` logger once
``keras.config.disable_interactive_logging()`` turned it off, as
``keras.utils.io_utils.print_msg`` does. Callers decide by their ``verbose``.
"""

from __future__ import annotations

import logging
import sys

import keras

logger = logging.getLogger("kertransfer")


def print_msg(message: str) -> None:
    """Show ``message`` (see the module docstring)."""
    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
    else:
        logger.info(message)


def fit_verbose(verbose) -> int:
    """Keras' ``verbose`` for ``fit`` from kertransfer's: ``"auto"`` is a progress bar
    (1) on a terminal and one line per epoch (2) elsewhere (captured logs, notebooks'
    files, CI), where per-step bars would flood the output."""
    if verbose == "auto":
        stream = sys.stdout
        return 1 if hasattr(stream, "isatty") and stream.isatty() else 2
    return verbose
