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

    import numpy as np

    from kertransfer.errors import KertransferError
    from kertransfer.training.run_folder import CHILD_DATA_FILE
    from kertransfer.tuning.children import CHILD_ERROR, CHILD_MORE, labels_from
    from kertransfer.tuning.hypermodel import TransferHyperModel
    from kertransfer.tuning.search import tune
    from kertransfer.tuning.tuners import TrialBudgetReached

    with np.load(config_file.parent / CHILD_DATA_FILE) as f:
        arrays = dict(f)
    x, y, xv, yv = (arrays["x"], labels_from(arrays, "y"), arrays["x_val"],
                    labels_from(arrays, "y_val"))
    settings = dict(config["settings"])
    try:
        hypermodel = TransferHyperModel.from_config(config["hypermodel"])
        tune(hypermodel, (x, y), validation_data=(xv, yv), epochs=config["epochs"],
             directory=config["directory"], save_best=False, verbose=config["verbose"],
             _stop_after=config["trials_per_process"], _parent_checked=True, **settings)
    except TrialBudgetReached:
        return CHILD_MORE
    except KertransferError as exc:
        print(f"kertransfer search process: error: {exc}", file=sys.stderr)
        return CHILD_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
