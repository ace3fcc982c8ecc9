"""Domain shift and forgetting: adapt a model to a new domain, keep what it knew.

Offline, on the embedded data, in a few minutes on a laptop CPU::

    python examples/domain_shift.py

A source model learns the clean ``digits``. Then:

1. unsupervised adaptation to ``digits_m`` (digits over photographs) without
   its labels: AdaBN, then DANN;
2. fine-tuning on ``digits_m`` with its labels while EWC protects the clean
   digits (one head, both domains), with the term's value in the History;
3. Learning without Forgetting: a new head for ``digits_m`` while the old
   head keeps answering on clean digits.

Epochs are kept small so that it runs quickly; the measured settings and
their figures are in ``benchmarks/bench_domain_shift.py`` and the domain-shift
guide.
"""

import keras
import numpy as np

import kertransfer as kt
from kertransfer import methods
from kertransfer.training import train

SIZE = (32, 32)


def load(name):
    return kt.data.load(name, image_size=SIZE, validation_split=0.0, test_split=0.3, seed=0,
                        verbose=0)


def accuracy(model, x, y, head=None):
    out = model.predict(x, verbose=0, batch_size=256)
    return float(np.mean(np.argmax(out[head] if head else out, -1) == y))


def copy_of(model, bn="trainable"):
    twin = kt.build_transfer_model("mobilenet_v3_small", 10, input_shape=(*SIZE, 3),
                                   weights=None, freeze="none", bn=bn)
    twin.set_weights(model.get_weights())
    return twin


clean, photos = load("digits"), load("digits_m")
xc, yc = clean.as_numpy("test")
xp, yp = photos.as_numpy("test")

keras.utils.set_random_seed(0)
source = kt.build_transfer_model("mobilenet_v3_small", 10, input_shape=(*SIZE, 3),
                                 weights=None, freeze="none", bn="trainable")
train(source, clean, epochs=8, learning_rate=2e-3, verbose=0, validate_each_epoch=False)
print(f"source model: clean {accuracy(source, xc, yc):.3f}, photos {accuracy(source, xp, yp):.3f}")

# 1. Unsupervised adaptation: the target's labels are never read.
model = copy_of(source)
methods.adabn(model, photos)  # BatchNorm statistics of the target images
print(f"AdaBN: photos {accuracy(model, xp, yp):.3f}")
model = copy_of(source)
adapted = methods.adapt(model, source=clean, target=photos, method="dann", epochs=5)
kt.recalibrate_batchnorm(model, photos.train)
print(f"DANN:  photos {accuracy(model, xp, yp):.3f}; loss per epoch "
      f"{[round(v, 3) for v in adapted.history['loss']]}")

# 2. Fine-tune on the labelled target; EWC keeps the weights that matter for clean digits.
#    BatchNorm stays frozen: its statistics are not weights, and no penalty protects them.
for name, terms in (("plain", []), ("EWC", [methods.EWC(1e4, data=clean, samples=200)])):
    model = copy_of(source, bn="frozen")
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    if terms:
        methods.with_regularizers(model, terms)
    result = train(model, photos, epochs=4, verbose=0, compile=False, validate_each_epoch=False)
    logged = result.history.get("ewc")
    print(f"{name:<5} fine-tuning: clean {accuracy(model, xc, yc):.3f}, "
          f"photos {accuracy(model, xp, yp):.3f}"
          + (f"; EWC term per epoch {[round(v, 4) for v in logged]}" if logged else ""))

# 3. A new head for the new task; LwF distils the old head's answers at T=2.
x_train, y_train = photos.as_numpy("train")
two = methods.learn_without_forgetting(copy_of(source, bn="frozen"), (x_train, y_train), 10,
                                       warmup_epochs=2, epochs=4)
print(f"LwF: old head on clean {accuracy(two, xc, yc, 'old'):.3f}, "
      f"new head on photos {accuracy(two, xp, yp, 'new'):.3f}")
