"""Choose a backbone before fine-tuning, then see where the model looks.

    python examples/explain.py [--figure docs/images/gradcam.png]

1. Rank four candidate feature extractors for digits_m (20 labels per class)
   with LogME, LEEP and H-score: raw pixels, a small CNN from random weights,
   the same CNN trained on the clean digits (whose head gives LEEP), and
   mobilenet_v3_small from random weights. One feature pass each, no
   fine-tuning.
2. Train the small CNN on generated images whose class is a shape in a random
   quadrant, and check where Grad-CAM's heatmap peaks: in the shape's quadrant
   (the pointing game). Overlays go to runs/explain/cams.
"""

import argparse
import time

import keras
import numpy as np

import kertransfer as kt
from kertransfer.data import quadrant_shapes
from kertransfer.insight.gradcam import grad_cam
from kertransfer.training import train

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--figure", default=None, help="also save a grid of overlays here")
args = parser.parse_args()


def small_cnn(include_top=False, weights=None, input_shape=(32, 32, 3)):
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"stage{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"stage{i}_bn")(x)
        x = keras.layers.ReLU(name=f"stage{i}_relu")(x)
        if i < 2:
            x = keras.layers.MaxPooling2D(name=f"stage{i}_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


kt.register_backbone("small_cnn", small_cnn, blocks=[(f"stage{i}", rf"^stage{i}_")
                                                     for i in range(3)],
                     preprocessing="tf", default_size=32, min_size=8, has_imagenet=False,
                     overwrite=True)
keras.utils.set_random_seed(0)

# 1. Ranking. The source: clean digits; the target: 20 labelled digits_m per class.
source = kt.data.load("digits", image_size=(32, 32), validation_split=0.0, verbose=0)
trained = kt.build_transfer_model("small_cnn", 10, input_shape=(32, 32, 3), weights=None,
                                  freeze="none")
start = time.perf_counter()
train(trained, source, epochs=5, verbose=0, out="runs/explain/digits")
print(f"small_cnn trained on digits in {time.perf_counter() - start:.0f}s")
target = kt.data.load("digits_m", image_size=(32, 32), validation_split=0.0,
                      samples_per_class=20, verbose=0)
ranking = kt.rank_backbones({
    "raw pixels": "pixels",
    "small_cnn, random": ("small_cnn", None),
    "small_cnn, trained on digits": "runs/explain/digits/model.keras",
    "mobilenet_v3_small, random": ("mobilenet_v3_small", None),
}, target)

# 2. Grad-CAM on shapes in random quadrants.
x, y, _, names = quadrant_shapes(100, size=32, seed=0)
x_test, y_test, quadrant, _ = quadrant_shapes(30, size=32, seed=1)
model = kt.build_transfer_model("small_cnn", 3, input_shape=(32, 32, 3), weights=None,
                                freeze="none", dropout=0.0)
model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
              metrics=["accuracy"])
model.fit(x, y, epochs=10, batch_size=32, verbose=0)
accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
cams = grad_cam(model, x_test, out="runs/explain/cams", class_names=names)
half = x_test.shape[1] // 2
peaks = [np.unravel_index(np.argmax(h), h.shape) for h in cams.heatmaps]
hits = np.mean([(i // half) * 2 + (j // half) == q for (i, j), q in zip(peaks, quadrant)])
print(f"\nshapes: test accuracy {accuracy:.3f}; Grad-CAM peak in the shape's quadrant for "
      f"{hits:.0%} of {len(x_test)} images (layer {cams.layer!r}); overlays in "
      f"runs/explain/cams")

if args.figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 6, figsize=(12, 2.4))
    for ax, i in zip(axes, range(6)):
        ax.imshow(np.clip(x_test[i] / 255.0, 0, 1))
        ax.imshow(cams.heatmaps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"{names[cams.class_index[i]]} ({cams.probability[i]:.2f})", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.figure, dpi=80)
    print(f"Saved {args.figure}")
