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
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gc
import io
import json
import logging
import math
import os
import pathlib
import time
import warnings
from typing import Any

import keras
import keras_tuner
import numpy as np

from kertransfer._fs import atomic_file
from kertransfer._log import fit_verbose, print_msg
from kertransfer._plot import pyplot, save_figure
from kertransfer.errors import (
    DataError,
    InvalidArgumentError,
    InvalidTypeError,
    SearchError,
    format_message,
    suggest,
)
from kertransfer.training import run_folder
from kertransfer.training.results import RunResult
from kertransfer.tuning.hypermodel import SharedFeatures, TransferHyperModel
from kertransfer.tuning.resume import check_resume, search_record


def _atomic_write(path: str | os.PathLike, text: str) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        pathlib.Path(tmp).write_text(text)


class _RobustOracle:
    """Mixin for KerasTuner oracles: atomic files, crash counting on reload."""

    max_crashes = 2

    def save(self):
        _atomic_write(self._get_oracle_fname(), json.dumps(self.get_state()))

    def _save_trial(self, trial):
        path = os.path.join(self._get_trial_dir(trial.trial_id), "trial.json")
        _atomic_write(path, json.dumps(trial.get_state()))

    def get_state(self):
        state = super().get_state()
        state["kertransfer_crashes"] = dict(getattr(self, "_kt_crashes", {}))
        return state

    def set_state(self, state):
        super().set_state(state)
        self._kt_crashes = dict(state.get("kertransfer_crashes", {}))

    def reload(self):
        super().reload()
        crashes = getattr(self, "_kt_crashes", {})
        self._kt_crashes = crashes
        queue = []
        for trial_id in self._retry_queue:
            trial = self.trials.get(trial_id)
            if trial is None or trial.status in ("COMPLETED", "FAILED"):
                continue  # it ended just before the kill: do not run it twice
            if trial.status == "RUNNING":
                crashes[trial_id] = crashes.get(trial_id, 0) + 1
                if crashes[trial_id] >= self.max_crashes:
                    trial.status = "FAILED"
                    trial.message = (f"The search process died {crashes[trial_id]} times "
                                     "during this trial (out of memory?); not retried.")
                    self.end_order.append(trial_id)
                    self._save_trial(trial)
                    continue
            queue.append(trial_id)
        self._retry_queue = queue


def _oracle_class(base):
    return type(f"Kertransfer{base.__name__}", (_RobustOracle, base), {})


def resident_mib() -> float | None:
    """Resident memory of this process in MiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``).

    TensorFlow frees a trial's graphs and buffers, but glibc keeps the freed
    pages mapped, scattered between live ones, so resident memory grows with
    every trial even when nothing leaks. Elsewhere this does nothing.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


class TrialBudgetReached(Exception):  # noqa: N818 (a signal, not an error)
    """Raised after a trial ends when a process has run the trials it was given."""


class _RobustTuner:
    """Mixin for KerasTuner tuners: atomic tuner file; optionally stop after N trials."""

    stop_after: int | None = None

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        _atomic_write(self._get_tuner_fname(), json.dumps(self.get_state()))

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # the trial is ended and saved here
        keras.backend.clear_session()
        gc.collect()
        release_freed_memory()
        # The memory this process holds after the trial: a search that leaks shows it here.
        path = os.path.join(self.project_dir, f"trial_{trial.trial_id}",
                            run_folder.TRIAL_PROCESS_FILE)
        _atomic_write(path, json.dumps({"pid": os.getpid(), "rss_mib": resident_mib()}))
        self._kt_trials_run = getattr(self, "_kt_trials_run", 0) + 1
        if self.stop_after is not None and self._kt_trials_run >= self.stop_after:
            raise TrialBudgetReached()


class _Tuner(_RobustTuner, keras_tuner.Tuner):
    pass


class _HyperbandTuner(_RobustTuner, keras_tuner.Hyperband):
    def __init__(self, oracle, hypermodel, **kwargs):
        keras_tuner.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)


TUNERS = {
    "random": keras_tuner.oracles.RandomSearchOracle,
    "bayesian": keras_tuner.oracles.BayesianOptimizationOracle,
    "hyperband": keras_tuner.oracles.HyperbandOracle,
}


def _check_objective(hypermodel, objective: str) -> None:
    """A multi-task search names the metric of one head, or the total loss."""
    tasks = getattr(hypermodel, "tasks", None)
    if not tasks or not isinstance(objective, str):
        return
    metric = objective[4:] if objective.startswith("val_") else objective
    if metric != "loss" and not any(metric.startswith(f"{task}_") for task in tasks):
        raise InvalidArgumentError(format_message(
            f"The objective {objective!r} is not a metric of a model with the heads {tasks}: "
            "each head's metrics carry its name.",
            expected=f"e.g. 'val_{tasks[0]}_accuracy', or 'val_loss' for the weighted total",
            received={"objective": objective}))


def _objective(objective: str, hypermodel) -> Any:
    """KerasTuner's objective; a head's metric (``val_digit_accuracy``) gets the
    direction of the metric it names (``accuracy``: max), which KerasTuner cannot infer."""
    from keras_tuner.src.engine.metrics_tracking import infer_metric_direction

    tasks = getattr(hypermodel, "tasks", None) or []
    if not isinstance(objective, str) or infer_metric_direction(objective) is not None:
        return objective
    prefix = "val_" if objective.startswith("val_") else ""
    metric = objective[len(prefix):]
    for task in tasks:
        if metric.startswith(f"{task}_"):
            direction = infer_metric_direction(metric[len(task) + 1:])
            if direction is not None:
                return keras_tuner.Objective(objective, direction)
    return objective


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


def _env_for(distributed: str | None, oracle_address: str | None, tuner_id: str | None) -> dict:
    if distributed is None:
        return {}
    if distributed not in ("chief", "worker"):
        raise InvalidArgumentError(
            format_message("distributed must be None, 'chief' or 'worker'.",
                           received={"distributed": distributed})
        )
    host, sep, port = (oracle_address or "").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgumentError(
            format_message("A distributed search needs the chief's address.",
                           expected="oracle_address='host:port', e.g. '127.0.0.1:8000'",
                           received={"oracle_address": oracle_address})
        )
    if tuner_id is None:
        tuner_id = "chief" if distributed == "chief" else f"worker{os.getpid()}"
    if (distributed == "chief") != ("chief" in tuner_id):
        raise InvalidArgumentError(
            format_message("KerasTuner recognises the chief by 'chief' in its tuner id.",
                           expected="'chief' in tuner_id exactly when distributed='chief'",
                           received={"tuner_id": tuner_id, "distributed": distributed})
        )
    return {"KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": port,
            "KERASTUNER_TUNER_ID": tuner_id}


@contextlib.contextmanager
def _environ(values: dict):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


@dataclasses.dataclass
class TuneResult(RunResult):
    """What `tune` returns: a `kertransfer.training.RunResult` of the best trial.

    Attributes (beside `RunResult`'s):
        model: The best trial's model (what ``best_model.keras`` holds); None on
            a worker, with ``save_best=False`` (use
            ``tuner.get_best_models(1)``) or when no trial completed.
        history: The best trial's ``{metric: [value per epoch]}``.
        metrics: ``{objective: best score}``.
        out: The search folder.
        tuner: The KerasTuner tuner (``results_summary()``,
            ``get_best_hyperparameters()``, ``oracle``, ...).
        results: One row per trial (``trial``, ``status``, ``score``,
            ``best_epoch`` and the values tried); empty on a worker, whose
            trials the chief holds.
        best_hyperparameters: The best trial's values, ``{name: value}``.
        best_epoch: The epoch (from 1) of the best trial's score.
        objective: The objective's name.
    """

    tuner: Any = None
    results: list[dict] = dataclasses.field(default_factory=list)
    best_hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    best_epoch: int | None = None
    objective: str = ""

    @property
    def scored_epoch(self) -> int:
        return self.best_epoch if self.best_epoch is not None else self.epochs

    def _score_note(self) -> str:
        if self.best_epoch is None:
            return ""
        trial = next((r["trial"] for r in self.results if r.get("score") is not None
                      and self.metrics.get(self.objective) == r["score"]), "?")
        return f"the best trial ({trial}) at its epoch {self.best_epoch}"


def _tune_result(kt_tuner, directory: pathlib.Path, rows: list[dict], model, seconds: float):
    """The `TuneResult` of a finished search (the best completed trial's)."""
    objective = kt_tuner.oracle.objective.name
    best = [t for t in kt_tuner.oracle.get_best_trials(len(kt_tuner.oracle.trials))
            if t.status == "COMPLETED"] if rows else []
    if not best:
        return TuneResult(model=model, seconds=seconds, out=directory, tuner=kt_tuner,
                          results=rows, objective=objective)
    trial = best[0]
    history: dict[str, list[float]] = {}
    path = pathlib.Path(kt_tuner.get_trial_dir(trial.trial_id)) / run_folder.TRIAL_HISTORY_FILE
    if path.is_file():
        history = json.loads(path.read_text()).get("history", {})
    step = trial.best_step
    return TuneResult(model=model, history=history, metrics={objective: trial.score},
                      seconds=seconds, out=directory, tuner=kt_tuner, results=rows,
                      best_hyperparameters=_values(trial),
                      best_epoch=None if step is None else int(step) + 1, objective=objective)


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
            the search. TensorFlow keeps memory for every model a process
            has trained, so a long search in one process grows; this bounds
            it. The data goes to the children as arrays (no augmentation) and
            the hypermodel as its configuration.
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
    for name, value in (("max_trials", max_trials), ("max_crashes", max_crashes),
                        ("factor", factor), ("hyperband_iterations", hyperband_iterations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(
                format_message(f"{name} must be a positive integer.", received={name: value})
            )
    epochs = int(epochs or hypermodel.epochs)
    _check_objective(hypermodel, objective)
    _check_data(data, objective, validation_data)
    if callable(getattr(hypermodel, "check_data", None)):
        hypermodel.check_data(data, validation_data)
    env = _env_for(distributed, oracle_address, tuner_id)
    directory = pathlib.Path(directory)
    if hypermodel.features.disk is None:
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
        with _environ(env):
            kt_tuner = _make_tuner(hypermodel, directory, **settings,
                                   distribution_strategy=distribution_strategy)
            done = sum(t.status == "COMPLETED" for t in kt_tuner.oracle.trials.values()) \
                if not is_worker else 0
            if verbose and done:
                print_msg(f"Resuming the search in {directory / project_name}: {done} trial(s) "
                      "completed already")
            kt_tuner.stop_after = _stop_after
            search_kwargs = {"verbose": fit_verbose(verbose)}
            if tuner != "hyperband":
                search_kwargs["epochs"] = epochs
            if validation_data is not None:
                search_kwargs["validation_data"] = validation_data
            quiet = io.StringIO()
            with contextlib.redirect_stdout(quiet) if not verbose else contextlib.nullcontext(), \
                    _quiet_retracing():
                kt_tuner.search(data, **search_kwargs)
            if not is_worker:
                kt_tuner.save()  # the chief's last state lists no trial as running
    # A worker's oracle is a client of the chief's: the chief holds the trials.
    rows = [] if is_worker else results_table(kt_tuner)
    written: dict = {}
    if save_best and not is_worker:
        written = write_results(kt_tuner, directory, verbose=verbose,
                                class_names=_class_names(data))
    return _tune_result(kt_tuner, directory, rows, written.get("model"),
                        time.perf_counter() - start)


def _make_tuner(hypermodel, directory: pathlib.Path, *, tuner: str, objective: str, seed: int,
                max_trials: int, max_epochs: int, factor: int, hyperband_iterations: int,
                num_initial_points: int | None, max_crashes: int, project_name: str,
                distribution_strategy: Any = None):
    """KerasTuner's tuner with kertransfer's hardened oracle (reloads what the folder holds)."""
    # KerasTuner reads a seed of 0 as "no seed" and draws a random one: shift by one.
    oracle_kwargs: dict[str, Any] = {"objective": _objective(objective, hypermodel),
                                     "seed": seed + 1}
    if tuner == "hyperband":
        oracle_kwargs.update(max_epochs=max_epochs, factor=factor,
                             hyperband_iterations=hyperband_iterations)
        tuner_cls: type = _HyperbandTuner
    else:
        oracle_kwargs["max_trials"] = max_trials
        if tuner == "bayesian" and num_initial_points is not None:
            oracle_kwargs["num_initial_points"] = num_initial_points
        tuner_cls = _Tuner
    oracle = _oracle_class(TUNERS[tuner])(**oracle_kwargs)
    oracle.max_crashes = max_crashes
    return tuner_cls(oracle=oracle, hypermodel=hypermodel, directory=str(directory),
                     project_name=project_name, overwrite=False,
                     distribution_strategy=distribution_strategy)


def _arrays_of(data, validation_data) -> dict[str, np.ndarray]:
    """The arrays a search process loads (`kertransfer.tuning.child`): ``x``, ``y``,
    ``x_val``, ``y_val``; per-task labels as ``y.<task>`` and ``y_val.<task>``."""
    if hasattr(data, "as_numpy"):
        relabel = getattr(data, "task_labels", lambda y: y)
        (x, y), (xv, yv) = data.as_numpy("train"), data.as_numpy("val")
        y, yv = relabel(y), relabel(yv)
    else:
        (x, y), (xv, yv) = data, validation_data
    out = {"x": np.asarray(x), "x_val": np.asarray(xv)}
    for name, labels in (("y", y), ("y_val", yv)):
        if isinstance(labels, dict):
            out.update({f"{name}.{k}": np.asarray(v) for k, v in labels.items()})
        else:
            out[name] = np.asarray(labels)
    return out


def labels_from(arrays, name: str):
    """Labels ``name`` as `_arrays_of` saved them: one array, or ``{task: labels}``."""
    if name in arrays:
        return arrays[name]
    prefix = f"{name}."
    return {k[len(prefix):]: arrays[k] for k in arrays if k.startswith(prefix)}


def _check_children(hypermodel, data, distributed, trials_per_process) -> None:
    problem = None
    if isinstance(trials_per_process, bool) or not isinstance(trials_per_process, int) \
            or trials_per_process < 1:
        problem = "trials_per_process must be a positive integer."
    elif distributed is not None:
        problem = ("trials_per_process runs the search in child processes; it cannot be "
                   "combined with a distributed search.")
    elif type(hypermodel) is not TransferHyperModel:
        problem = ("Child processes rebuild the hypermodel from its configuration, so it must "
                   "be a TransferHyperModel, not a subclass.")
    elif getattr(data, "augmentation", None) is not None:
        problem = ("Child processes receive the data as arrays, without the bundle's "
                   "augmentation.")
    if problem:
        raise InvalidArgumentError(
            format_message(problem, received={"trials_per_process": trials_per_process,
                                              "distributed": distributed,
                                              "hypermodel": type(hypermodel).__name__})
        )


def _run_children(hypermodel, data, validation_data, directory: pathlib.Path, settings: dict,
                  epochs: int, trials_per_process: int, child_setup: str | None,
                  verbose: int) -> None:
    """Run the search in child processes of at most ``trials_per_process`` trials each."""
    import subprocess
    import sys

    child_dir = directory / run_folder.CHILD_FOLDER
    child_dir.mkdir(parents=True, exist_ok=True)
    arrays = _arrays_of(data, validation_data)
    with atomic_file(child_dir / run_folder.CHILD_DATA_FILE, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    config = {"hypermodel": hypermodel.get_config(), "settings": settings, "epochs": epochs,
              "trials_per_process": trials_per_process, "child_setup": child_setup,
              "verbose": verbose, "directory": str(directory)}
    config_file = child_dir / run_folder.CHILD_CONFIG_FILE
    _atomic_write(config_file, json.dumps(config, indent=2))
    command = [sys.executable, "-m", "kertransfer.tuning.child", str(config_file)]
    deaths = 0
    process = 0
    while True:
        process += 1
        if verbose:
            print_msg(f"Search process {process} (at most {trials_per_process} trials)")
        code = subprocess.run(command).returncode
        if code == 0:
            return
        if code == CHILD_MORE:
            deaths = 0
            continue
        if code == CHILD_ERROR:
            raise SearchError(
                format_message("A search process stopped on an error (printed above).",
                               received={"returncode": code})
            )
        deaths += 1  # killed (out of memory?) or crashed: resume counts its trial
        if deaths > settings["max_crashes"] + 1:
            raise SearchError(
                format_message(f"The search processes died {deaths} times in a row.",
                               fix="Look at the output above; reduce the batch size or the "
                               "input size if they ran out of memory.",
                               received={"returncode": code})
            )


CHILD_MORE = 3  # a child ran its trials and more remain
CHILD_ERROR = 2  # a child stopped on a kertransfer error


def _values(trial) -> dict:
    return {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}


def results_table(kt_tuner) -> list[dict]:
    """One row per trial (sorted by id): status, score, best epoch and knob values."""
    rows = []
    trials = sorted(kt_tuner.oracle.trials.values(),
                    key=lambda t: (len(t.trial_id), t.trial_id))
    for t in trials:
        values = _values(t)
        backbone = values.get("backbone")
        unfreeze = values.get(f"{backbone}/unfreeze")
        row = {"trial": t.trial_id, "status": t.status, "score": t.score,
               "best_epoch": t.best_step, "backbone": backbone, "unfreeze": unfreeze}
        process = os.path.join(kt_tuner.project_dir, f"trial_{t.trial_id}",
                               run_folder.TRIAL_PROCESS_FILE)
        if os.path.exists(process):
            with open(process) as f:
                rss = json.load(f).get("rss_mib")
            row["rss_mib"] = None if rss is None else round(rss)
        row.update({k: v for k, v in values.items()
                    if k != "backbone" and not k.endswith("/unfreeze")})
        rows.append(row)
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


def format_results(rows: list[dict], objective: str, direction: str = "max") -> str:
    """The trials as a text table, best first (``direction``: ``"max"`` or ``"min"``)."""
    if not rows:
        return "No trials."
    keys = list(dict.fromkeys(k for r in rows for k in r))
    keys = [k for k in keys if k != "score"]
    keys.insert(2, "score")

    def order(r):
        s = r["score"]
        missing = s is None or (isinstance(s, float) and math.isnan(s))
        return (missing, 0.0 if missing else (s if direction == "min" else -s))

    ranked = sorted(rows, key=order)
    cells = [[k if k != "score" else objective for k in keys]]
    cells += [[_fmt(r.get(k)) for k in keys] for r in ranked]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(kt_tuner, directory: str | os.PathLike, verbose: int = 1,
                  class_names=None) -> dict:
    """Write results.csv, best_config.json, best_model.keras and trials.png to ``directory``.

    Returns ``{"results": path, "best_config": path, "best_model": path, "plot":
    path, "model": the best model}`` (those that were written).

    ``class_names`` go into ``best_config.json``, where ``kertransfer export`` finds them.
    The names are `kertransfer.training.run_folder`'s (``RESULTS_FILE``,
    ``SEARCH_CONFIG_FILE``, ``SEARCH_MODEL_FILE``, ``TRIALS_FILE``).
    """
    directory = pathlib.Path(directory)
    rows = results_table(kt_tuner)
    objective = kt_tuner.oracle.objective.name
    table = format_results(rows, objective, kt_tuner.oracle.objective.direction)
    if verbose:
        print_msg(f"\nSearch results ({len(rows)} trials, objective {objective}):\n{table}")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(directory / run_folder.RESULTS_FILE, buf.getvalue())
    written = {"results": directory / run_folder.RESULTS_FILE}
    best = [t for t in kt_tuner.oracle.get_best_trials(len(kt_tuner.oracle.trials))
            if t.status == "COMPLETED"]
    if best:
        trial = best[0]
        hm = kt_tuner.hypermodel
        values = _values(trial)
        config = {
            "objective": objective, "score": trial.score, "trial": trial.trial_id,
            "best_epoch": trial.best_step, "values": values,
            "hypermodel": {"backbones": hm.backbones, "num_classes": hm.num_classes,
                           "activation": getattr(hm, "activation", "softmax"),
                           "input_shape": list(hm.input_shape),
                           "weights": hm.weights if isinstance(hm.weights, (str, dict))
                           or hm.weights is None else str(hm.weights),
                           "optimizer": hm.optimizer},
        }
        if isinstance(class_names, dict):
            config["class_names"] = {k: [str(c) for c in v] for k, v in class_names.items()}
        elif class_names is not None:
            config["class_names"] = [str(c) for c in class_names]
        _atomic_write(directory / run_folder.SEARCH_CONFIG_FILE,
                      json.dumps(config, indent=2, default=str))
        written["best_config"] = directory / run_folder.SEARCH_CONFIG_FILE
        with warnings.catch_warnings():  # the checkpoint's optimizer state is not needed
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = kt_tuner.get_best_models(1)[0]  # built in the strategy's scope, if any
        if model.optimizer is not None and not model.optimizer.built:
            with getattr(hm, "_scope", contextlib.nullcontext)():
                model.optimizer.build(model.trainable_variables)  # loads without a warning
        with atomic_file(directory / run_folder.SEARCH_MODEL_FILE, suffix=".keras") as tmp:
            model.save(tmp)
        written["best_model"] = directory / run_folder.SEARCH_MODEL_FILE
        written["model"] = model
        if verbose:
            print_msg(f"Best: trial {trial.trial_id}, {objective} {trial.score:.4f}: "
                  + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()))
    plot_trials(rows, directory / run_folder.TRIALS_FILE, objective)
    written["plot"] = directory / run_folder.TRIALS_FILE
    if verbose:
        print_msg("Wrote " + ", ".join(str(p) for key, p in written.items() if key != "model"))
    return written


def plot_trials(rows: list[dict], path, objective: str) -> None:
    """Objective against unfreeze depth and fine-tuning rate, one colour per backbone."""

    plt = pyplot()
    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    backbones = sorted({str(r["backbone"]) for r in done})
    for b in backbones:
        rs = [r for r in done if str(r["backbone"]) == b]
        axes[0].scatter([r["unfreeze"] for r in rs], [r["score"] for r in rs], label=b)
        axes[1].scatter([r.get("fine_tune_lr") for r in rs], [r["score"] for r in rs], label=b)
    axes[0].set_xlabel("unfreeze (blocks trainable from the top)")
    axes[1].set_xlabel("fine_tune_lr")
    axes[1].set_xscale("log")
    axes[0].set_ylabel(objective)
    if backbones:
        axes[1].legend(fontsize=8)
    fig.suptitle(f"{len(done)} completed trials")
    fig.tight_layout()
    save_figure(fig, path, dpi=100, tight=False)
