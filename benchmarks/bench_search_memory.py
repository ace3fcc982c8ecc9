"""Memory held across the trials of a search: resident memory after trial 20 vs after trial 3.

A random search of 20 small two-phase trials (mobilenet_v3_small at 32x32 on
200 digits_m training images, 3 epochs each, the unfreeze depth, rates and dropout
searched), run twice:

- baseline: the whole search in one process, as KerasTuner runs it;
- kertransfer: ``kt.tune(..., trials_per_process=3)``, child processes of at
  most 3 trials each, one after another, each resuming the search.

The resident set size (RSS) of the process that ran a trial is recorded after
the trial, after garbage collection (``rss_mib`` in the results). Printed:
RSS per trial and the ratio RSS(trial 20) / RSS(trial 3) for both (goal: at
most 1.10), the highest RSS after trials 3-20 over RSS(trial 3) (the bound,
whatever trial the last process ends on), and the growth per trial from a
least-squares line.

Usage::

    python benchmarks/bench_search_memory.py [--trials 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import append_row, machine  # noqa: E402

import kertransfer as kt  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--per-process", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    data = kt.data.load("digits_m", image_size=(32, 32), batch_size=32, validation_split=0.2,
                        samples_per_class=20, seed=0, verbose=0)
    print(f"{machine()}; {args.trials} trials, mobilenet_v3_small 32px, "
          f"{data.counts['train']} training images", flush=True)
    start = time.perf_counter()
    curves = {}
    with tempfile.TemporaryDirectory(prefix="kt-search-memory-") as tmp:
        keras.utils.set_random_seed(0)
        weights = os.path.join(tmp, "pretrained.keras")
        kt.build_transfer_model("mobilenet_v3_small", 10, input_shape=(32, 32, 3),
                                weights=None, freeze="none").save(weights)
        keras.backend.clear_session()
        child_mode = f"trials_per_process={args.per_process}"
        for mode, per_process in (("one process", None), (child_mode, args.per_process)):
            hm = kt.TransferHyperModel("mobilenet_v3_small", num_classes=10,
                                       input_shape=(32, 32, 3), weights=weights, epochs=3,
                                       space={"head_epochs": 2, "unfreeze_top": (0, 4)})
            tuner = kt.tune(hm, data, max_trials=args.trials, epochs=3, verbose=0,
                            directory=os.path.join(tmp, mode.split("=")[0].replace(" ", "_")),
                            trials_per_process=per_process, save_best=False)
            curves[mode] = [r["rss_mib"] for r in tuner.results]
            print(f"{mode}: RSS per trial (MiB) " + " ".join(f"{v:.0f}" for v in curves[mode]),
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
    print(f"({time.perf_counter() - start:.0f}s; goal: ratio <= 1.10)")
    if not args.no_record:
        (r_kt, s_kt, p_kt), (r_one, s_one, p_one) = stats[child_mode], stats["one process"]
        append_row("search memory, RSS after trial 20 / after trial 3",
                   f"{machine()}; random search, {args.trials} two-phase trials, "
                   f"mobilenet_v3_small 32px, {data.counts['train']} images, 3 epochs",
                   f"{r_kt:.3f} ({child_mode})", f"{r_one:.3f} (one process)", r_kt,
                   f"ratio column = kertransfer's; highest RSS after trials 3-{args.trials} "
                   f"{p_kt:.3f} x trial 3 ({p_one:.3f} in one process); growth per trial "
                   f"{s_kt:.1f} MiB vs {s_one:.1f} MiB; goal <= 1.10")
    return 0

if __name__ == "__main__":
    sys.exit(main())
