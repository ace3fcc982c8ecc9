"""Start-up time of the ``kertransfer`` command and of ``import kertransfer``.

Each measurement is a fresh Python process, timed from start to exit, run
``--repeats`` times in alternation (the median is kept, robust to load spikes
on a shared machine):

- ``kertransfer --help`` and ``kertransfer train --help``: parsed without
  importing Keras. Goal: under 1 second each.
- ``import kertransfer``: imports neither Keras nor KerasTuner,
  scikit-learn or matplotlib (checked in the same process).
- The baseline: what every one of these cost when the package imported all
  its layers eagerly, i.e. ``import kertransfer`` followed by touching every
  public name (Keras, its backend, KerasTuner and the rest).

The ratio is baseline / ``kertransfer --help``.

Usage::

    python benchmarks/bench_startup.py [--repeats 5] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from _common import append_row, machine  # noqa: E402

HELP = [sys.executable, "-m", "kertransfer", "--help"]
TRAIN_HELP = [sys.executable, "-m", "kertransfer", "train", "--help"]
IMPORT = [sys.executable, "-c", (
    "import sys, kertransfer\n"
    "heavy = [m for m in ('keras', 'tensorflow', 'keras_tuner', 'sklearn', 'matplotlib') "
    "if m in sys.modules]\n"
    "assert not heavy, heavy")]
EAGER = [sys.executable, "-c", (
    "import kertransfer as kt\n"
    "for name in kt.__all__: getattr(kt, name)")]


def timed(command) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command")
    parser.add_argument("--no-record", action="store_true", help="do not append the row")
    args = parser.parse_args(argv)
    commands = {"kertransfer --help": HELP, "kertransfer train --help": TRAIN_HELP,
                "import kertransfer": IMPORT, "eager import of every name": EAGER}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, command in commands.items():
            times[name].append(timed(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:28s} median {value:6.3f} s  (runs: "
              f"{', '.join(f'{t:.2f}' for t in times[name])})")
    ratio = medians["eager import of every name"] / medians["kertransfer --help"]
    worst = max(medians["kertransfer --help"], medians["kertransfer train --help"])
    verdict = f"goal: --help under 1 s: {'met' if worst < 1.0 else 'not met'}"
    print(f"ratio (eager import / --help): {ratio:.1f}x; {verdict}")
    if not args.no_record:
        append_row("start-up: kertransfer --help vs eager import",
                   f"{machine()}; fresh process each, median of {args.repeats}",
                   f"--help {medians['kertransfer --help']:.2f} s",
                   f"eager import {medians['eager import of every name']:.2f} s", ratio,
                   f"train --help {medians['kertransfer train --help']:.2f} s; import "
                   f"kertransfer {medians['import kertransfer']:.2f} s (no Keras, KerasTuner, "
                   f"scikit-learn or matplotlib); {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
