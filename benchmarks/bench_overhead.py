"""Overhead of build_transfer_model against the Keras transfer-learning guide, by hand.

One training epoch of a model from ``kertransfer.build_transfer_model`` is
timed against the same model written as in the Keras guide "Transfer learning
& fine-tuning" (``base_model(x, training=False)`` with a pooled, dropout,
dense head): same backbone, head, data pipeline and batch size, in the same
process. Epochs alternate between the two models (after one warm-up epoch
each, which traces the step functions). The ratio compares median step times
(robust to load spikes on a shared machine); median epoch times are printed
too.
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
    for layer in base.layers:  # BatchNorm frozen: same trainable set as bn="frozen"
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
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


class StepTimer(keras.callbacks.Callback):
    """Records the wall time of every training step."""

    def __init__(self):
        super().__init__()
        self.steps: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(time.perf_counter() - self._start)


def time_epochs(models: dict, dataset, epochs: int):
    """Epoch times and step times per model, epochs alternating between models."""
    for model in models.values():  # warm-up: traces the train step
        model.fit(dataset, epochs=1, verbose=0)
    times: dict[str, list[float]] = {name: [] for name in models}
    timers = {name: StepTimer() for name in models}
    order = list(models)
    for i in range(epochs):
        # Alternate which model goes first, so drift in machine load cancels out.
        for name in order if i % 2 == 0 else order[::-1]:
            model = models[name]
            start = time.perf_counter()
            model.fit(dataset, epochs=1, verbose=0, callbacks=[timers[name]])
            times[name].append(time.perf_counter() - start)
    return times, {name: t.steps for name, t in timers.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v3_small")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs per model")
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
        times, steps = time_epochs({"kertransfer": ours, "by hand": guide}, data.train,
                                   args.epochs)
        kt_s = statistics.median(times["kertransfer"])
        hand_s = statistics.median(times["by hand"])
        epoch_ratio = kt_s / hand_s
        # The median step is robust to the load spikes of a shared machine.
        ratio = statistics.median(steps["kertransfer"]) / statistics.median(steps["by hand"])
        results.append((setting, kt_s, hand_s, ratio, epoch_ratio))
        ours_each = ", ".join(f"{t:.2f}" for t in times["kertransfer"])
        hand_each = ", ".join(f"{t:.2f}" for t in times["by hand"])
        print(f"{setting:<22} kertransfer {kt_s:6.2f} s/epoch   by hand {hand_s:6.2f} s/epoch"
              f"   ratio {ratio:.3f} (median step; median epoch: {epoch_ratio:.3f})"
              f"   (epochs: {ours_each} | {hand_each})")
        keras.backend.clear_session()
    if not args.no_record:
        for setting, kt_s, hand_s, ratio, epoch_ratio in results:
            append_row(
                "one epoch vs Keras guide by hand",
                f"{args.backbone} {size[0]}px, batch {args.batch_size}, {setting}; {machine()}",
                f"{kt_s:.2f} s", f"{hand_s:.2f} s", ratio,
                f"ratio of median step times over {args.epochs} alternating epochs "
                f"(median-epoch ratio {epoch_ratio:.3f}); goal <= 1.03",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
