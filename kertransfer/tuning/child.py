"""A child process of `kertransfer.tune(..., trials_per_process=N)`.

    python -m kertransfer.tuning.child CHILD_DIR/config.json

Reads the config file it is given (the hypermodel's configuration and the
search settings) and the data beside it (the names of both are
`kertransfer.training.run_folder`'s; kertransfer is imported only after the
config's ``child_setup`` ran), resumes the search in the
search directory, runs at most ``trials_per_process`` trials and exits:
0 when the search is finished, 3 when trials remain, 2 on a kertransfer
error. The parent starts the next child until the search is finished.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import runpy
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    config_file = pathlib.Path(argv[0])
    config = json.loads(config_file.read_text())
    setup = config.get("child_setup")
    if setup and setup.endswith(".py"):
        runpy.run_path(setup)
    elif setup:
        importlib.import_module(setup)

    from kertransfer.errors import KertransferError
    from kertransfer.training.run_folder import CHILD_DATA_FILE
    from kertransfer.tuning.children import CHILD_ERROR, CHILD_MORE
    from kertransfer.tuning.hypermodel import TransferHyperModel
    from kertransfer.tuning.search import tune
    from kertransfer.tuning.tuners import TrialBudgetReached

    settings = dict(config["settings"])
    try:
        data, validation_data = _data(config, config_file.parent / CHILD_DATA_FILE)
        hypermodel = TransferHyperModel.from_config(config["hypermodel"])
        tune(hypermodel, data, validation_data=validation_data, epochs=config["epochs"],
             directory=config["directory"], save_best=False, verbose=config["verbose"],
             _stop_after=config["trials_per_process"], _parent_checked=True, **settings)
    except TrialBudgetReached:
        return CHILD_MORE
    except KertransferError as exc:
        print(f"kertransfer search process: error: {exc}", file=sys.stderr)
        return CHILD_ERROR
    return 0


def _data(config: dict, arrays_file: pathlib.Path):
    """``(data, validation_data)`` as the parent sent them: a bundle loaded again (its
    fingerprints checked) or the arrays of ``arrays_file``."""
    import numpy as np

    from kertransfer.errors import DataError, format_message
    from kertransfer.tuning.children import labels_from

    reload = config.get("load")
    if reload is None:
        with np.load(arrays_file) as f:
            arrays = dict(f)
        return (arrays["x"], labels_from(arrays, "y")), \
            (arrays["x_val"], labels_from(arrays, "y_val"))
    from kertransfer.data import load

    args = dict(reload["args"])
    tasks = args.pop("tasks", None)
    data = load(**args, verbose=0)
    if tasks is not None:
        data = data.with_tasks(tasks)
    if data.fingerprints != reload["fingerprints"]:
        raise DataError(format_message(
            "The data changed since the search started (its files differ).",
            fix="Restore the data, or start the search in a new directory.",
            received={"source": args["source"]}))
    return data, None


if __name__ == "__main__":
    sys.exit(main())
