"""Search speed: kertransfer's search against a plain KerasTuner search of the same space.

Both searches run the same two-phase recipe on the same data, weights and
seed: ``head_epochs`` epochs of the head on the frozen backbone, then the top
``unfreeze_top`` blocks trainable (BatchNorm in inference mode) for the remaining
epochs at ``fine_tune_learning_rate``; searched: ``unfreeze_top`` (0-13 blocks of
mobilenet_v3_small), ``head_learning_rate``, ``fine_tune_learning_rate`` and ``dropout``.

- baseline: ``keras_tuner.RandomSearch`` over a hand-written
  ``keras_tuner.HyperModel`` in the style of the Keras transfer-learning guide
  (``keras.applications`` backbone, ``base.trainable = False``, fit the head,
  unfreeze the top layers, recompile, fit again); every epoch runs the
  backbone.
- kertransfer: `kt.tune` over a `TransferHyperModel`; phase 1 of every trial
  trains on backbone features computed once for the whole search, phase 2 on
  the output of the frozen bottom blocks, computed once per cut depth.

``--baseline-bn frozen`` also keeps the baseline's BatchNorm gamma and beta
fixed in the unfrozen blocks, as kertransfer's ``bn="frozen"`` does (the Keras
guide leaves them trainable): an ablation of one recipe difference.

The hyperparameters have the same names, ranges and declaration order, and
the oracles the same seed, so both searches draw the same trials. Printed: the
wall-clock ratio (goal: kertransfer at least 3x faster) and the best
validation accuracy of each (goal: within 1 point).

Usage::

    python benchmarks/bench_search_speed.py [--trials 12] [--epochs 6] [--head-epochs 4]
        [--image-size 32] [--baseline-bn trainable|frozen]
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
from _common import append_row, machine  # noqa: E402

import kertransfer as kt  # noqa: E402
from kertransfer.freezing import block_context  # noqa: E402

BACKBONE = "mobilenet_v3_small"
SHAPE = (32, 32, 3)  # --image-size changes it


class HandWritten(keras_tuner.HyperModel):
    """The same two-phase recipe written with plain Keras and KerasTuner."""

    def __init__(self, weights: str, block_starts: list[str], head_epochs: int,
                 freeze_bn: bool = False):
        super().__init__()
        self.weights = weights
        self.block_starts = block_starts  # name of the first layer of each block
        self.head_epochs = head_epochs
        self.freeze_bn = freeze_bn  # BatchNorm gamma/beta stay fixed, as kertransfer's bn="frozen"

    def build(self, hp):
        hp.Fixed("backbone", BACKBONE)
        with hp.conditional_scope("backbone", [BACKBONE]):
            hp.Int(f"{BACKBONE}/unfreeze_top", 0, len(self.block_starts))
        head_learning_rate = hp.Float("head_learning_rate", 1e-4, 1e-2, sampling="log")
        hp.Float("fine_tune_learning_rate", 1e-5, 1e-3, sampling="log")
        dropout = hp.Float("dropout", 0.0, 0.5, step=0.1)
        # kertransfer declares its fixed knobs too; each takes a seed from the oracle.
        for name, value in (("bn", "frozen"), ("head_units", 0),
                            ("head_epochs", self.head_epochs), ("decay", 1.0)):
            hp.Fixed(name, value)
        base = keras.applications.MobileNetV3Small(input_shape=SHAPE, include_top=False,
                                                   weights=None, include_preprocessing=True)
        base.load_weights(self.weights)
        base.trainable = False
        inputs = keras.Input(SHAPE)
        x = base(inputs, training=False)  # BatchNorm stays in inference mode
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dropout(dropout)(x)
        outputs = keras.layers.Dense(10, activation="softmax", dtype="float32")(x)
        model = keras.Model(inputs, outputs)
        model.compile(keras.optimizers.Adam(head_learning_rate), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    def fit(self, hp, model, data, callbacks=None, epochs=6, verbose=0, **kwargs):
        h1 = model.fit(data.train, validation_data=data.val, epochs=self.head_epochs,
                       callbacks=callbacks, verbose=verbose)
        k = hp.get(f"{BACKBONE}/unfreeze_top")
        history = dict(h1.history)
        if k > 0:
            base = model.layers[1]
            base.trainable = True
            names = [layer.name for layer in base.layers]
            cut = names.index(self.block_starts[len(self.block_starts) - k])
            for layer in base.layers[:cut]:
                layer.trainable = False
            if self.freeze_bn:
                for layer in base.layers:
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.trainable = False
            model.compile(keras.optimizers.Adam(hp.get("fine_tune_learning_rate")),
                          "sparse_categorical_crossentropy", metrics=["accuracy"])
        h2 = model.fit(data.train, validation_data=data.val, epochs=epochs,
                       initial_epoch=self.head_epochs, callbacks=callbacks, verbose=verbose)
        for key, values in h2.history.items():
            history[key] = history.get(key, []) + values
        out = keras.callbacks.History()
        out.history = history
        return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--head-epochs", type=int, default=4)
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--baseline-bn", choices=("trainable", "frozen"), default="trainable",
                        help="the baseline's BatchNorm gamma/beta in unfrozen blocks: trainable "
                        "(the Keras guide) or frozen (kertransfer's bn='frozen')")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    global SHAPE
    SHAPE = (args.image_size, args.image_size, 3)
    data = kt.data.load("digits_m", image_size=SHAPE[:2], batch_size=32, validation_split=0.2,
                        seed=0, verbose=0)
    print(f"{machine()}; {args.trials} trials of {args.epochs} epochs ({args.head_epochs} "
          f"head), {BACKBONE} {SHAPE[0]}px, {data.counts['train']} training images", flush=True)
    with tempfile.TemporaryDirectory(prefix="kt-search-speed-") as tmp:
        # The "pretrained" backbone: a few epochs on the source task, clean digits.
        keras.utils.set_random_seed(0)
        source = kt.data.load("digits", image_size=SHAPE[:2], batch_size=32,
                              validation_split=0.1, seed=0, verbose=0)
        ref = kt.build_transfer_model(BACKBONE, 10, input_shape=SHAPE, weights=None,
                                      freeze="none", bn="trainable")
        kt.training.train(ref, source, epochs=args.pretrain_epochs, learning_rate=2e-3,
                          verbose=0, validate_each_epoch=False)
        weights = os.path.join(tmp, "backbone.weights.h5")
        ref.backbone.save_weights(weights)
        ctx = block_context(ref)
        starts = [ctx.layers[ctx.block_of.index(i)].name for i in range(ctx.num_blocks)]
        keras.backend.clear_session()

        t0 = time.perf_counter()
        base_tuner = keras_tuner.RandomSearch(
            HandWritten(weights, starts, args.head_epochs, args.baseline_bn == "frozen"),
            objective="val_accuracy",
            max_trials=args.trials, seed=1, directory=os.path.join(tmp, "plain"),
            project_name="plain")
        base_tuner.search(data, epochs=args.epochs, verbose=0)
        t_plain = time.perf_counter() - t0
        best_plain = base_tuner.oracle.get_best_trials(1)[0].score
        print(f"plain KerasTuner: {t_plain:.0f}s, best val_accuracy {best_plain:.4f}",
              flush=True)
        keras.backend.clear_session()

        t0 = time.perf_counter()
        hm = kt.TransferHyperModel(BACKBONE, num_classes=10, input_shape=SHAPE,
                                   weights=weights, epochs=args.epochs,
                                   space={"head_epochs": args.head_epochs})
        # kt.tune's seed 0 is the oracle's seed 1 (KerasTuner reads 0 as "no seed").
        tuner = kt.tune(hm, data, max_trials=args.trials, epochs=args.epochs, seed=0,
                        directory=os.path.join(tmp, "kt"), verbose=0, save_best=False)
        t_kt = time.perf_counter() - t0
        best_kt = tuner.tuner.oracle.get_best_trials(1)[0].score
        print(f"kertransfer:      {t_kt:.0f}s, best val_accuracy {best_kt:.4f} "
              f"({hm.features.passes} feature passes)", flush=True)
        searched = [f"{BACKBONE}/unfreeze_top", "head_learning_rate", "fine_tune_learning_rate",
                    "dropout"]
        same = [
            all(t.hyperparameters.values[k] == u.hyperparameters.values[k] for k in searched)
            for t, u in zip(sorted(tuner.tuner.oracle.trials.values(), key=lambda t: t.trial_id),
                            sorted(base_tuner.oracle.trials.values(), key=lambda t: t.trial_id))
        ]
    ratio = t_plain / t_kt
    gap = 100 * (best_kt - best_plain)
    print(f"\nspeed-up {ratio:.2f}x (goal >= 3); best val_accuracy kertransfer {best_kt:.4f} vs "
          f"plain {best_plain:.4f} ({gap:+.1f} points; goal within 1); "
          f"{sum(same)}/{len(same)} trials drew the same values")
    if not args.no_record:
        append_row("search wall clock, plain KerasTuner / kertransfer (speed-up)",
                   f"{machine()}; random search, {args.trials} trials of {args.epochs} epochs "
                   f"({args.head_epochs} head), {BACKBONE} {SHAPE[0]}px, "
                   f"{data.counts['train']} images; "
                   f"baseline BatchNorm {args.baseline_bn}",
                   f"{t_kt:.0f} s, best {best_kt:.4f}", f"{t_plain:.0f} s, best {best_plain:.4f}",
                   ratio, f"best val_accuracy {gap:+.1f} points; {sum(same)}/{len(same)} "
                   "trials with the same values; goal >= 3x, within 1 point")
    return 0


if __name__ == "__main__":
    sys.exit(main())
