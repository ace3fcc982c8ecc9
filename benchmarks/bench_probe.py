"""The linear probe on features wider than their count: kertransfer against a direct fit.

The head `kertransfer.fine_tune` starts from is a linear probe
(`kertransfer.training.fit_linear_probe`): L2-regularised logistic regression
with ``C`` chosen by 5-fold cross-validation over 5 values (25 fits, then the
final one). With few labels the features are wider than their count (10
labels per class: 100 examples of 1,024 MobileNet features), and the probe
fits in the span of the training rows, on 100 columns instead of 1,024.

Both arms, in one run, on the same real features (ImageNet MobileNet v1 on
the embedded Fashion-MNIST subset at 96x96, ``--labels`` per class):

- kertransfer: ``fit_linear_probe(features, labels)``;
- the baseline: the same search written directly with scikit-learn
  (``cross_val_score`` of ``LogisticRegression(C, max_iter=3000)`` over the
  same grid and folds, then the final fit on all examples), what the probe
  did before it worked in the row space.

Printed per arm: seconds (median of ``--repeats``), the ``C`` chosen and the
held-out accuracy on 1,000 test images; the ratio is baseline / kertransfer.
Needs the MobileNet ImageNet weights (``kertransfer weights install mobilenet``).

Usage::

    python benchmarks/bench_probe.py [--labels 10] [--repeats 3] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from _common import append_row, machine  # noqa: E402

import kertransfer as kt  # noqa: E402


def direct_probe(f, y, grid, folds, seed):
    """The probe as scikit-learn fits it on the features themselves."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = [float(np.mean(cross_val_score(LogisticRegression(C=c, max_iter=3000), f, y,
                                            cv=splitter))) for c in grid]
    best = grid[int(np.argmax(scores))]
    model = LogisticRegression(C=best, max_iter=3000).fit(f, y)
    return best, model.coef_.T, model.intercept_


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=10, help="labelled images per class")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="do not append the row")
    args = parser.parse_args(argv)

    data = kt.data.load("fashion_mnist_subset", image_size=(96, 96), batch_size=64,
                        test_split=0.2, samples_per_class=args.labels, seed=args.seed,
                        verbose=0)
    model = kt.build_transfer_model("mobilenet", data.num_classes, input_shape=(96, 96, 3))
    x, y = data.as_numpy("train")
    xt, yt = data.as_numpy("test")
    f = np.asarray(kt.models.compute_features(model, x, verbose=0), dtype="float64")
    ft = np.asarray(kt.models.compute_features(model, xt, verbose=0), dtype="float64")
    grid = kt.training.probe.C_GRID
    print(f"{len(f)} training examples of {f.shape[1]} features, {len(ft)} test images; "
          f"grid {grid}, 5 folds")

    times = {"kertransfer": [], "direct": []}
    results = {}
    for _ in range(args.repeats):
        start = time.perf_counter()
        fit = kt.training.fit_linear_probe(f, y, data.num_classes, seed=args.seed)
        times["kertransfer"].append(time.perf_counter() - start)
        results["kertransfer"] = (fit.C, fit.kernel, fit.bias)
        start = time.perf_counter()
        results["direct"] = direct_probe(f, y, grid, 5, args.seed)
        times["direct"].append(time.perf_counter() - start)
    medians = {arm: statistics.median(t) for arm, t in times.items()}
    accuracy = {}
    for arm, (c, kernel, bias) in results.items():
        accuracy[arm] = float(np.mean(np.argmax(ft @ kernel + bias, axis=1) == yt))
        print(f"{arm:12s} {medians[arm]:7.3f} s (runs: "
              f"{', '.join(f'{t:.2f}' for t in times[arm])})  C={c:g}  "
              f"test accuracy {accuracy[arm]:.3f}")
    ratio = medians["direct"] / medians["kertransfer"]
    print(f"ratio (direct / kertransfer): {ratio:.1f}x")
    if not args.no_record:
        append_row("linear probe, features wider than their count",
                   f"{machine()}; ImageNet MobileNet v1 features (1,024) of {len(f)} "
                   f"Fashion-MNIST images ({args.labels}/class, 96x96), C from 5 values by "
                   f"5-fold CV; median of {args.repeats}",
                   f"fit_linear_probe {medians['kertransfer']:.2f} s",
                   f"scikit-learn on the features {medians['direct']:.2f} s", ratio,
                   f"test accuracy {accuracy['kertransfer']:.3f} vs "
                   f"{accuracy['direct']:.3f} (C {results['kertransfer'][0]:g} vs "
                   f"{results['direct'][0]:g}): the same problem, to the solver's tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
