"""Offline quick start: build, inspect, freeze, train and save a transfer model.

Runs on the embedded data in about a minute on a laptop CPU::

    python examples/offline_quickstart.py
"""

import kertransfer as kt
from kertransfer.training import train

data = kt.data.load("digits_m", image_size=(32, 32), validation_split=0.2, test_split=0.2,
                    seed=0)
print(data.summary())

# Online users keep the default weights="imagenet" and freeze="all" (train the head first).
model = kt.build_transfer_model("mobilenet_v3_small", num_classes=data.num_classes,
                                input_shape=(32, 32, 3), weights=None, freeze="all")
kt.trainable_summary(model)

# Random weights have nothing worth freezing: train every block, BatchNorm included.
# train() recomputes the BatchNorm statistics at the end (small data makes them lag),
# so per-epoch validation is switched off and the final evaluation is the one to read.
kt.freeze(model, "none", bn="trainable")
result = train(model, data, epochs=8, out="runs/offline_quickstart", verbose=2,
               validate_each_epoch=False)
print({k: round(v, 3) for k, v in result.metrics.items()}, "->", result.out)
