"""`tune`: run a KerasTuner search of a `TransferHyperModel`, resumably, and report it.

KerasTuner's own engine runs the search (its oracles, tuners and
chief/worker mode); kertransfer hardens what a long transfer search needs:

- **Atomic state files.** KerasTuner writes ``oracle.json``, each
  ``trial.json`` and the tuner file in place; a kill during a write leaves an
  empty file and the project no longer reloads. Here every state file is
  written to a temporary file and renamed.
- **Resume after a kill.** A re-run on the same directory reloads the
  project: completed trials are kept, and a trial that was running when the
  process died is run again from its start. A trial whose process died
  ``max_crashes`` times (e.g. out of memory) is marked FAILED instead of being
  retried forever, and a trial that had completed just before the kill is not
  run twice.
- **A search is one search.** The directory records every setting that defines
  the search (the hypermodel's, ``tune``'s own and a fingerprint of the data;
  `kertransfer.tuning.resume`); resuming with different ones raises a
  `SearchError` that lists each difference, instead of silently mixing trials
  (use another directory, or pass ``overwrite=True`` to start again).
- **Results.** At the end: a printed table of trials, ``results.csv``,
  ``best_config.json``, ``best_model.keras`` and ``trials.png`` (objective
  against unfreeze depth and fine-tuning rate), all in ``directory``.

The pieces live beside this module: the hardened oracles and tuners in
``tuners.py``, the child processes and the distributed environment in
``children.py``, the resume record in ``resume.py``, the results in
``results.py``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pathlib
import time
import warnings
from typing import Any

from kertransfer._log import fit_verbose, print_msg
from kertransfer.errors import (
    DataError,
    InvalidArgumentError,
    InvalidTypeError,
    format_message,
    suggest,
)
from kertransfer.tuning.children import _check_children, _env_for, _environ, _run_children
from kertransfer.tuning.features import SharedFeatures
from kertransfer.tuning.hypermodel import TransferHyperModel
from kertransfer.tuning.results import _tune_result, results_table, write_results
from kertransfer.tuning.resume import check_resume, search_record
from kertransfer.tuning.tuners import TUNERS, _atomic_write, _make_tuner, objective_task
from kertransfer.validation import check_int


def _check_objective(hypermodel, objective: str) -> None:
    """A multi-task search names the metric of one head, or the total loss."""
    tasks = getattr(hypermodel, "tasks", None)
    if not tasks or not isinstance(objective, str):
        return
    task, metric = objective_task(objective, tasks)
    if metric != "loss" and task is None:
        raise InvalidArgumentError(format_message(
            f"The objective {objective!r} is not a metric of a model with the heads {tasks}: "
            "each head's metrics carry its name.",
            expected=f"e.g. 'val_{tasks[0]}_accuracy', or 'val_loss' for the weighted total",
            received={"objective": objective}))


def _class_names(data):
    """The bundle's class names; per task for a bundle with tasks (a relabelled
    task's classes are its label numbers)."""
    names = getattr(data, "class_names", None)
    tables = getattr(data, "task_tables", None)
    if names is None or not tables:
        return names
    return {task: list(names) if table is None else [str(k) for k in range(data.tasks[task])]
            for task, table in tables.items()}


def _check_data(data, objective: str, validation_data) -> None:
    if objective.startswith("val_"):
        has_val = (getattr(data, "val", None) is not None if hasattr(data, "as_numpy")
                   else validation_data is not None)
        if not has_val:
            raise DataError(
                format_message(
                    f"The objective {objective!r} needs validation data, and there is none.",
                    fix="Load the data with validation_split > 0, or pass validation_data.",
                    received={"objective": objective},
                )
            )


@contextlib.contextmanager
def _quiet_retracing():
    """Every trial builds new models, so TensorFlow's retracing warnings say nothing useful."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_numbers(hypermodel, tuner, *, max_trials, max_crashes, factor, hyperband_iterations,
                   epochs, max_epochs, num_initial_points, seed, trials_per_process):
    """tune()'s hypermodel, tuner and counts, checked; the counts as Python ints."""
    if not isinstance(hypermodel, TransferHyperModel):
        raise InvalidTypeError(
            format_message("tune() searches a TransferHyperModel.",
                           expected="kertransfer.TransferHyperModel(...)",
                           received={"hypermodel": type(hypermodel).__name__})
        )
    if tuner not in TUNERS:
        raise InvalidArgumentError(
            format_message("Unknown tuner.", expected=f"one of {sorted(TUNERS)}",
                           fix=suggest(str(tuner), TUNERS), received={"tuner": tuner})
        )
    max_trials, max_crashes, factor, hyperband_iterations = (
        check_int(value, name, minimum=1)
        for name, value in (("max_trials", max_trials), ("max_crashes", max_crashes),
                            ("factor", factor), ("hyperband_iterations", hyperband_iterations)))
    epochs = check_int(hypermodel.epochs if epochs is None else epochs, "epochs", minimum=1)
    max_epochs = check_int(max_epochs, "max_epochs", minimum=1, allow_none=True)
    num_initial_points = check_int(num_initial_points, "num_initial_points", minimum=1,
                                   allow_none=True)
    seed = check_int(seed, "seed", minimum=0)
    if trials_per_process is not None:
        trials_per_process = check_int(trials_per_process, "trials_per_process", minimum=1)
    return (max_trials, max_crashes, factor, hyperband_iterations, epochs, max_epochs,
            num_initial_points, seed, trials_per_process)


def _check_phase_budget(hypermodel, tuner: str, epochs: int) -> None:
    """Warn when ``epochs`` leaves a trial one fine-tuning epoch or none after its
    head epochs (Hyperband sizes each trial's epochs itself)."""
    head, unfreeze = hypermodel.decls["head_epochs"], hypermodel.decls["unfreeze_top"]
    if tuner == "hyperband" or (unfreeze.kind == "fixed" and unfreeze.value == 0):
        return
    most = head.value if head.kind == "fixed" else (
        max(head.values) if head.kind == "choice" else head.high)
    left = epochs - int(most)
    if left <= 1:
        warnings.warn(
            f"epochs={epochs} with head_epochs={most} leaves {max(left, 0)} epoch(s) of "
            "fine-tuning per trial, too few to tell fine-tuning settings apart. Pass "
            f"epochs >= {int(most) + 2} (--epochs)"
            + (", or space={'head_epochs': 1} (--space head_epochs=1)" if most > 1 else "")
            + ".", stacklevel=3)


def _search_here(hypermodel, data, validation_data, directory, settings, env, *, epochs,
                 is_worker, verbose, distribution_strategy, stop_after):
    """Run the search in this process (resuming what ``directory`` holds); the tuner."""
    with _environ(env):
        kt_tuner = _make_tuner(hypermodel, directory, **settings,
                               distribution_strategy=distribution_strategy)
        done = sum(t.status == "COMPLETED" for t in kt_tuner.oracle.trials.values()) \
            if not is_worker else 0
        if verbose and done:
            project = directory / settings["project_name"]
            print_msg(f"Resuming the search in {project}: {done} trial(s) completed already")
        kt_tuner.stop_after = stop_after
        search_kwargs = {"verbose": fit_verbose(verbose)}
        if settings["tuner"] != "hyperband":
            search_kwargs["epochs"] = epochs
        if validation_data is not None:
            search_kwargs["validation_data"] = validation_data
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet) if not verbose else contextlib.nullcontext(), \
                _quiet_retracing():
            kt_tuner.search(data, **search_kwargs)
        if not is_worker:
            kt_tuner.save()  # the chief's last state lists no trial as running
    return kt_tuner


def tune(hypermodel, data: Any, *, tuner: str = "random", max_trials: int = 10,
         epochs: int | None = None, directory: str | os.PathLike = "runs/search",
         project_name: str = "search", objective: str = "val_accuracy",
         validation_data: Any = None, seed: int = 0, overwrite: bool = False,
         max_epochs: int | None = None, factor: int = 3, hyperband_iterations: int = 1,
         num_initial_points: int | None = None, max_crashes: int = 2,
         distributed: str | None = None, oracle_address: str | None = None,
         tuner_id: str | None = None, trials_per_process: int | None = None,
         child_setup: str | None = None, distribution_strategy: Any = None,
         save_best: bool = True, verbose: int | str = "auto", _stop_after: int | None = None,
         _parent_checked: bool = False):
    """Search a `TransferHyperModel`'s space with KerasTuner, resumably.

    Args:
        hypermodel: A `kertransfer.TransferHyperModel`.
        data: A `kertransfer.data.DataBundle` (with a validation split), or
            ``(x, y)`` arrays with ``validation_data``.
        tuner: ``"random"``, ``"bayesian"`` or ``"hyperband"``.
        max_trials: Trials to run (random and Bayesian; Hyperband's budget is
            set by ``max_epochs``, ``factor`` and ``hyperband_iterations``).
        epochs: Epochs per trial, both phases (default: the hypermodel's).
            Hyperband sets them itself, up to ``max_epochs``.
        directory: Folder of the search: KerasTuner's project
            (``<directory>/<project_name>``), the shared feature cache, and the
            results.
        project_name: KerasTuner's project name.
        objective: The metric to optimize (``val_*`` metrics are maximized
            when they are accuracies, minimized when they are losses). For a
            hypermodel with several heads, a head's metric such as
            ``"val_digit_accuracy"``, or ``"val_loss"`` (the weighted total).
        validation_data: ``(x, y)`` when ``data`` is arrays.
        seed: Seed of the oracle: the same seed draws the same trials (KerasTuner
            takes 0 for "no seed", so its oracle gets ``seed + 1``).
        overwrite: Start again instead of resuming what ``directory`` holds. A
            resume with other settings than the search was started with raises
            `SearchError` (``max_trials`` may change: more trials extend it).
        max_epochs: Hyperband's most epochs per trial (default: ``epochs``).
        factor: Hyperband's reduction factor.
        hyperband_iterations: Hyperband's iterations.
        num_initial_points: Bayesian optimization's random trials first.
        max_crashes: A trial during which the process died this many times is
            marked FAILED on resume instead of being run again.
        distributed: None, ``"chief"`` or ``"worker"`` (KerasTuner's
            chief/worker mode; every process uses the same ``directory``).
        oracle_address: The chief's ``"host:port"`` (distributed only).
        tuner_id: This process's id (default ``"chief"``, or ``"worker<pid>"``).
        trials_per_process: Run the search in child processes that each run at
            most this many trials and exit, one after another, each resuming
            the search: a bound on whatever memory a process keeps between
            trials (a search in one process stays flat, see the tuning
            guide's "Memory"; other code may hold more). A bundle loaded from
            a name, a folder or TFDS is loaded again in each child
            (`DataBundle.load_args`, fingerprints checked); other data goes
            to the children as arrays (without augmentation). The hypermodel
            goes as its configuration.
        child_setup: A module name or a ``.py`` file the child processes run
            first, e.g. one that registers custom backbones with
            `kertransfer.register_backbone`.
        distribution_strategy: A ``tf.distribute`` strategy (TensorFlow backend)
            for several devices inside each trial; every model, head and
            optimizer of a trial is created in its scope. Under JAX, use
            ``keras.distribution.set_distribution`` instead.
        save_best: Write the results files at the end (the chief, or a
            single-process search).
        verbose: Progress output: 0, 1 (progress bars), 2 (a line per epoch) or
            ``"auto"`` (bars on a terminal, a line per epoch elsewhere).

    Returns:
        A `TuneResult`: the best model (``model``), its trial's ``history``,
        ``metrics`` (``{objective: score}``), ``best_hyperparameters``, the
        rows of every trial (``results``; empty on a worker, whose trials the
        chief holds), the search folder (``out``) and KerasTuner's ``tuner``.
    """
    start = time.perf_counter()
    max_trials, max_crashes, factor, hyperband_iterations, epochs, max_epochs, \
        num_initial_points, seed, trials_per_process = _check_numbers(
            hypermodel, tuner, max_trials=max_trials, max_crashes=max_crashes, factor=factor,
            hyperband_iterations=hyperband_iterations, epochs=epochs, max_epochs=max_epochs,
            num_initial_points=num_initial_points, seed=seed,
            trials_per_process=trials_per_process)
    if not _parent_checked:  # a child process runs what its parent warned about
        _check_phase_budget(hypermodel, tuner, epochs)
    _check_objective(hypermodel, objective)
    _check_data(data, objective, validation_data)
    if callable(getattr(hypermodel, "check_data", None)):
        hypermodel.check_data(data, validation_data)
    env = _env_for(distributed, oracle_address, tuner_id)
    directory = pathlib.Path(directory)
    if hypermodel.features.directory is None:
        hypermodel.features = SharedFeatures(directory / "features")

    is_worker = distributed == "worker"
    settings = {"tuner": tuner, "objective": objective, "seed": seed,
                "max_trials": max_trials, "max_epochs": max_epochs or epochs, "factor": factor,
                "hyperband_iterations": hyperband_iterations,
                "num_initial_points": num_initial_points, "max_crashes": max_crashes,
                "project_name": project_name}
    if trials_per_process is not None:
        _check_children(hypermodel, data, distributed, trials_per_process)
        if distribution_strategy is not None:
            raise InvalidArgumentError(
                format_message("A distribution strategy cannot be sent to child processes.",
                               fix="Drop trials_per_process, or the strategy.",
                               received={"trials_per_process": trials_per_process})
            )
    hypermodel.distribution_strategy = distribution_strategy
    saved = None
    if not _parent_checked:  # a child process resumes what its parent checked
        record = search_record(
            hypermodel, data, validation_data, tuner=tuner, objective=objective, seed=seed,
            max_trials=max_trials, factor=factor, hyperband_iterations=hyperband_iterations,
            num_initial_points=num_initial_points,
            epochs=epochs if tuner != "hyperband" else (max_epochs or epochs))
        saved = check_resume(directory, record, overwrite=overwrite, is_worker=is_worker,
                             project_dir=directory / project_name, write=_atomic_write)
    if verbose and saved and "max_trials" in saved and saved["max_trials"] != max_trials \
            and tuner != "hyperband":
        print_msg(f"The search in {directory} had max_trials={saved['max_trials']}; it goes on "
              f"to max_trials={max_trials}")

    if trials_per_process is not None:
        _run_children(hypermodel, data, validation_data, directory, settings, epochs,
                      trials_per_process, child_setup, verbose)
        kt_tuner = _make_tuner(hypermodel, directory, **settings)
    else:
        kt_tuner = _search_here(hypermodel, data, validation_data, directory, settings, env,
                                epochs=epochs, is_worker=is_worker, verbose=verbose,
                                distribution_strategy=distribution_strategy,
                                stop_after=_stop_after)
    # A worker's oracle is a client of the chief's: the chief holds the trials.
    rows = [] if is_worker else results_table(kt_tuner)
    written: dict = {}
    if save_best and not is_worker:
        written = write_results(kt_tuner, directory, verbose=verbose,
                                class_names=_class_names(data))
    return _tune_result(kt_tuner, directory, rows, written.get("model"),
                        time.perf_counter() - start)
