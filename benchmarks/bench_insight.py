"""Insight benchmarks: does Grad-CAM point at the evidence? Several seeds.

``gradcam`` - the pointing game on `kertransfer.data.quadrant_shapes` (the
    class is a square, cross or frame placed in a random quadrant of a 32x32
    image): a small CNN (three conv stages, registered as a backbone) trains
    on 300 images for 10 epochs, then `kertransfer.insight.gradcam.grad_cam` explains
    its prediction on 90 new images. A hit is a heatmap whose peak lies in
    the quadrant that holds the shape. Baselines: random heatmaps (chance is
    1/4), and the sanity check of Adebayo et al. (2018): the same network
    with freshly initialised weights, whose maps should not resemble the
    trained network's (Spearman rank correlation of the coarse maps, per
    image, averaged). Goal: hits >= 0.80, correlation < 0.3.

``ranking`` - does LogME rank backbones as fine-tuning does? A zoo of 11
    feature extractors for digits_m at 32x32 with 20 labels per class: the
    small CNN and ``mobilenet_v3_small`` from random weights and after a few
    or more epochs on the clean digits, ``mobilenet_v3_small`` pretrained by
    rotation and the small CNN by SimCLR (both on the clean digits, without
    labels), raw pixels and PCA of the pixels (32 components). Each network
    is a weights file, as a zoo of checkpoints is. The ground truth is each
    candidate's best test accuracy over a small grid after training on the
    200 labels, as in You et al. (2021): every layer fine-tuned for 20 epochs
    at learning rates 1e-2, 3e-3 and 1e-3 for the networks, logistic
    regression with C in 0.1, 1, 10 for pixels and PCA. Reported: Kendall
    tau of LogME and H-score against the ground truth (goal for LogME:
    >= 0.5, mean over seeds), with a baseline scorer beside them (5-fold
    cross-validated logistic regression on the frozen features, from the
    same 200 labels), and the time of ranking every candidate
    (`kertransfer.rank_backbones`, networks built from their files) against
    fine-tuning every one over the grid (goal: 50x).

Results per seed are kept in ``--results`` so an interrupted run continues.

Usage::

    python benchmarks/bench_insight.py all             # every experiment, 5 seeds each
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
from kertransfer.insight.gradcam import grad_cam  # noqa: E402


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


LEARNING_RATES = (1e-2, 3e-3, 1e-3)  # the ground truth's grid for the networks
LOGISTIC_C = (0.1, 1.0, 10.0)  # ... and for logistic regression on pixels and PCA


def _logistic_accuracy(train_x, train_y, test_x, test_y) -> float:
    """The best test accuracy of logistic regression over `LOGISTIC_C`."""
    from sklearn.linear_model import LogisticRegression

    return max(float(LogisticRegression(max_iter=3000, C=c).fit(train_x, train_y)
                     .score(test_x, test_y)) for c in LOGISTIC_C)


def _probe_score(features, labels, seed) -> float:
    """The baseline score: 5-fold cross-validated accuracy of logistic
    regression on the frozen features, from the labelled examples alone."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.preprocessing import StandardScaler

    f = StandardScaler().fit_transform(features)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(LogisticRegression(max_iter=3000), f, labels,
                                         cv=folds)))


def _zoo(seed, tmp, size):
    """``{label: (backbone, weights file)}``: the networks of the zoo, built
    and trained on the clean digits (not timed: a zoo exists before ranking)."""
    from kertransfer.training import train

    source = kt.data.load("digits", image_size=size, validation_split=0.0, seed=seed, verbose=0)
    networks = {}

    def keep(label, backbone, model):
        path = os.path.join(tmp, f"{backbone}_{len(networks)}_{seed}.weights.h5")
        model.backbone.save_weights(path)
        networks[label] = (backbone, path)
        keras.backend.clear_session()

    for backbone, short, epochs in (("bench_small_cnn", "small CNN", (0, 1, 3, 10)),
                                    ("mobilenet_v3_small", "mobilenet", (0, 2, 6))):
        for e in epochs:
            keras.utils.set_random_seed(seed)
            model = kt.build_transfer_model(backbone, 10, input_shape=(*size, 3), weights=None,
                                            freeze="none", bn="trainable")
            if e:
                train(model, source, epochs=e, verbose=0, validate_each_epoch=False)
            keep(f"{short}, digits {e} epochs" if e else f"{short}, random", backbone, model)
    sx, _ = source.as_numpy("train")
    for backbone, short, task, epochs in (("mobilenet_v3_small", "mobilenet", "rotation", 3),
                                          ("bench_small_cnn", "small CNN", "simclr", 10)):
        result = kt.pretrain(backbone, sx, task=task, epochs=epochs, batch_size=128, seed=seed,
                             verbose=0, out=os.path.join(tmp, f"{task}_{seed}"))
        keras.backend.clear_session()
        model = kt.build_transfer_model(backbone, 2, input_shape=(*size, 3),
                                        weights=str(result.path))
        keep(f"{short}, {'SimCLR' if task == 'simclr' else task}", backbone, model)
    return networks


def run_ranking(seed, tmp, args):
    import time

    from scipy.stats import kendalltau
    from sklearn.decomposition import PCA

    from kertransfer.insight.scores import h_score, logme
    from kertransfer.methods.fewshot import extract_features
    from kertransfer.training import train

    size = (32, 32)
    target = kt.data.load("digits_m", image_size=size, validation_split=0.0, test_split=0.3,
                          samples_per_class=args.labels_per_class, seed=seed, verbose=0)
    (x, y), (xt, yt) = target.as_numpy("train"), target.as_numpy("test")
    networks = _zoo(seed, tmp, size)

    # Ranking: one feature pass per candidate, then the scores.
    start = time.perf_counter()
    ranking = kt.rank_backbones({**networks, "raw pixels": "pixels"}, (x, y),
                                metrics=("logme", "hscore"), input_shape=(*size, 3), verbose=0)
    scores = {r["candidate"]: (r["logme"], r["hscore"]) for r in ranking.rows}
    flat, flat_test = x.reshape(len(x), -1) / 255.0, xt.reshape(len(xt), -1) / 255.0
    pca = PCA(32, random_state=seed).fit(np.concatenate([flat, flat_test]))  # unlabelled
    pcs, pcs_test = pca.transform(flat), pca.transform(flat_test)
    scores["PCA of pixels"] = (logme(pcs, y), h_score(pcs, y))
    rank_seconds = time.perf_counter() - start

    # The baseline score, from the same labelled examples (not timed).
    probe = {"raw pixels": _probe_score(flat, y, seed), "PCA of pixels": _probe_score(pcs, y, seed)}
    for name, (backbone, path) in networks.items():
        model = kt.build_transfer_model(backbone, 2, input_shape=(*size, 3), weights=path)
        probe[name] = _probe_score(extract_features(model, x), y, seed)
        keras.backend.clear_session()

    # Ground truth: the best test accuracy over a small grid, as in You et al.
    start = time.perf_counter()
    truth = {}
    for name, (backbone, path) in networks.items():
        accuracies = []
        for lr in LEARNING_RATES:
            keras.utils.set_random_seed(seed)
            model = kt.build_transfer_model(backbone, 10, input_shape=(*size, 3), weights=path,
                                            freeze="none", bn="trainable")
            run = train(model, target, epochs=args.target_epochs, learning_rate=lr, verbose=0,
                        validate_each_epoch=False)
            accuracies.append(run.metrics["test_accuracy"])
            keras.backend.clear_session()
        truth[name] = max(accuracies)
    truth["raw pixels"] = _logistic_accuracy(flat, y, flat_test, yt)
    truth["PCA of pixels"] = _logistic_accuracy(pcs, y, pcs_test, yt)
    tune_seconds = time.perf_counter() - start

    names = sorted(truth)
    out = {f"ground truth: {n}": truth[n] for n in names}
    out.update({f"logme: {n}": scores[n][0] for n in names})

    def tau(values):
        return float(kendalltau([values[n] for n in names], [truth[n] for n in names]).statistic)

    out["Kendall tau, LogME"] = tau({n: scores[n][0] for n in names})
    out["Kendall tau, H-score"] = tau({n: scores[n][1] for n in names})
    out["Kendall tau, linear probe (5-fold)"] = tau(probe)
    out["ranking seconds"] = rank_seconds
    out["fine-tuning seconds"] = tune_seconds
    out["speed-up (fine-tuning / ranking)"] = tune_seconds / rank_seconds
    return out


EXPERIMENTS = {"gradcam": run_gradcam, "ranking": run_ranking}


def verdict(experiment, stats):
    if experiment == "ranking":
        tau = stats["Kendall tau, LogME"][0]
        speed = stats["speed-up (fine-tuning / ranking)"][0]
        tau_met = "met" if tau >= 0.5 else "not met"
        speed_met = "met" if speed >= 50 else "not met"
        return (f"Kendall tau of LogME against fine-tuned accuracy {tau:.3f} (goal >= 0.5: "
                f"{tau_met}; H-score {stats['Kendall tau, H-score'][0]:.3f}, cross-validated "
                f"linear probe {stats['Kendall tau, linear probe (5-fold)'][0]:.3f}); ranking "
                f"{speed:.0f}x faster than fine-tuning every candidate (goal 50x: {speed_met})",
                "Kendall tau, LogME", "Kendall tau, H-score", None)
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
    parser.add_argument("--epochs", type=int, default=10, help="gradcam: training epochs")
    parser.add_argument("--labels-per-class", type=int, default=20,
                        help="ranking: labelled target images per class")
    parser.add_argument("--target-epochs", type=int, default=20,
                        help="ranking: fine-tuning epochs of the ground truth")
    return parser


def main(argv=None) -> int:
    setups = {"gradcam": "small CNN at 32px",
              "ranking": "11 candidates (small CNN, mobilenet_v3_small, pixels, PCA) on digits_m "
                         "at 32px, ground truth best of 3 learning rates"}
    return experiments_main(make_parser, argv, EXPERIMENTS, "insight", setups, verdict,
                            measure="fraction, correlation or seconds",
                            skip=lambda n: n.startswith(("ground truth", "logme:")))


if __name__ == "__main__":
    sys.exit(main())
