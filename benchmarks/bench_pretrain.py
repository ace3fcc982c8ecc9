"""Efficacy of pretraining, few-shot, multi-task heads and sequence transfer, several seeds.

All offline: the embedded digits with ``mobilenet_v3_small`` at 32x32 from
random weights (as in the demo), and generated waveforms with a GRU
encoder. Four experiments:

``ssl`` - self-supervised pretraining on every digits_m image without labels
    (rotation, SimCLR), then 10 labelled images per class: each backbone is
    fine-tuned (every layer, BatchNorm training and recalibrated after), and
    also scored by a linear probe (logistic regression on its frozen
    features). Baselines: the same network from random weights, and
    logistic regression on raw pixels. Goal: a pretrained backbone at least
    10 points above scratch.
``fewshot`` - 5-way 1-shot and 5-shot episodes on digits 5-9 with a backbone
    pretrained on digits 0-4 (supervised) and one pretrained by rotation on
    every digits image without labels, against raw pixels; prototypes and
    logistic regression; mean with the 95% interval of each seed's episodes.
``ssl_fashion`` - the same on real data: rotation and SimCLR on
    ``--unlabelled`` Fashion-MNIST training images without labels (official
    training split), then 10 labelled training images per class; tested on
    1,000 images of the official test split (never seen in pretraining).
    MobileNet v1 at 32x32 (``--ssl-backbone``) for every arm: pretrained by
    rotation or SimCLR, from random weights (scratch), and from ImageNet
    weights at the same size; fine-tuned as in ``ssl`` and by a linear
    probe; raw-pixel logistic regression beside them. Goal: a
    self-supervised backbone at least 10 points above scratch.
``multitask`` - digits_m with 10 labels per class: the digit head alone
    against the digit head trained beside an auxiliary parity head (weight
    0.5) on the same backbone.
``sequence`` - the embedded waveforms (`kertransfer.data.waveforms`): a GRU
    encoder trained on the six source shapes (150 series each), then the
    four target shapes (faster, drifting, noisier) from 5 labelled series per
    class: fine-tuned from the source model against the same network from
    random weights, with a linear probe and logistic regression on the raw
    series beside them; 100 test series per class.

Results per seed are kept in ``--results`` so an interrupted run continues.

Usage::

    python benchmarks/bench_pretrain.py all          # every experiment, 5 seeds each
    python benchmarks/bench_pretrain.py ssl [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
from _common import experiments_main  # noqa: E402

import kertransfer as kt  # noqa: E402
from kertransfer.methods.fewshot import LogisticClassifier, evaluate_episodes  # noqa: E402
from kertransfer.training import train  # noqa: E402

BACKBONE = "mobilenet_v3_small"
SIZE = (32, 32)
SHAPE = (*SIZE, 3)


def _load(name, seed, labels_per_class=None, test_split=0.3):
    return kt.data.load(name, image_size=SIZE, validation_split=0.0, test_split=test_split,
                        samples_per_class=labels_per_class, seed=seed, verbose=0)


def _fine_tune(weights, data, args, seed, num_classes=10):
    keras.utils.set_random_seed(seed)
    model = kt.build_transfer_model(BACKBONE, num_classes, input_shape=SHAPE, weights=weights,
                                    freeze="none", bn="trainable")
    run = train(model, data, epochs=args.target_epochs, learning_rate=1e-3, verbose=0,
                validate_each_epoch=False)
    return run.metrics["test_accuracy"]


def _probe(weights, train_xy, test_xy, num_classes=10):
    model = kt.build_transfer_model(BACKBONE, num_classes, input_shape=SHAPE, weights=weights)
    clf = LogisticClassifier(model).fit(*train_xy)
    return clf.score(*test_xy)


def _pixels(train_xy, test_xy):
    from sklearn.linear_model import LogisticRegression

    (x, y), (xt, yt) = train_xy, test_xy
    clf = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1) / 255.0, y)
    return float(clf.score(xt.reshape(len(xt), -1) / 255.0, yt))


def run_ssl(seed, tmp, args):
    everything, _ = _load("digits_m", seed, test_split=0.0).as_numpy("train")
    target = _load("digits_m", seed, labels_per_class=10)
    train_xy, test_xy = target.as_numpy("train"), target.as_numpy("test")
    out = {"scratch (fine-tuned)": _fine_tune(None, target, args, seed),
           "raw pixels (logistic regression)": _pixels(train_xy, test_xy)}
    for task in ("rotation", "simclr"):
        result = kt.pretrain(BACKBONE, everything, task=task, epochs=args.pretrain_epochs,
                             batch_size=args.batch_size, temperature=args.temperature,
                             out=os.path.join(tmp, f"{task}_{seed}"), seed=seed, verbose=0)
        out[f"{task} (fine-tuned)"] = _fine_tune(str(result.path), target, args, seed)
        out[f"{task} (linear probe)"] = _probe(str(result.path), train_xy, test_xy)
        keras.backend.clear_session()
    return out


def _fashion_arrays(seed, args):
    """``(unlabelled, (x, y) 10 per class, (x, y) test)``: 32x32 RGB, 0-255."""
    import numpy as np
    import tensorflow as tf

    from kertransfer.data.fashion_mnist import find_folder, read_folder

    found = find_folder()
    if found is None:  # only the embedded subset: no unlabelled training split to pretrain on
        raise SystemExit("ssl_fashion needs the full Fashion-MNIST files (60,000 training "
                         "images): install Debian's dataset-fashion-mnist, or place the four "
                         "IDX files in Keras' cache (see docs/data.md).")
    images, labels, test = read_folder(found[2])
    rng = np.random.default_rng(seed)
    train_idx = np.flatnonzero(~test)
    pool = rng.choice(train_idx, args.unlabelled, replace=False)
    labelled = np.concatenate([rng.choice(train_idx[labels[train_idx] == c], 10, replace=False)
                               for c in range(10)])
    held = rng.choice(np.flatnonzero(test), 1000, replace=False)

    def rgb(idx):
        out = tf.image.resize(np.asarray(images[idx], "float32")[..., None], SIZE).numpy()
        return np.repeat(out, 3, axis=-1)

    return rgb(pool), (rgb(labelled), labels[labelled]), (rgb(held), labels[held])


def _fine_tune_arrays(weights, train_xy, test_xy, args, seed):
    import numpy as np

    keras.utils.set_random_seed(seed)
    model = kt.build_transfer_model(args.ssl_backbone, 10, input_shape=SHAPE, weights=weights,
                                    freeze="none", bn="trainable", verbose=False)
    train(model, train_xy, epochs=args.target_epochs, learning_rate=1e-3, verbose=0,
          validate_each_epoch=False)
    pred = np.argmax(model.predict(test_xy[0], verbose=0, batch_size=256), axis=1)
    return float(np.mean(pred == test_xy[1]))


def _probe_arrays(weights, train_xy, test_xy, backbone):
    model = kt.build_transfer_model(backbone, 10, input_shape=SHAPE, weights=weights,
                                    verbose=False)
    return LogisticClassifier(model).fit(*train_xy).score(*test_xy)


def run_ssl_fashion(seed, tmp, args):
    unlabelled, train_xy, test_xy = _fashion_arrays(seed, args)
    out = {"scratch (fine-tuned)": _fine_tune_arrays(None, train_xy, test_xy, args, seed),
           "raw pixels (logistic regression)": _pixels(train_xy, test_xy),
           "ImageNet (fine-tuned)": _fine_tune_arrays("imagenet", train_xy, test_xy, args,
                                                      seed),
           "ImageNet (linear probe)": _probe_arrays("imagenet", train_xy, test_xy,
                                                    args.ssl_backbone)}
    for task in ("rotation", "simclr"):
        result = kt.pretrain(args.ssl_backbone, unlabelled, task=task,
                             epochs=args.pretrain_epochs, batch_size=args.batch_size,
                             temperature=args.temperature,
                             out=os.path.join(tmp, f"fashion_{task}_{seed}"), seed=seed,
                             verbose=0)
        out[f"{task} (fine-tuned)"] = _fine_tune_arrays(str(result.path), train_xy, test_xy,
                                                        args, seed)
        out[f"{task} (linear probe)"] = _probe_arrays(str(result.path), train_xy, test_xy,
                                                      args.ssl_backbone)
        out[f"{task} pretraining seconds"] = result.seconds
        keras.backend.clear_session()
    return out


def run_fewshot(seed, tmp, args):
    x, y = _load("digits", seed, test_split=0.0).as_numpy("train")
    old, new = y < 5, y >= 5
    supervised = kt.pretrain(BACKBONE, (x[old], y[old]), task="supervised",
                             epochs=args.source_epochs, batch_size=32, seed=seed, verbose=0,
                             out=os.path.join(tmp, f"sup_{seed}"))
    rotation = kt.pretrain(BACKBONE, x, task="rotation", epochs=args.pretrain_epochs,
                           batch_size=args.batch_size, seed=seed, verbose=0,
                           out=os.path.join(tmp, f"rot_{seed}"))
    backbones = {"supervised 0-4": supervised.path, "rotation": rotation.path,
                 "raw pixels": None}
    out = {}
    for name, path in backbones.items():
        features = "pixels" if path is None else kt.build_transfer_model(
            BACKBONE, 5, input_shape=SHAPE, weights=str(path))
        for shots in (1, 5):
            for classifier in ("prototype", "logistic"):
                r = evaluate_episodes(features, x[new], y[new], ways=5, shots=shots,
                                      queries=15, episodes=args.episodes,
                                      classifier=classifier, seed=seed)
                out[f"{name}, {shots}-shot, {classifier}"] = r.mean
                out[f"{name}, {shots}-shot, {classifier} (ci95)"] = r.ci95
        keras.backend.clear_session()
    return out


def run_multitask(seed, tmp, args):
    data = _load("digits_m", seed, labels_per_class=10)
    tasks = data.with_tasks({"digit": None, "parity": [k % 2 for k in range(10)]})
    out = {"digit head alone": _fine_tune(None, data, args, seed)}
    keras.utils.set_random_seed(seed)
    model = kt.build_transfer_model(BACKBONE, tasks.tasks, input_shape=SHAPE, weights=None,
                                    freeze="none", bn="trainable")
    run = train(model, tasks, epochs=args.target_epochs, learning_rate=1e-3, verbose=0,
                validate_each_epoch=False, loss_weights={"parity": args.aux_weight})
    out["digit head with parity head"] = run.metrics["test_digit_accuracy"]
    out["parity head (auxiliary)"] = run.metrics["test_parity_accuracy"]
    return out


def run_sequence(seed, tmp, args):
    from kertransfer.data import waveforms

    name = args.sequence_backbone
    xs, ys, _ = waveforms("source", 150, seed=seed)
    xt, yt, _ = waveforms("target", args.sequence_labels, seed=1000 + seed)
    x_test, y_test, _ = waveforms("target", 100, seed=2000 + seed)

    def fitted(num_classes, weights, x, y, epochs, batch_size):
        keras.utils.set_random_seed(seed)
        model = kt.build_transfer_model(name, num_classes, input_shape=xs.shape[1:],
                                        weights=weights, freeze="none")
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
        return model

    source = fitted(6, None, xs, ys, args.source_epochs, 32)
    path = os.path.join(tmp, f"{name}_source_{seed}.keras")
    source.save(path)
    out = {}
    for arm, weights in (("transfer (fine-tuned)", path), ("scratch", None)):
        model = fitted(4, weights, xt, yt, args.target_epochs, 8)
        out[arm] = float(model.evaluate(x_test, y_test, verbose=0)[1])
    probe = LogisticClassifier(kt.build_transfer_model(name, 4, input_shape=xs.shape[1:],
                                                       weights=path)).fit(xt, yt)
    out["transfer (linear probe)"] = probe.score(x_test, y_test)
    out["raw series (logistic regression)"] = _pixels((xt, yt), (x_test, y_test))
    return out


EXPERIMENTS = {"ssl": run_ssl, "ssl_fashion": run_ssl_fashion, "fewshot": run_fewshot,
               "multitask": run_multitask,
               "sequence": run_sequence}


def verdict(experiment, stats):
    """The result's line, and the row's (toolkit, baseline, ratio)."""
    if experiment in ("ssl", "ssl_fashion"):
        base = stats["scratch (fine-tuned)"][0]
        arms = [n for n in stats if n.startswith(("rotation", "simclr")) and "seconds" not in n]
        best = max(arms, key=lambda n: stats[n][0])
        gains = "; ".join(f"{n} {100 * (stats[n][0] - base):+.1f}" for n in arms)
        met = "met" if stats[best][0] - base >= 0.10 else "not met"
        return (f"best {best}: {100 * (stats[best][0] - base):+.1f} points over scratch "
                f"(goal +10: {met}); {gains}"
                + (f"; ImageNet at the same size: fine-tuned "
                   f"{stats['ImageNet (fine-tuned)'][0]:.3f}, linear probe "
                   f"{stats['ImageNet (linear probe)'][0]:.3f}"
                   if "ImageNet (fine-tuned)" in stats else ""),
                best, "scratch (fine-tuned)", stats[best][0] / base)
    if experiment == "fewshot":
        arms = [n for n in stats if not n.endswith("(ci95)")]
        lines = [f"{n} {stats[n][0]:.3f} (±{stats[n + ' (ci95)'][0]:.3f})" for n in arms]
        best = max((n for n in arms if not n.startswith("raw")), key=lambda n: stats[n][0])
        base = best.replace(best.split(",")[0], "raw pixels")
        return ("report, 95% intervals averaged over seeds: " + "; ".join(lines), best, base,
                stats[best][0] / stats[base][0])
    if experiment == "sequence":
        base = stats["scratch"][0]
        best = max((n for n in stats if n.startswith("transfer")), key=lambda n: stats[n][0])
        return (f"best {best}: {100 * (stats[best][0] - base):+.1f} points over scratch",
                best, "scratch", stats[best][0] / base)
    gain = 100 * (stats["digit head with parity head"][0] - stats["digit head alone"][0])
    return (f"auxiliary parity head: {gain:+.1f} points on the digit", "digit head with parity "
            "head", "digit head alone",
            stats["digit head with parity head"][0] / stats["digit head alone"][0])


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", nargs="?", default="all", choices=[*EXPERIMENTS, "all"],
                        help="one experiment, or all in turn")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--pretrain-epochs", type=int, default=15,
                        help="rotation and SimCLR epochs")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="pretraining batch (SimCLR: 2x views, 254 negatives)")
    parser.add_argument("--temperature", type=float, default=0.5, help="SimCLR temperature")
    parser.add_argument("--unlabelled", type=int, default=10000,
                        help="ssl_fashion: unlabelled Fashion-MNIST training images")
    parser.add_argument("--ssl-backbone", default="mobilenet",
                        help="ssl_fashion: the backbone of every arm")
    parser.add_argument("--source-epochs", type=int, default=12,
                        help="fewshot: supervised pretraining on digits 0-4; sequence: source "
                        "training")
    parser.add_argument("--target-epochs", type=int, default=30,
                        help="fine-tuning epochs on the few target labels")
    parser.add_argument("--episodes", type=int, default=300, help="fewshot: episodes per arm")
    parser.add_argument("--aux-weight", type=float, default=0.5,
                        help="multitask: weight of the parity loss")
    parser.add_argument("--sequence-backbone", default="gru", choices=["gru", "lstm",
                                                                       "transformer"])
    parser.add_argument("--sequence-labels", type=int, default=5,
                        help="sequence: labelled target series per class")
    return parser


def main(argv=None) -> int:
    images = f"{BACKBONE} at {SIZE[0]}px"
    setups = {"ssl": images, "fewshot": images,
              "ssl_fashion": "Fashion-MNIST at 32px, unlabelled training images for "
                             "pretraining, 10 labels per class, 1,000 official test images",
              "multitask": images,
              "sequence": "recurrent or transformer encoder on the generated waveforms"}
    return experiments_main(make_parser, argv, EXPERIMENTS, "pretraining", setups, verdict,
                            skip=lambda n: n.endswith("(ci95)") or "seconds" in n)


if __name__ == "__main__":
    sys.exit(main())
