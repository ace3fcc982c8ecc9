"""Linear probes on real ImageNet features: Fashion-MNIST, 30 labels per class, several seeds.

For each seed, 30 labelled Fashion-MNIST images per class (96×96, gray shown as
RGB) train a logistic regression on:

- the frozen ImageNet features of MobileNet v1 and EfficientNet-Lite0/1/2
  (pooled backbone output, as `kertransfer.methods.fewshot.LogisticClassifier` reads
  it: L2-normalised);
- the same MobileNet v1 with random weights (the architecture alone), as
  built and after its BatchNorm statistics were recomputed on the training
  images (as built, untrained statistics shrink the activations to nothing);
- the raw pixels (the floor), at Fashion-MNIST's own 28×28 gray (784 values).

Every arm's inverse regularisation C is chosen by 5-fold cross-validation on
its 300 training examples alone (grid 0.01 … 100); the 1,000 test images
(from Fashion-MNIST's official test split) are only scored. The ImageNet
weights come from ``kertransfer weights install`` (installed here when
missing), the data from Debian's ``dataset-fashion-mnist`` when installed,
else the embedded subset. Per-seed results are kept in ``--results``, so an
interrupted run continues.

Usage::

    python benchmarks/bench_imagenet_probe.py [--seeds 0 1 2 3 4] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import report, require_full_fashion_mnist, run_seeds  # noqa: E402

import kertransfer as kt  # noqa: E402

SIZE = (96, 96)
IMAGENET = ("mobilenet", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def _probe(f_train, y_train, f_test, y_test, seed: int) -> float:
    """Test accuracy of logistic regression with C chosen by 5-fold CV on the train set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    search = GridSearchCV(LogisticRegression(max_iter=3000), {"C": list(GRID)},
                          cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    search.fit(f_train, y_train)
    return float(search.score(f_test, y_test))


def _features(model, x, normalize: bool = True) -> np.ndarray:
    from kertransfer.methods.fewshot import extract_features

    f = extract_features(model, x, batch_size=128)
    if not normalize:
        return f
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def _pixels(x) -> np.ndarray:
    """The images as Fashion-MNIST's own 28x28 gray pixels in [0, 1] (784 values)."""
    small = keras.ops.image.resize(x[..., :1], (28, 28), antialias=True)
    return keras.ops.convert_to_numpy(small).reshape(len(x), -1) / 255.0


def _data(seed: int, labels_per_class: int, test_images: int):
    full = kt.data.load("fashion_mnist", image_size=SIZE, batch_size=64, verbose=0,
                        validation_split=0.0, test_split=test_images / 70_000,
                        samples_per_class=labels_per_class, seed=seed)
    return full.as_numpy("train"), full.as_numpy("test")


def run(seed: int, tmp, args) -> dict:
    (x, y), (xt, yt) = _data(seed, args.labels_per_class, args.test_images)
    out = {}
    for name in IMAGENET:
        model = kt.build_transfer_model(name, 10, input_shape=(*SIZE, 3))
        out[f"{name} (ImageNet)"] = _probe(_features(model, x), y, _features(model, xt), yt,
                                           seed)
    keras.utils.set_random_seed(seed)  # the random network's draw follows the seed
    rand = kt.build_transfer_model("mobilenet", 10, input_shape=(*SIZE, 3), weights=None)
    out["mobilenet (random weights)"] = _probe(_features(rand, x), y, _features(rand, xt), yt,
                                               seed)
    # Untrained BatchNorm statistics (mean 0, variance 1) shrink the activations to ~1e-20
    # through 27 layers; with statistics of the training images the features carry signal.
    kt.recalibrate_batchnorm(rand, x, batch_size=64)
    out["mobilenet (random, BN recalibrated)"] = _probe(_features(rand, x), y,
                                                        _features(rand, xt), yt, seed)
    out["raw pixels"] = _probe(_pixels(x), y, _pixels(xt), yt, seed)
    return out


def _verdict(stats):
    best = max((n for n in stats if n.endswith("(ImageNet)")), key=lambda n: stats[n][0])
    margin = 100 * (stats[best][0] - stats["raw pixels"][0])
    line = (f"best ImageNet features: {best}, {margin:+.1f} points over raw pixels; "
            f"random weights {stats['mobilenet (random weights)'][0]:.3f}")
    return line, best, "raw pixels", stats[best][0] / stats["raw pixels"][0]


def main(argv=None) -> int:
    require_full_fashion_mnist()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--labels-per-class", type=int, default=30)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--results", default=None)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    for name in IMAGENET:
        kt.models.install_weights(name, verbose=0)
    key = {"labels_per_class": args.labels_per_class, "test_images": args.test_images,
           "size": SIZE[0]}
    start = time.perf_counter()
    results = run_seeds("imagenet_probe", lambda seed, tmp: run(seed, tmp, args), args.seeds,
                        key, args.results)
    report("linear probe on ImageNet features (Fashion-MNIST test accuracy)",
           f"Fashion-MNIST {args.labels_per_class}/class at {SIZE[0]}px, logistic regression "
           "with C by 5-fold CV on the training examples",
           key, results, args.seeds, _verdict, start, record=not args.no_record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
