"""Search speed on real weights: kertransfer's search against plain KerasTuner, same recipe.

ImageNet weights (``kertransfer weights install mobilenet efficientnet_lite0``)
transferred to Fashion-MNIST (Debian's ``dataset-fashion-mnist``, or the
download), ``--labels-per-class`` training images per class and 1,000 held out
for validation, at ``--image-size``. Both searches run the same two-phase
recipe on the same data, weights and oracle seed: ``head_epochs`` epochs of
the head on the frozen backbone, then the top ``unfreeze_top`` blocks
trainable with BatchNorm frozen (gamma and beta fixed, inference statistics:
kertransfer's ``bn="frozen"``) for the remaining epochs at
``fine_tune_learning_rate``. Searched: ``unfreeze_top`` (every depth),
``head_learning_rate``, ``fine_tune_learning_rate`` and ``dropout``.

- baseline: ``keras_tuner.RandomSearch`` over a hand-written
  ``keras_tuner.HyperModel`` in the style of the Keras transfer-learning guide
  (the same backbone network and weights, ``base.trainable = False``, fit the
  head, unfreeze the top blocks, recompile, fit again); every epoch runs the
  whole backbone.
- kertransfer: `kt.tune` over a `TransferHyperModel`.

The hyperparameters have the same names, ranges and declaration order, and
the oracles the same seed, so both searches draw the same trials (printed).
Printed: each side's wall clock and best validation accuracy, the speed-up
(goal: at least 3x) and the accuracy gap (goal: within 1 point).

Usage::

    python benchmarks/bench_search_speed.py [--backbone mobilenet|efficientnet_lite0]
        [--trials 12] [--epochs 6] [--head-epochs 2] [--image-size 96]
        [--labels-per-class 60] [--profile FILE]
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
import keras_tuner  # noqa: E402
from _common import append_row, machine, require_full_fashion_mnist  # noqa: E402

import kertransfer as kt  # noqa: E402
from kertransfer.freezing import block_context  # noqa: E402

VAL_IMAGES = 1000


class HandWritten(keras_tuner.HyperModel):
    """The same two-phase recipe written with plain Keras and KerasTuner."""

    def __init__(self, backbone: str, shape, block_starts: list[str], head_epochs: int,
                 weights="imagenet", num_classes: int = 10, max_unfreeze: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.weights = weights  # "imagenet" or a saved model of the same backbone
        self.num_classes = num_classes
        self.max_unfreeze = len(block_starts) if max_unfreeze is None else max_unfreeze
        self.shape = shape
        self.block_starts = block_starts  # name of the first layer of each block
        self.head_epochs = head_epochs

    def build(self, hp):
        name = self.backbone
        hp.Fixed("backbone", name)
        with hp.conditional_scope("backbone", [name]):
            hp.Int(f"{name}/unfreeze_top", 0, self.max_unfreeze)
        head_learning_rate = hp.Float("head_learning_rate", 1e-4, 1e-2, sampling="log")
        hp.Float("fine_tune_learning_rate", 1e-5, 1e-3, sampling="log")
        dropout = hp.Float("dropout", 0.0, 0.5, step=0.1)
        # kertransfer declares its fixed knobs too; each takes a seed from the oracle.
        for knob, value in (("bn", "frozen"), ("head_units", 0),
                            ("head_epochs", self.head_epochs), ("decay", 1.0)):
            hp.Fixed(knob, value)
        # The backbone network with its weights, and its input scaling.
        parts = kt.build_transfer_model(name, self.num_classes, input_shape=self.shape,
                                        weights=self.weights)
        base = parts.backbone
        base.trainable = False
        inputs = keras.Input(self.shape)
        names = {layer.name for layer in parts.layers}
        x = parts.get_layer("preprocess")(inputs) if "preprocess" in names else inputs
        x = base(x, training=False)  # BatchNorm stays in inference mode
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dropout(dropout)(x)
        outputs = keras.layers.Dense(self.num_classes, activation="softmax", dtype="float32")(x)
        model = keras.Model(inputs, outputs)
        model.compile(keras.optimizers.Adam(head_learning_rate), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    def fit(self, hp, model, data, validation_data=None, callbacks=None, epochs=6, verbose=0,
            batch_size=32, **kwargs):
        """Phase 1, then phase 2; ``data`` is a `DataBundle` or ``(x, y)`` arrays with
        ``validation_data``."""
        if isinstance(data, tuple):
            train = {"x": data[0], "y": data[1], "batch_size": batch_size}
        else:
            train, validation_data = {"x": data.train}, data.val
        h1 = model.fit(**train, validation_data=validation_data, epochs=self.head_epochs,
                       callbacks=callbacks, verbose=verbose)
        k = hp.get(f"{self.backbone}/unfreeze_top")
        history = dict(h1.history)
        if k > 0:
            base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
            base.trainable = True
            names = [layer.name for layer in base.layers]
            # Every block: from the first layer (the first block may start at the input,
            # whose name differs between two constructions).
            cut = 0 if k >= len(self.block_starts) else names.index(
                self.block_starts[len(self.block_starts) - k])
            for layer in base.layers[:cut]:
                layer.trainable = False
            for layer in base.layers:  # gamma and beta fixed, as kertransfer's bn="frozen"
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
            model.compile(keras.optimizers.Adam(hp.get("fine_tune_learning_rate")),
                          "sparse_categorical_crossentropy", metrics=["accuracy"])
        h2 = model.fit(**train, validation_data=validation_data, epochs=epochs,
                       initial_epoch=self.head_epochs, callbacks=callbacks, verbose=verbose)
        for key, values in h2.history.items():
            history[key] = history.get(key, []) + values
        out = keras.callbacks.History()
        out.history = history
        return out


def block_starts(backbone: str, shape) -> list[str]:
    """The name of the first layer of each block of ``backbone``, bottom first."""
    ctx = block_context(kt.build_transfer_model(backbone, 10, input_shape=shape, weights=None))
    starts = [ctx.layers[ctx.block_of.index(i)].name for i in range(ctx.num_blocks)]
    keras.backend.clear_session()
    return starts


def _best(oracle) -> float:
    return oracle.get_best_trials(1)[0].score


def main(argv=None) -> int:
    require_full_fashion_mnist()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet",
                        choices=("mobilenet", "efficientnet_lite0"))
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--head-epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--labels-per-class", type=int, default=60)
    parser.add_argument("--only", choices=("plain", "kertransfer"),
                        help="run one side (no ratio, no row): for profiling")
    parser.add_argument("--profile", help="write a pyinstrument profile of the side(s) run "
                        "to this HTML file")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    shape = (args.image_size, args.image_size, 3)
    data = kt.data.load("fashion_mnist", image_size=shape[:2], batch_size=32,
                        validation_split=VAL_IMAGES / 70_000,
                        samples_per_class=args.labels_per_class, seed=0, verbose=0)
    setup = (f"random search, {args.trials} trials of {args.epochs} epochs ({args.head_epochs} "
             f"head), ImageNet {args.backbone} -> Fashion-MNIST {shape[0]}px, "
             f"{data.counts['train']} training and {data.counts['val']} validation images, "
             "BatchNorm frozen on both sides")
    print(f"{machine()}; {setup}", flush=True)
    starts = block_starts(args.backbone, shape)
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
    seconds, best, tuners = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="kt-search-speed-") as tmp:
        if args.only in (None, "plain"):
            t0 = time.perf_counter()
            tuner = keras_tuner.RandomSearch(
                HandWritten(args.backbone, shape, starts, args.head_epochs),
                objective="val_accuracy", max_trials=args.trials, seed=1,
                directory=os.path.join(tmp, "plain"), project_name="plain")
            tuner.search(data, epochs=args.epochs, verbose=0)
            seconds["plain"], best["plain"] = time.perf_counter() - t0, _best(tuner.oracle)
            tuners["plain"] = tuner
            print(f"plain KerasTuner: {seconds['plain']:.0f}s, best val_accuracy "
                  f"{best['plain']:.4f}", flush=True)
            keras.backend.clear_session()
        if args.only in (None, "kertransfer"):
            t0 = time.perf_counter()
            hm = kt.TransferHyperModel(args.backbone, num_classes=10, input_shape=shape,
                                       weights="imagenet", epochs=args.epochs,
                                       space={"head_epochs": args.head_epochs})
            # kt.tune's seed 0 is the oracle's seed 1 (KerasTuner reads 0 as "no seed").
            result = kt.tune(hm, data, max_trials=args.trials, epochs=args.epochs, seed=0,
                             directory=os.path.join(tmp, "kt"), verbose=0, save_best=False)
            seconds["kt"], best["kt"] = time.perf_counter() - t0, _best(result.tuner.oracle)
            tuners["kt"] = result.tuner
            print(f"kertransfer:      {seconds['kt']:.0f}s, best val_accuracy {best['kt']:.4f} "
                  f"({hm.features.passes} feature passes, {hm.features.partial_passes} passes "
                  "of a frozen bottom)", flush=True)
    if profiler is not None:
        profiler.stop()
        with open(args.profile, "w") as f:
            f.write(profiler.output_html())
        profiler.last_session.save(args.profile + ".pyisession")  # pyinstrument --load=...
        print(profiler.output_text(unicode=False, color=False, show_all=False)[:6000])
    for side, tuner in tuners.items():
        for t in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id):
            values = t.hyperparameters.values
            print(f"  {side} trial {t.trial_id}: unfreeze_top "
                  f"{values[f'{args.backbone}/unfreeze_top']}, score {t.score:.4f}")
    if len(seconds) < 2:
        return 0
    searched = [f"{args.backbone}/unfreeze_top", "head_learning_rate",
                "fine_tune_learning_rate", "dropout"]
    trials = [sorted(t.oracle.trials.values(), key=lambda t: t.trial_id)
              for t in (tuners["kt"], tuners["plain"])]
    same = sum(all(t.hyperparameters.values[k] == u.hyperparameters.values[k] for k in searched)
               for t, u in zip(*trials))
    ratio = seconds["plain"] / seconds["kt"]
    gap = 100 * (best["kt"] - best["plain"])
    print(f"\nspeed-up {ratio:.2f}x (goal >= 3); best val_accuracy kertransfer {best['kt']:.4f} "
          f"vs plain {best['plain']:.4f} ({gap:+.1f} points; goal within 1); "
          f"{same}/{len(trials[0])} trials drew the same values")
    if not args.no_record:
        append_row("search wall clock on ImageNet weights, plain KerasTuner / kertransfer",
                   f"{machine()}; {setup}",
                   f"{seconds['kt']:.0f} s, best {best['kt']:.4f}",
                   f"{seconds['plain']:.0f} s, best {best['plain']:.4f}", ratio,
                   f"best val_accuracy {gap:+.1f} points; {same}/{len(trials[0])} trials with "
                   "the same values; goal >= 3x, within 1 point")
    return 0


if __name__ == "__main__":
    sys.exit(main())
