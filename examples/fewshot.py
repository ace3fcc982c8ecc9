"""Few-shot classification of new classes with a backbone trained on other classes.

Offline, on the embedded digits, in about a minute on a laptop CPU::

    python examples/fewshot.py

A backbone learns digits 0-4 (supervised pretraining). Digits 5-9 are then
new classes with one or five labelled images each: prototypes and logistic
regression on its features are scored on 5-way episodes, beside the same
classifiers on raw pixels.
"""

import kertransfer as kt
from kertransfer.methods.fewshot import evaluate_episodes

SIZE = (32, 32)
digits = kt.data.load("digits", image_size=SIZE, validation_split=0.0, seed=0, verbose=0)
x, y = digits.as_numpy("train")
old, new = y < 5, y >= 5

result = kt.pretrain("mobilenet_v3_small", (x[old], y[old]), task="supervised", epochs=8,
                     batch_size=32, out="runs/example_digits04", verbose=0)
backbone = kt.build_transfer_model("mobilenet_v3_small", 5, input_shape=(*SIZE, 3),
                                   weights=result.path)

for shots in (1, 5):
    for name, features in (("pretrained on 0-4", backbone), ("raw pixels", "pixels")):
        for classifier in ("prototype", "logistic"):
            r = evaluate_episodes(features, x[new], y[new], ways=5, shots=shots, queries=15,
                                  episodes=100, classifier=classifier)
            print(f"{name:<18} {r}")
