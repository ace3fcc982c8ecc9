"""Transfer between time-series tasks with a sequence backbone.

Offline, on generated waveforms (`kertransfer.data.waveforms`), in about two
minutes on a laptop CPU::

    python examples/sequences.py

A GRU encoder learns six wave shapes on the source. The target asks for four
of them at other speeds, under drift and more noise, from five labelled
series per class. The source encoder is reused with `weights=`: its head
trains first with the encoder frozen, then the top encoder layer opens
(`StagedUnfreezing`; the blocks are `stem`, `layer0`, `layer1`). The same
network from random weights trains beside it. ``benchmarks/bench_pretrain.py
sequence`` measures this over several seeds.
"""

import keras

import kertransfer as kt
from kertransfer.callbacks import StagedUnfreezing
from kertransfer.data import waveforms

xs, ys, source_classes = waveforms("source", 150, seed=0)
xt, yt, target_classes = waveforms("target", 5, seed=1)
x_test, y_test, _ = waveforms("target", 100, seed=2)
print(f"source {xs.shape} {source_classes}\ntarget {xt.shape} {target_classes}")

keras.utils.set_random_seed(0)
source = kt.build_transfer_model("gru", len(source_classes), input_shape=xs.shape[1:],
                                 weights=None, freeze="none")
source.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
               metrics=["accuracy"])
source.fit(xs, ys, epochs=12, batch_size=32, verbose=0)
source.save("runs/example_waveforms_source.keras")
print(f"source accuracy {source.evaluate(xs, ys, verbose=0)[1]:.3f}")

for name, weights in (("transfer", "runs/example_waveforms_source.keras"), ("scratch", None)):
    keras.utils.set_random_seed(0)
    model = kt.build_transfer_model("gru", len(target_classes), input_shape=xs.shape[1:],
                                    weights=weights, freeze="all" if weights else "none")
    if weights:
        kt.trainable_summary(model)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    stages = [StagedUnfreezing([(0, "head"), (10, 1)], verbose=1)] if weights else []
    model.fit(xt, yt, epochs=30, batch_size=8, verbose=0, callbacks=stages)
    print(f"{name:<9} target test accuracy {model.evaluate(x_test, y_test, verbose=0)[1]:.3f}")
