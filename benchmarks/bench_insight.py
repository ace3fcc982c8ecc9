"""Insight benchmarks: does Grad-CAM point at the evidence? Several seeds.

``gradcam`` - the pointing game on `kertransfer.data.quadrant_shapes` (the
    class is a square, cross or frame placed in a random quadrant of a 32x32
    image): a small CNN (three conv stages, registered as a backbone) trains
    on 300 images for 10 epochs, then `kertransfer.explain.grad_cam` explains
    its prediction on 90 new images. A hit is a heatmap whose peak lies in
    the quadrant that holds the shape. Baselines: random heatmaps (chance is
    1/4), and the sanity check of Adebayo et al. (2018): the same network
    with freshly initialised weights, whose maps should not resemble the
    trained network's (Spearman rank correlation of the coarse maps, per
    image, averaged). Goal: hits >= 0.80, correlation < 0.3.

Results per seed are kept in ``--results`` so an interrupted run continues.

Usage::

    python benchmarks/bench_insight.py gradcam [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import experiments_main  # noqa: E402

import kertransfer as kt  # noqa: E402
from kertransfer.data import quadrant_shapes  # noqa: E402
from kertransfer.explain import grad_cam  # noqa: E402


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


kt.register_backbone("bench_small_cnn", small_cnn,
                     blocks=[(f"stage{i}", rf"^stage{i}_") for i in range(3)],
                     preprocessing="tf", default_size=32, min_size=8, has_imagenet=False,
                     overwrite=True)


def _quadrants(maps):
    half = maps.shape[1] // 2
    peaks = [np.unravel_index(np.argmax(m), m.shape) for m in maps]
    return np.array([(i // half) * 2 + (j // half) for i, j in peaks])


def _model(seed):
    keras.utils.set_random_seed(seed)
    return kt.build_transfer_model("bench_small_cnn", 3, input_shape=(32, 32, 3), weights=None,
                                   freeze="none", dropout=0.0)


def run_gradcam(seed, tmp, args):
    from scipy.stats import spearmanr

    x, y, _, _ = quadrant_shapes(args.train_per_class, size=32, seed=seed)
    xt, yt, quadrant, _ = quadrant_shapes(args.test_per_class, size=32, seed=1000 + seed)
    model = _model(seed)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=0)
    accuracy = float(model.evaluate(xt, yt, verbose=0)[1])
    trained = grad_cam(model, xt)
    randomized = grad_cam(_model(10_000 + seed), xt, class_index=trained.class_index)
    rng = np.random.default_rng(seed)
    noise = rng.uniform(size=trained.heatmaps.shape)
    rhos = []
    for a, b in zip(trained.coarse, randomized.coarse):
        if a.std() > 0 and b.std() > 0:
            rhos.append(spearmanr(a.ravel(), b.ravel()).statistic)
        else:
            rhos.append(0.0)  # a flat map ranks nothing: no resemblance
    keras.backend.clear_session()
    return {"Grad-CAM pointing, trained": float(np.mean(_quadrants(trained.heatmaps) == quadrant)),
            "random heatmaps pointing": float(np.mean(_quadrants(noise) == quadrant)),
            "Grad-CAM pointing, randomized weights":
                float(np.mean(_quadrants(randomized.heatmaps) == quadrant)),
            "rank correlation, trained vs randomized maps": float(np.mean(rhos)),
            "test accuracy (classifier)": accuracy}


EXPERIMENTS = {"gradcam": run_gradcam}


def verdict(experiment, stats):
    hits = stats["Grad-CAM pointing, trained"][0]
    rho = stats["rank correlation, trained vs randomized maps"][0]
    base = stats["random heatmaps pointing"][0]
    met = "met" if hits >= 0.8 and rho < 0.3 else "not met"
    return (f"peak in the shape's quadrant {hits:.3f} (chance {base:.3f}); rank correlation "
            f"with a randomized network's maps {rho:.3f} (goal: >= 0.80 and < 0.3: {met})",
            "Grad-CAM pointing, trained", "random heatmaps pointing", hits / base)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", nargs="?", default="all", choices=[*EXPERIMENTS, "all"],
                        help="one experiment, or all in turn")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10)
    return parser


def main(argv=None) -> int:
    return experiments_main(make_parser, argv, EXPERIMENTS, "insight", "small CNN at 32px",
                            verdict, measure="fraction or correlation")


if __name__ == "__main__":
    sys.exit(main())
