"""KerasTuner's oracles and tuners, hardened for long transfer searches.

Atomic state files, a trial that dies ``max_crashes`` times marked FAILED
instead of retried forever, memory released between trials, and a budget of
trials per process (`TrialBudgetReached`). `tune` (``search.py``) makes them.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import pathlib
from typing import Any

import keras
import keras_tuner
from keras_tuner.src.engine.oracle import Display

from kertransfer._fs import atomic_file
from kertransfer._graphs import custom_gradients, release_custom_gradients
from kertransfer._log import print_msg
from kertransfer.training import run_folder


def _atomic_write(path: str | os.PathLike, text: str) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        pathlib.Path(tmp).write_text(text)


class _TrialDisplay(Display):
    """KerasTuner's trial log, numbered by trial id as the results and folders are.

    KerasTuner's log counts trials from 1 (``Running Trial #1``) while its trial
    ids, their folders (``trial_0``) and kertransfer's results count from 0.
    """

    def on_trial_begin(self, trial):
        if self.verbose < 1:
            return
        now = datetime.datetime.now()
        self.trial_start[trial.trial_id] = now
        if self.search_start is None:
            self.search_start = now
        self.trial_number[trial.trial_id] = trial.trial_id  # "Trial <id> Complete" at the end
        print_msg(f"\nSearch: Running Trial {trial.trial_id}\n")
        self.show_hyperparameter_table(trial)
        print_msg("")


class _RobustOracle:
    """Mixin for KerasTuner oracles: atomic files, crash counting on reload, the
    trial log numbered by trial id."""

    max_crashes = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._display = _TrialDisplay(oracle=self)

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

    def on_trial_begin(self, trial):
        self._kt_gradients = custom_gradients()
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # the trial is ended and saved here
        release_custom_gradients(getattr(self, "_kt_gradients", custom_gradients()))
        keras.backend.clear_session(free_memory=False)
        gc.collect()  # once (clear_session's own collection would be a second full walk)
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


def _objective(objective: str, hypermodel) -> Any:
    """KerasTuner's objective; a head's metric (``val_digit_accuracy``) gets the
    direction of the metric it names (``accuracy``: max), which KerasTuner cannot infer."""
    from keras_tuner.src.engine.metrics_tracking import infer_metric_direction

    if not isinstance(objective, str) or infer_metric_direction(objective) is not None:
        return objective
    task, metric = objective_task(objective, getattr(hypermodel, "tasks", None))
    direction = infer_metric_direction(metric) if task is not None else None
    return objective if direction is None else keras_tuner.Objective(objective, direction)


def objective_task(objective: str, tasks) -> tuple[str | None, str]:
    """``(task, metric)`` of an objective that names a head's metric
    (``"val_digit_accuracy"``: ``("digit", "accuracy")``), else ``(None, metric)``
    without its ``val_`` prefix."""
    metric = objective[len("val_"):] if objective.startswith("val_") else objective
    for task in tasks or []:
        if metric.startswith(f"{task}_"):
            return task, metric[len(task) + 1:]
    return None, metric


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
