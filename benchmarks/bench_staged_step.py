"""Step time of a frozen stage under StagedUnfreezing against a model compiled frozen.

Both models are the same transfer model (same backbone, head, data and batch
size, in one process). One is built and compiled with the backbone frozen;
the other is built fully trainable and trained with
``StagedUnfreezing([(0, "head"), ...])``, which freezes the backbone inside
``fit`` and rebuilds the optimizer. Epochs alternate between the two after a
warm-up; the ratio of median step times is printed. Goal: at most 1.10.

Usage::

    python benchmarks/bench_staged_step.py [--backbone mobilenet_v3_small] [--image-size 96]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
from _common import append_row, machine  # noqa: E402
from bench_overhead import StepTimer  # noqa: E402

import kertransfer as kt  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v3_small")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per model")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    size = (args.image_size, args.image_size)
    data = kt.data.load("digits_m", image_size=size, batch_size=args.batch_size, seed=0,
                        verbose=0)
    shape = (*size, 3)
    keras.utils.set_random_seed(0)
    frozen = kt.build_transfer_model(args.backbone, data.num_classes, input_shape=shape,
                                     weights=None, freeze="all")
    staged = kt.build_transfer_model(args.backbone, data.num_classes, input_shape=shape,
                                     weights=None, freeze="none")
    for model in (frozen, staged):
        model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    total = args.epochs + 1
    # The staged model stays in its frozen stage for the whole run.
    stages = kt.callbacks.StagedUnfreezing([(0, "head"), (10 * total, "all")], verbose=0)
    timers = {"staged": StepTimer(), "compiled frozen": StepTimer()}
    print(f"{machine()}; {args.backbone} at {size[0]}x{size[1]}, batch {args.batch_size}")
    # Warm-up epoch each (traces), then alternate timed epochs.
    staged.fit(data.train, epochs=1, verbose=0, callbacks=[stages])
    frozen.fit(data.train, epochs=1, verbose=0)
    assert len(staged.trainable_weights) == len(frozen.trainable_weights)
    for i in range(args.epochs):
        order = [("staged", staged), ("compiled frozen", frozen)]
        for name, model in order if i % 2 == 0 else order[::-1]:
            cbs = [timers[name]] + ([stages] if name == "staged" else [])
            model.fit(data.train, epochs=1, verbose=0, callbacks=cbs)
    s = statistics.median(timers["staged"].steps)
    f = statistics.median(timers["compiled frozen"].steps)
    ratio = s / f
    print(f"frozen-stage step: staged {s * 1e3:.1f} ms, compiled frozen {f * 1e3:.1f} ms, "
          f"ratio {ratio:.3f} (goal <= 1.10)")
    if not args.no_record:
        append_row("frozen-stage step, StagedUnfreezing vs compiled frozen",
                   f"{args.backbone} {size[0]}px, batch {args.batch_size}; {machine()}",
                   f"{s * 1e3:.1f} ms", f"{f * 1e3:.1f} ms", ratio,
                   f"median step over {args.epochs} alternating epochs; goal <= 1.10")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
