"""Head training on cached features against the Keras guide's frozen-backbone fit.

Same model, head, data, batch size and epochs, in one process. The baseline
is the guide's recipe: ``fit`` on images with the backbone frozen (every
epoch runs the backbone forward). kertransfer computes the backbone features
once, then trains the same head layers on them. Printed: the per-epoch time
ratio (goal: at least 20x faster) and the end-to-end ratio for all epochs,
including kertransfer's one feature pass.

Usage::

    python benchmarks/bench_feature_cache.py [--backbone mobilenet_v3_small] [--image-size 96]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
from _common import append_row, machine  # noqa: E402

import kertransfer as kt  # noqa: E402
from kertransfer.models import compute_features  # noqa: E402
from kertransfer.training import train_head_on_features  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v3_small")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    size = (args.image_size, args.image_size)
    data = kt.data.load("digits_m", image_size=size, batch_size=args.batch_size, seed=0,
                        verbose=0)
    x, y = data.as_numpy("train")
    shape = (*size, 3)
    print(f"{machine()}; {args.backbone} at {size[0]}x{size[1]}, batch {args.batch_size}, "
          f"{len(x)} images, {args.epochs} epochs")

    keras.utils.set_random_seed(0)
    guide = kt.build_transfer_model(args.backbone, data.num_classes, input_shape=shape,
                                    weights=None, freeze="all")
    guide.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    timer = EpochTimer()
    start = time.perf_counter()
    guide.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
              callbacks=[timer])
    guide_total = time.perf_counter() - start
    guide_epoch = statistics.median(timer.times[1:])  # the first epoch also traces

    keras.utils.set_random_seed(0)
    ours = kt.build_transfer_model(args.backbone, data.num_classes, input_shape=shape,
                                   weights=None, freeze="all")
    start = time.perf_counter()
    compute_features(ours, x, verbose=0)  # warm the extractor like the baseline's first epoch
    feature_pass = time.perf_counter() - start
    start = time.perf_counter()
    hist_timer = EpochTimer()
    train_head_on_features(ours, (x, y), epochs=args.epochs, batch_size=args.batch_size,
                           callbacks=[hist_timer], verbose=0)
    ours_total = time.perf_counter() - start
    ours_epoch = statistics.median(hist_timer.times[1:])
    per_epoch = guide_epoch / ours_epoch
    end_to_end = guide_total / ours_total
    print(f"per epoch: guide {guide_epoch:.3f} s, cached {ours_epoch * 1e3:.1f} ms, "
          f"{per_epoch:.0f}x faster (goal >= 20x)")
    print(f"{args.epochs} epochs end to end: guide {guide_total:.1f} s, cached {ours_total:.1f} s "
          f"including the feature pass; {end_to_end:.1f}x faster "
          f"(a separate warm feature pass took {feature_pass:.1f} s)")
    if not args.no_record:
        setup = f"{args.backbone} {size[0]}px, batch {args.batch_size}; {machine()}"
        append_row("head epoch on cached features vs guide frozen fit (speed-up)", setup,
                   f"{ours_epoch * 1e3:.1f} ms", f"{guide_epoch:.3f} s", per_epoch,
                   "median epoch after the first; goal >= 20")
        append_row(f"{args.epochs} epochs end to end incl. feature pass (speed-up)", setup,
                   f"{ours_total:.1f} s", f"{guide_total:.1f} s", end_to_end,
                   "kertransfer time includes computing the features once")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
