"""Memory held across the trials of a search in one process: RSS after trial 20 / after trial 3.

A random search of 20 small two-phase trials (mobilenet_v3_small at 32x32 on
200 digits_m training images, 3 epochs each, the unfreeze depth (0-4 blocks),
rates and dropout searched), each in one process:

- kertransfer: ``kt.tune`` (no ``trials_per_process``);
- baseline: plain ``keras_tuner.RandomSearch`` over the same two-phase recipe
  written by hand (``bench_search_speed.HandWritten``), as KerasTuner runs it;
- with ``--per-process N``, also ``kt.tune(..., trials_per_process=N)``.

The resident set size (RSS) of the process is read after each trial, after
garbage collection (``rss_mib`` in kertransfer's results). Printed: RSS per
trial and, for each search, RSS(trial 20) / RSS(trial 3) (goal for
kertransfer in one process: at most 1.10), the highest RSS after trials 3-20
over RSS(trial 3), and the growth per trial from a least-squares line.

Usage::

    python benchmarks/bench_search_memory.py [--trials 20] [--per-process 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402
from _common import append_row, machine  # noqa: E402
from bench_search_speed import HandWritten, block_starts  # noqa: E402

import kertransfer as kt  # noqa: E402
from kertransfer.tuning.tuners import release_freed_memory, resident_mib  # noqa: E402

BACKBONE = "mobilenet_v3_small"
SHAPE = (32, 32, 3)


class _Recorded(keras_tuner.RandomSearch):
    """Plain KerasTuner, reading the process's RSS after each trial (after a collection)."""

    rss: list

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        gc.collect()
        release_freed_memory()
        self.rss.append(resident_mib())


def _plain(data, weights, trials, tmp):
    hypermodel = HandWritten(BACKBONE, SHAPE, block_starts(BACKBONE, SHAPE), head_epochs=2,
                             weights=weights, max_unfreeze=4)
    tuner = _Recorded(hypermodel, objective="val_accuracy", max_trials=trials, seed=1,
                      directory=os.path.join(tmp, "plain"), project_name="plain")
    tuner.rss = []
    tuner.search(data, epochs=3, verbose=0)
    return tuner.rss


def _kertransfer(data, weights, trials, tmp, per_process):
    hm = kt.TransferHyperModel(BACKBONE, num_classes=10, input_shape=SHAPE, weights=weights,
                               epochs=3, space={"head_epochs": 2, "unfreeze_top": (0, 4)})
    result = kt.tune(hm, data, max_trials=trials, epochs=3, verbose=0,
                     directory=os.path.join(tmp, f"kt{per_process or ''}"),
                     trials_per_process=per_process, save_best=False)
    return [r["rss_mib"] for r in result.results]


MODES = ("kertransfer", "plain", "children")


def _one(mode: str, trials: int, per_process: int | None) -> list[float]:
    """RSS per trial of one search, run in this process."""
    data = _data()
    with tempfile.TemporaryDirectory(prefix="kt-search-memory-") as tmp:
        keras.utils.set_random_seed(0)
        weights = os.path.join(tmp, "pretrained.keras")
        kt.build_transfer_model(BACKBONE, 10, input_shape=SHAPE, weights=None,
                                freeze="none").save(weights)
        keras.backend.clear_session()
        if mode == "plain":
            return _plain(data, weights, trials, tmp)
        return _kertransfer(data, weights, trials, tmp,
                            per_process if mode == "children" else None)


def _data():
    return kt.data.load("digits_m", image_size=SHAPE[:2], batch_size=32, validation_split=0.2,
                        samples_per_class=20, seed=0, verbose=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--per-process", type=int, default=None,
                        help="also run kt.tune with trials_per_process=N")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one search, here
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(_one(args.mode, args.trials, args.per_process)))
        return 0
    setup = (f"random search, {args.trials} two-phase trials, {BACKBONE} {SHAPE[0]}px, "
             f"{_data().counts['train']} images, 3 epochs")
    print(f"{machine()}; {setup}", flush=True)
    start = time.perf_counter()
    names = {"kertransfer": "kertransfer, one process",
             "plain": "plain KerasTuner, one process",
             "children": f"kertransfer, trials_per_process={args.per_process}"}
    curves = {}
    for mode in MODES if args.per_process else MODES[:2]:
        # Each search in a process of its own: one's memory does not count in another's.
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--trials",
                              str(args.trials), "--per-process", str(args.per_process or 0)],
                             capture_output=True, text=True, check=True).stdout
        curves[names[mode]] = rss = json.loads(out.strip().splitlines()[-1])
        print(f"{names[mode]}: RSS per trial (MiB) " + " ".join(f"{v:.0f}" for v in rss),
              flush=True)
    stats = {}
    for mode, rss in curves.items():
        ratio = rss[-1] / rss[2]
        peak = max(rss[2:]) / rss[2]
        slope = float(np.polyfit(np.arange(3, len(rss) + 1), rss[2:], 1)[0])
        stats[mode] = (ratio, slope, peak)
        print(f"{mode}: after trial 3 {rss[2]:.0f} MiB, after trial {len(rss)} {rss[-1]:.0f} "
              f"MiB, ratio {ratio:.3f}; highest after trials 3-{len(rss)} {peak:.3f} x trial 3; "
              f"growth {slope:.1f} MiB per trial")
    print(f"({time.perf_counter() - start:.0f}s; goal: kertransfer in one process <= 1.10)")
    if not args.no_record:
        (r_kt, s_kt, p_kt) = stats[names["kertransfer"]]
        (r_plain, s_plain, p_plain) = stats[names["plain"]]
        append_row("search memory in one process, RSS after trial 20 / after trial 3",
                   f"{machine()}; {setup}", f"{r_kt:.3f} (kertransfer, one process)",
                   f"{r_plain:.3f} (plain KerasTuner, one process)", r_kt,
                   f"ratio column = kertransfer's; highest RSS after trials 3-{args.trials} "
                   f"{p_kt:.3f} x trial 3 ({p_plain:.3f} plain); growth per trial "
                   f"{s_kt:.1f} MiB vs {s_plain:.1f} MiB plain; goal <= 1.10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
