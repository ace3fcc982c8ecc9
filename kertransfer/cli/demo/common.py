"""What both demos share: the results table, the run folder, the export and predictions."""

from __future__ import annotations

import json
import pathlib
import re
import statistics
from collections.abc import Sequence

import numpy as np

from kertransfer import _log


def say(msg: str, verbose: int) -> None:
    """A progress line, when ``verbose``."""
    if verbose:
        _log.print_msg(msg)


def pixel_baseline(data, C: float = 0.01) -> float:  # noqa: N803
    """Held-out accuracy of logistic regression on raw pixels (the floor)."""
    from kertransfer.training import fit_linear_probe

    x, y = data.as_numpy("train")
    xt, yt = data.as_numpy("test")
    fit = fit_linear_probe(x.reshape(len(x), -1) / 255.0, y, data.num_classes, grid=(C,))
    predicted = np.argmax(fit.predict_proba(xt / 255.0), axis=1)
    return float(np.mean(predicted == yt))


def format_table(per_seed: Sequence[dict], title: str) -> str:
    """Mean ± sd of held-out target accuracy per arm over seeds."""
    arms = list(per_seed[0]["test_accuracy"])
    width = max(36, *(len(arm) + 1 for arm in arms))
    lines = [f"{title:<{width}} {'mean':>7} {'sd':>7}   per seed", "-" * (width + 36)]
    for arm in arms:
        vals = [r["test_accuracy"][arm] for r in per_seed]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        each = " ".join(f"{v:.3f}" for v in vals)
        lines.append(f"{arm:<{width}} {statistics.mean(vals):>7.3f} {sd:>7.3f}   {each}")
    return "\n".join(lines)


def save(per_seed: list[dict], out, header: str, table: str, config: dict,
         verbose: int) -> pathlib.Path:
    """Print the table and write the run folder of the last seed's transferred model."""
    from kertransfer.training import run_folder, save_run

    say("\n" + header + "\n" + table, 1 if verbose else 0)
    last = per_seed[-1]
    config = {**config, "demo": True, "seeds": [r["seed"] for r in per_seed],
              "class_names": last["_target"].class_names,
              "results": [{k: v for k, v in r.items() if not k.startswith("_")}
                          for r in per_seed]}
    path = save_run(last["_transfer_model"], out, config, last["_history"],
                    stages=last["_stages"])
    (path / run_folder.DEMO_TABLE_FILE).write_text(header + "\n" + table + "\n")
    (path / run_folder.DEMO_RESULTS_FILE).write_text(json.dumps(config["results"], indent=2))
    say(f"Saved the run to {path}", verbose)
    return path


def file_safe(name: str) -> str:
    """A class name as part of a file name ("T-shirt/top" -> "T-shirt-top")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-") or "class"


def ship(model, target, run: pathlib.Path, n_images: int = 6, verbose: int = 1) -> pathlib.Path:
    """Export ``model`` to ``run/serving`` and run ``kertransfer predict`` on PNG files of
    ``n_images`` held-out test images saved to ``run/samples`` (their true class is in
    the file name). Returns the export's version folder."""
    import keras
    import tensorflow as tf

    from kertransfer.serving import export, format_predictions, predict
    from kertransfer.training.run_folder import DEMO_SAMPLES_FOLDER, DEMO_SERVING_FOLDER

    samples = run / DEMO_SAMPLES_FOLDER
    samples.mkdir(exist_ok=True)
    x, y = target.as_numpy("test")
    for i in range(min(n_images, len(x))):
        png = tf.io.encode_png(np.clip(np.round(x[i]), 0, 255).astype("uint8")).numpy()
        name = file_safe(target.class_names[int(y[i])])
        (samples / f"test{i}_true_{name}.png").write_bytes(png)
    # SavedModels are written by TensorFlow's converters; other backends ship .keras.
    fmt = "saved_model" if keras.backend.backend() == "tensorflow" else "keras"
    say(f"\nExporting the transferred model ({fmt}) to {run / DEMO_SERVING_FOLDER}", verbose)
    version = export(model, run / DEMO_SERVING_FOLDER, format=fmt, class_names=target.class_names,
                     metadata={"demo": True}, verbose=verbose)
    if verbose:  # what `kertransfer predict` runs and prints
        _log.print_msg(f"\n$ kertransfer predict {version} {samples} --top-k 2")
        _log.print_msg(format_predictions(predict(version, [samples], top_k=2)))
    return version
