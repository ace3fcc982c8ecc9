"""Memory held across the trials of a search: resident memory after trial 20 vs after trial 3.

A random search of 20 small two-phase trials (mobilenet_v3_small at 32x32 on
200 digits_m images, 3 epochs each, the unfreeze depth, rates and dropout
searched). The resident set size (RSS) of the process is read after every
trial, after garbage collection. Printed: RSS per trial and the ratio
RSS(trial 20) / RSS(trial 3) (goal: at most 1.10), with the growth per trial
from a least-squares line over trials 3-20.

Usage::

    python benchmarks/bench_search_memory.py [--trials 20]
"""

from __future__ import annotations

import argparse
import gc
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


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc, else peak RSS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Measured(kt.TransferHyperModel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rss: list[float] = []

    def fit(self, hp, model, *args, **kwargs):
        out = super().fit(hp, model, *args, **kwargs)
        gc.collect()
        self.rss.append(rss_mb())
        print(f"trial {len(self.rss):>2}: RSS {self.rss[-1]:.0f} MiB", flush=True)
        return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    data = kt.data.load("digits_m", image_size=(32, 32), batch_size=32, validation_split=0.2,
                        samples_per_class=20, seed=0, verbose=0)
    print(f"{machine()}; {args.trials} trials, mobilenet_v3_small 32px, "
          f"{data.counts['train']} training images")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kt-search-memory-") as tmp:
        keras.utils.set_random_seed(0)
        weights = os.path.join(tmp, "pretrained.keras")
        kt.build_transfer_model("mobilenet_v3_small", 10, input_shape=(32, 32, 3),
                                weights=None, freeze="none").save(weights)
        keras.backend.clear_session()
        hm = Measured("mobilenet_v3_small", num_classes=10, input_shape=(32, 32, 3),
                      weights=weights, epochs=3, space={"head_epochs": 2, "unfreeze": (0, 4)})
        kt.tune(hm, data, max_trials=args.trials, epochs=3, directory=os.path.join(tmp, "s"),
                verbose=0, save_best=False)
    rss = hm.rss
    if len(rss) < 4:
        print("Too few trials to compare.")
        return 1
    ratio = rss[-1] / rss[2]
    slope = float(np.polyfit(np.arange(3, len(rss) + 1), rss[2:], 1)[0])
    print(f"\nRSS after trial 3: {rss[2]:.0f} MiB; after trial {len(rss)}: {rss[-1]:.0f} MiB; "
          f"ratio {ratio:.3f} (goal <= 1.10); growth {slope:.1f} MiB per trial "
          f"({time.perf_counter() - start:.0f}s)")
    if not args.no_record:
        append_row("search memory, RSS after last trial / after trial 3",
                   f"{machine()}; random search, {len(rss)} two-phase trials, "
                   f"mobilenet_v3_small 32px, 160 images, 3 epochs",
                   f"{rss[-1]:.0f} MiB", f"{rss[2]:.0f} MiB", ratio,
                   f"growth {slope:.1f} MiB per trial (least squares, trials 3-{len(rss)}); "
                   "goal <= 1.10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
