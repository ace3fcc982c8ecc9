"""Overhead of build_transfer_model against the Keras transfer-learning guide, by hand.

One training epoch of a model from ``kertransfer.build_transfer_model`` is
timed against the same model written as in the Keras guide "Transfer learning
& fine-tuning" (``base_model(x, training=False)`` with a pooled, dropout,
dense head): same backbone, head, data pipeline and batch size, in the same
process. Epochs alternate between the two models (after one warm-up epoch
each, which traces the step functions) and the median epoch time is compared.
Two settings: a frozen backbone (feature extraction) and a fully unfrozen one
with BatchNorm kept in inference mode (fine-tuning). Goal: ratio at most 1.03.

Usage::

    python benchmarks/bench_overhead.py [--backbone mobilenet_v3_small] [--image-size 96]
                                        [--epochs 3] [--no-record]
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


def hand_written(spec, input_shape, num_classes, fine_tune: bool):
    """The Keras guide's recipe, written out by hand."""
    from kertransfer.models.layers import Preprocess

    base = spec.construct(input_shape, weights=None)
    base.trainable = fine_tune
    inputs = keras.Input(shape=input_shape)
    x = Preprocess(spec.preprocessing)(inputs)  # the guide's preprocess_input, same math
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def compile_model(model):
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy()])


def time_epochs(models: dict, dataset, epochs: int) -> dict[str, list[float]]:
    for model in models.values():  # warm-up: traces the train step
        model.fit(dataset, epochs=1, verbose=0)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(epochs):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(dataset, epochs=1, verbose=0)
            times[name].append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v3_small")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per model")
    parser.add_argument("--no-record", action="store_true", help="do not append to the docs")
    args = parser.parse_args(argv)

    size = (args.image_size, args.image_size)
    data = kt.data.load("digits_m", image_size=size, batch_size=args.batch_size, seed=0,
                        verbose=0)
    spec = kt.get_backbone_spec(args.backbone)
    shape = (*size, 3)
    print(f"{machine()}; {args.backbone} at {size[0]}x{size[1]}, batch {args.batch_size}, "
          f"{data.counts['train']} images per epoch")
    results = []
    for setting, fine_tune in (("frozen backbone", False), ("fine-tune, BN frozen", True)):
        keras.utils.set_random_seed(0)
        ours = kt.build_transfer_model(args.backbone, data.num_classes, input_shape=shape,
                                       weights=None, freeze="none" if fine_tune else "all",
                                       bn="frozen", dropout=0.2)
        guide = hand_written(spec, shape, data.num_classes, fine_tune)
        for model in (ours, guide):
            compile_model(model)
        assert len(ours.trainable_weights) == len(guide.trainable_weights)
        times = time_epochs({"kertransfer": ours, "by hand": guide}, data.train, args.epochs)
        kt_s = statistics.median(times["kertransfer"])
        hand_s = statistics.median(times["by hand"])
        ratio = kt_s / hand_s
        results.append((setting, kt_s, hand_s, ratio))
        ours_each = ", ".join(f"{t:.2f}" for t in times["kertransfer"])
        hand_each = ", ".join(f"{t:.2f}" for t in times["by hand"])
        print(f"{setting:<22} kertransfer {kt_s:6.2f} s/epoch   by hand {hand_s:6.2f} s/epoch"
              f"   ratio {ratio:.3f}   (epochs: {ours_each} | {hand_each})")
        keras.backend.clear_session()
    if not args.no_record:
        for setting, kt_s, hand_s, ratio in results:
            append_row(
                "one epoch vs Keras guide by hand",
                f"{args.backbone} {size[0]}px, batch {args.batch_size}, {setting}; {machine()}",
                f"{kt_s:.2f} s", f"{hand_s:.2f} s", ratio,
                f"median of {args.epochs} alternating epochs; goal <= 1.03",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
