"""Few-shot and meta-learning on real ImageNet weights: Fashion-MNIST's classes 5-9.

5-way 1-shot and 5-shot episodes (15 queries per class, ``--episodes`` per
arm, 600 by default) on ``--novel-per-class`` images per class of classes
5-9 (sandal, shirt, sneaker, bag, ankle boot) from Fashion-MNIST's official
test split, at 96x96 (gray shown as RGB). Features, each scored with the
prototype and the logistic classifier of `kertransfer.methods.fewshot`:

- raw pixels at their own 28x28 (784 values; the 96x96 RGB copy holds no
  more, and its 27,648 values make logistic regression's 1,200 fits slow):
  the baseline;
- ImageNet MobileNet v1, fixed (its pooled 1,024 features);
- the same network meta-trained from its ImageNet weights with
  `kertransfer.methods.fewshot.meta_train` (prototypical episodes, 5-way
  ``--train-shots``-shot with ``--train-queries`` queries, ``--meta-episodes``
  episodes at ``--rate``, the blocks above ``--freeze`` trained, BatchNorm
  kept in inference mode) on ``--base-per-class``
  training images per class of the base classes 0-4 (T-shirt, trouser,
  pullover, dress, coat). The novel classes are never seen in training.

Goals (issue 19): ImageNet features >= raw pixels + 5 points at 1 shot;
meta-trained >= fixed ImageNet features + 3 points.

Settings (rate, episodes) are chosen on the development seeds 100-102,
scoring the novel classes' *training*-split images; the reported seeds score
their test-split images. Results per seed are kept in ``--results`` so an
interrupted run continues.

Usage::

    python benchmarks/bench_fewshot.py fewshot [--seeds 0 1 2 3 4]
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
from _common import experiments_main  # noqa: E402

import kertransfer as kt  # noqa: E402
from kertransfer.methods.fewshot import evaluate_episodes, extract_features, meta_train  # noqa: E402

SIZE = 96
SHAPE = (SIZE, SIZE, 3)
BASE, NOVEL = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
DEV_SEEDS = range(100, 200)


def _images(x):
    """uint8 [N, 28, 28] -> float32 [N, 96, 96, 3] (0-255)."""
    import tensorflow as tf

    out = tf.image.resize(np.asarray(x, "float32")[..., None], (SIZE, SIZE))
    return np.repeat(out.numpy(), 3, axis=-1)


def _split(images, labels, mask, classes, per_class, rng):
    idx = np.concatenate([rng.choice(np.flatnonzero(mask & (labels == c)), per_class,
                                     replace=False) for c in classes])
    return images[idx], labels[idx]


def _data(seed, args):
    from kertransfer.data.fashion_mnist import find_folder, read_folder

    images, labels, test = read_folder(find_folder()[2])
    rng = np.random.default_rng(seed)
    dev = seed in DEV_SEEDS
    base = _split(images, labels, ~test, BASE, args.base_per_class, rng)
    # Development seeds score the novel classes' training images; reported seeds their test ones.
    novel = _split(images, labels, ~test if dev else test, NOVEL, args.novel_per_class, rng)
    return (_images(base[0]), base[1]), (_images(novel[0]), novel[1]), novel[0]


def _score(features, novel_y, seed, args, label, out):
    """Episode accuracies of features computed once (fed as 1x1 "images" to an identity)."""
    as_images = np.asarray(features, "float32").reshape(len(features), 1, 1, -1)
    for shots in (1, 5):
        for classifier in ("prototype", "logistic"):
            result = evaluate_episodes(lambda f: f, as_images, novel_y, ways=5, shots=shots,
                                       queries=15, episodes=args.episodes,
                                       classifier=classifier, seed=seed)
            out[f"{label}, {shots}-shot, {classifier}"] = result.mean
            out[f"{label}, {shots}-shot, {classifier} (ci95)"] = result.ci95


def run_fewshot(seed, tmp, args):
    (base_x, base_y), (novel_x, novel_y), native = _data(seed, args)
    out = {}
    _score(native.reshape(len(native), -1) / 255.0, novel_y, seed, args, "raw pixels", out)
    keras.utils.set_random_seed(seed)
    freeze = args.freeze if args.freeze == "none" else float(args.freeze)
    model = kt.build_transfer_model("mobilenet", 5, input_shape=SHAPE, weights="imagenet",
                                    freeze=freeze, bn="frozen", verbose=False)
    t0 = time.perf_counter()
    _score(extract_features(model, novel_x), novel_y, seed, args, "ImageNet, fixed", out)
    out["feature seconds"] = time.perf_counter() - t0
    result = meta_train(model, (base_x, base_y), ways=5, shots=args.train_shots,
                        queries=args.train_queries,
                        episodes=args.meta_episodes, episodes_per_epoch=args.meta_episodes,
                        learning_rate=args.rate, seed=seed, verbose=args.verbose)
    out["meta-training seconds"] = result.seconds
    out["meta-training final episode loss"] = result.history["loss"][-1]
    _score(extract_features(model, novel_x), novel_y, seed, args, "ImageNet, meta-trained", out)
    return out


EXPERIMENTS = {"fewshot": run_fewshot}


def verdict(experiment, stats):
    pix = stats["raw pixels, 1-shot, prototype"][0]
    fixed = stats["ImageNet, fixed, 1-shot, prototype"][0]
    meta = stats["ImageNet, meta-trained, 1-shot, prototype"][0]
    fixed5 = stats["ImageNet, fixed, 5-shot, prototype"][0]
    meta5 = stats["ImageNet, meta-trained, 5-shot, prototype"][0]
    gain, meta_gain = fixed - pix, meta - fixed
    return (f"1-shot prototype: ImageNet features {fixed:.3f} vs raw pixels {pix:.3f} "
            f"({100 * gain:+.1f} points; goal +5: {'met' if gain >= 0.05 else 'not met'}); "
            f"meta-trained {meta:.3f} ({100 * meta_gain:+.1f} over fixed ImageNet; goal +3: "
            f"{'met' if meta_gain >= 0.03 else 'not met'}); 5-shot prototype {fixed5:.3f} -> "
            f"{meta5:.3f}",
            "ImageNet, meta-trained, 1-shot, prototype", "ImageNet, fixed, 1-shot, prototype",
            meta / fixed)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", nargs="?", default="fewshot", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--episodes", type=int, default=600, help="test episodes per arm")
    parser.add_argument("--novel-per-class", type=int, default=200)
    parser.add_argument("--base-per-class", type=int, default=500)
    parser.add_argument("--meta-episodes", type=int, default=300)
    parser.add_argument("--train-shots", type=int, default=5)
    parser.add_argument("--train-queries", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1e-4)
    parser.add_argument("--freeze", default="none",
                        help="blocks kept frozen in meta-training: 'none' or a fraction")
    parser.add_argument("--verbose", type=int, default=2)
    return parser


def main(argv=None) -> int:
    return experiments_main(
        make_parser, argv, EXPERIMENTS, "few-shot",
        "Fashion-MNIST classes 5-9 (test split) at 96px, 5-way, 15 queries; ImageNet MobileNet "
        "v1 fixed and meta-trained on classes 0-4 (train split) against raw pixels",
        verdict, measure="episode accuracy",
        skip=lambda n: "(ci95)" in n or "seconds" in n or "loss" in n)


if __name__ == "__main__":
    sys.exit(main())
