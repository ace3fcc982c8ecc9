"""Efficacy of the fine-tuning recipes on digits -> digits_m, several seeds.

For each seed, a ``mobilenet_v3_small`` is pretrained from random weights on
clean ``digits`` (the demo's source model), then every recipe trains on the
same ``labels_per_class`` labelled ``digits_m`` examples per class for the same
epoch budget and is scored on the held-out test split:

- ``scratch``: the same network from random weights, all layers training.
- ``linear probe (cached)``: backbone frozen, head trained on cached features.
- ``full fine-tune``: everything trainable from the first epoch, one rate.
- ``fine_tune two-phase``: `kertransfer.fine_tune`, head first on cached
  features, then the whole network (LP-FT).
- ``gradual + discriminative``: `GradualUnfreezing` with per-block rates
  from `kertransfer.optimizers.discriminative`.

No recipe sees the validation or test split while training (no early
stopping, no model selection): every arm gets a fixed budget, so the
comparison is between recipes, not between amounts of label leakage.
BatchNorm statistics are recomputed after training wherever BatchNorm trained.

Printed: mean +- sd of test accuracy per recipe, and the best kertransfer
recipe's margin over scratch (goal: at least 10 points). Results per seed are
kept in ``--results`` so an interrupted run continues where it stopped.

Usage::

    python benchmarks/bench_finetune_efficacy.py [--seeds 0 1 2 3 4] [--epochs 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
from _common import append_row, machine  # noqa: E402

import kertransfer as kt  # noqa: E402
from kertransfer.cli.demo import IMAGE_SIZE, load_target, pretrain_source  # noqa: E402
from kertransfer.training import train, train_head_on_features  # noqa: E402

BACKBONE = "mobilenet_v3_small"
SHAPE = (*IMAGE_SIZE, 3)


def _build(weights):
    return kt.build_transfer_model(BACKBONE, 10, input_shape=SHAPE, weights=weights,
                                   freeze="none", bn="trainable", dropout=0.2)


def _test_accuracy(model, target) -> float:
    return float(model.evaluate(target.test, verbose=0, return_dict=True)["accuracy"])


def scratch(weights, target, epochs, lr):
    model = _build(None)
    train(model, target, epochs=epochs, learning_rate=lr, verbose=0, validate_each_epoch=False)
    return _test_accuracy(model, target)


def linear_probe(weights, target, epochs, lr):
    model = _build(weights)
    kt.freeze(model, "all")
    # Cheap on cached features: more epochs than the others, for convergence.
    train_head_on_features(model, target, epochs=epochs * 5, learning_rate=lr,
                           batch_size=target.batch_size, verbose=0)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return _test_accuracy(model, target)


def full_fine_tune(weights, target, epochs, lr):
    model = _build(weights)
    train(model, target, epochs=epochs, learning_rate=lr, verbose=0, validate_each_epoch=False)
    return _test_accuracy(model, target)


def two_phase(weights, target, epochs, lr, freeze_epochs=5, lr_mult=0.3):
    model = _build(weights)
    kt.fine_tune(model, target, epochs=epochs - freeze_epochs, freeze_epochs=freeze_epochs,
                 head_fit="epochs", learning_rate=lr, learning_rate_multiplier=lr_mult,
                 patience=None, verbose=0)
    return _test_accuracy(model, target)


def gradual_discriminative(weights, target, epochs, lr, decay=1.3, every=2,
                           blocks_per_step=4):
    model = _build(weights)
    kt.freeze(model, "all")
    model.compile(optimizer=kt.optimizers.discriminative(keras.optimizers.Adam(lr), decay=decay),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train(model, target, epochs=epochs, verbose=0, compile=False, validate_each_epoch=False,
          callbacks=[kt.callbacks.GradualUnfreezing(every=every,
                                                    blocks_per_step=blocks_per_step,
                                                    verbose=0)])
    return _test_accuracy(model, target)


RECIPES = {
    "scratch": scratch,
    "linear probe (cached)": linear_probe,
    "full fine-tune": full_fine_tune,
    "fine_tune two-phase": two_phase,
    "gradual + discriminative": gradual_discriminative,
}


def summarize(results: dict, seeds) -> tuple[str, dict]:
    stats = {}
    lines = [f"{'recipe':<28} {'mean':>6} {'sd':>6}   per seed", "-" * 64]
    for name in RECIPES:
        vals = [results[str(s)][name] for s in seeds if name in results.get(str(s), {})]
        if not vals:
            continue
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        stats[name] = (statistics.mean(vals), sd, len(vals))
        lines.append(f"{name:<28} {stats[name][0]:>6.3f} {sd:>6.3f}   "
                     + " ".join(f"{v:.3f}" for v in vals))
    return "\n".join(lines), stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=40, help="target epoch budget per recipe")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--results", default=os.path.join(tempfile.gettempdir(),
                                                          "kertransfer_finetune_efficacy.json"),
                        help="per-seed results file; an interrupted run continues from it")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    results_path = pathlib.Path(args.results)
    key = {"epochs": args.epochs, "lr": args.lr, "labels_per_class": args.labels_per_class,
           "pretrain_epochs": args.pretrain_epochs}
    results = {}
    if results_path.exists():
        saved = json.loads(results_path.read_text())
        if saved.get("key") == key:
            results = saved["results"]
            print(f"Continuing from {results_path}")
    print(f"{machine()}; {BACKBONE} at {IMAGE_SIZE[0]}px, {args.labels_per_class} labels per "
          f"class, {args.epochs} target epochs, seeds {args.seeds}", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kt-efficacy-") as tmp:
        for seed in args.seeds:
            done = results.setdefault(str(seed), {})
            todo = [r for r in args.recipes if r not in done]
            if not todo:
                continue
            _, weights, src_acc = pretrain_source(seed, pathlib.Path(tmp), backbone=BACKBONE,
                                                  epochs=args.pretrain_epochs)
            target = load_target(seed, args.labels_per_class)
            target = dataclasses.replace(target, val=None)  # nothing trains on it
            print(f"[seed {seed}] source model val accuracy {src_acc:.3f}", flush=True)
            for name in todo:
                t0 = time.perf_counter()
                keras.utils.set_random_seed(seed)
                done[name] = RECIPES[name](weights, target, args.epochs, args.lr)
                keras.backend.clear_session()
                print(f"[seed {seed}] {name:<28} test accuracy {done[name]:.3f} "
                      f"({time.perf_counter() - t0:.0f}s)", flush=True)
                results_path.write_text(json.dumps({"key": key, "results": results}, indent=1))
    table, stats = summarize(results, args.seeds)
    print(f"\nHeld-out digits_m accuracy, {len(args.seeds)} seed(s) "
          f"({time.perf_counter() - start:.0f}s this run)\n{table}")
    if "scratch" not in stats or len(stats) < 2:
        return 0
    best = max((n for n in stats if n != "scratch"), key=lambda n: stats[n][0])
    margin = 100 * (stats[best][0] - stats["scratch"][0])
    ratio = stats[best][0] / stats["scratch"][0]
    print(f"Best kertransfer recipe: {best}, {margin:+.1f} points over scratch "
          f"(goal: +10), ratio {ratio:.2f}")
    if not args.no_record:
        cells = "; ".join(f"{n} {m:.3f} ± {sd:.3f}" for n, (m, sd, _) in stats.items())
        append_row(
            "fine-tuning efficacy (test accuracy)",
            f"{machine()}; {BACKBONE} {IMAGE_SIZE[0]}px pretrained on digits, digits_m "
            f"{args.labels_per_class}/class, {args.epochs} epochs, seeds {args.seeds}",
            f"{best} {stats[best][0]:.3f} ± {stats[best][1]:.3f}",
            f"scratch {stats['scratch'][0]:.3f} ± {stats['scratch'][1]:.3f}",
            ratio, f"{margin:+.1f} points; all: {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
