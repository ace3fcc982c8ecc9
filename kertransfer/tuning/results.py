"""What a search leaves: the `TuneResult`, the table of trials and the results files.

``results.csv``, ``best_config.json``, ``best_model.keras`` and ``trials.png``
(objective against unfreeze depth and fine-tuning rate), all in the search
folder; names from `kertransfer.training.run_folder`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import warnings
from typing import Any

from kertransfer._fs import atomic_file
from kertransfer._log import print_msg
from kertransfer._plot import pyplot, save_figure
from kertransfer.training import run_folder
from kertransfer.training.results import RunResult
from kertransfer.tuning.tuners import _atomic_write, objective_task


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
        best_trial: The best trial's id.
        objective: The objective's name.
    """

    tuner: Any = None
    results: list[dict] = dataclasses.field(default_factory=list)
    best_hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    best_epoch: int | None = None
    best_trial: str | None = None
    objective: str = ""

    @property
    def scored_epoch(self) -> int:
        return self.best_epoch if self.best_epoch is not None else self.epochs

    def _score_note(self) -> str:
        if self.best_epoch is None:
            return ""
        return f"the best trial ({self.best_trial}) at its epoch {self.best_epoch}"


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
                      best_epoch=None if step is None else int(step) + 1,
                      best_trial=trial.trial_id, objective=objective)


def _values(trial) -> dict:
    return {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}


def chance_level(num_classes, objective: str) -> float | None:
    """The accuracy of guessing one class of ``num_classes`` (``{task: classes}``
    for several heads) for an accuracy ``objective``; None for other objectives."""
    task, metric = objective_task(objective, num_classes if isinstance(num_classes, dict)
                                  else None)
    if num_classes is None or not metric.endswith("accuracy"):
        return None
    if isinstance(num_classes, dict):
        if task is None:
            return None
        num_classes = num_classes[task]
    return 1.0 / max(int(num_classes), 2)  # one sigmoid unit: two classes


def at_chance(score, chance: float | None) -> bool:
    """Whether an accuracy ``score`` is no better than guessing (within half of
    the chance level, at most 5 points): a trial that collapsed."""
    if chance is None or score is None or (isinstance(score, float) and math.isnan(score)):
        return False
    return score <= chance + min(0.05, chance / 2)


def results_table(kt_tuner) -> list[dict]:
    """One row per trial (sorted by id): status, score, best epoch and knob values.

    A completed trial whose accuracy is no better than guessing one class gets
    ``note="at chance"`` (e.g. a fine-tuning rate too high for its depth).
    """
    chance = chance_level(getattr(kt_tuner.hypermodel, "num_classes", None),
                          kt_tuner.oracle.objective.name)
    rows = []
    trials = sorted(kt_tuner.oracle.trials.values(),
                    key=lambda t: (len(t.trial_id), t.trial_id))
    for t in trials:
        values = _values(t)
        backbone = values.get("backbone")
        unfreeze = values.get(f"{backbone}/unfreeze_top")
        row = {"trial": t.trial_id, "status": t.status, "score": t.score,
               "best_epoch": t.best_step, "backbone": backbone, "unfreeze_top": unfreeze}
        process = os.path.join(kt_tuner.project_dir, f"trial_{t.trial_id}",
                               run_folder.TRIAL_PROCESS_FILE)
        if os.path.exists(process):
            with open(process) as f:
                rss = json.load(f).get("rss_mib")
            row["rss_mib"] = None if rss is None else round(rss)
        row.update({k: v for k, v in values.items()
                    if k != "backbone" and not k.endswith("/unfreeze_top")})
        if t.status == "COMPLETED" and at_chance(t.score, chance):
            row["note"] = "at chance"
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
        collapsed = [r["trial"] for r in rows if r.get("note") == "at chance"]
        if collapsed:
            print_msg(f"Trial(s) {', '.join(collapsed)} scored no better than guessing one "
                      "class (note 'at chance'): their training diverged, often a fine-tuning "
                      "rate too high for the blocks it unfroze. Narrow the "
                      "fine_tune_learning_rate range if many do.")
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
        axes[0].scatter([r["unfreeze_top"] for r in rs], [r["score"] for r in rs], label=b)
        axes[1].scatter([r.get("fine_tune_learning_rate") for r in rs], [r["score"] for r in rs],
                        label=b)
    axes[0].set_xlabel("unfreeze_top (blocks trainable from the top)")
    axes[1].set_xlabel("fine_tune_learning_rate")
    axes[1].set_xscale("log")
    axes[0].set_ylabel(objective)
    if backbones:
        axes[1].legend(fontsize=8)
    fig.suptitle(f"{len(done)} completed trials")
    fig.tight_layout()
    save_figure(fig, path, dpi=100, tight=False)
