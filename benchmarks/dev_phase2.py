"""Development runs for `fine_tune`'s phase 2 on real ImageNet weights (seeds 100-102).

Settings of the default recipe are chosen here, on seeds that `bench_recipes.py`
never reports (it reports 0-4). Same data and test images as `bench_recipes.py`
(Fashion-MNIST at 96 px, ``--per-class`` labels per class, 1,000 test images).
Arms:

- ``default``: the default recipe these runs started from, ``kt.fine_tune(model,
  data, head_temperature=1)`` (the default temperature is 4 since they chose it);
- ``temp T``: ``kt.fine_tune(model, data, head_temperature=T)`` (T = 2, 4, 8);
- ``probe xS``: the probe head written, its weights then multiplied by S, then
  every layer at 1e-4 for the default's length (``probe x0.25`` is ``temp 4``
  written out by hand);
- ``rate 3e-4``: phase 2 at 3e-4 (``learning_rate_multiplier=0.3``);
- ``one-stage 16``: a random head, every layer at 1e-4, the default's length;
- ``bn trainable``: the default recipe with BatchNorm training.

Per-run accuracies go to ``benchmarks/results/dev_phase2_<per class>_<backbone>.json``
(resumable).

Usage::

    python benchmarks/dev_phase2.py mobilenet --per-class 60 --arms default "temp 4"
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import bench_recipes as br  # noqa: E402
import keras  # noqa: E402
from _common import require_full_fashion_mnist  # noqa: E402

import kertransfer as kt  # noqa: E402
from kertransfer.models.surgery import head_layers  # noqa: E402
from kertransfer.training.probe import probe_head  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"


def _accuracy_after(model, data, seed, **kwargs) -> float:
    kt.fine_tune(model, data, seed=seed, verbose=0, **kwargs)
    return br._test_accuracy(model, data)


def _scaled_probe(scale: float):
    def arm(backbone, data, seed):
        model = br._model(backbone)
        kt.freezing.apply_policy(model, "all", model.bn_mode)
        probe_head(model, data, seed=seed, verbose=0)
        dense = [la for la in head_layers(model) if not isinstance(la, keras.layers.Dropout)][0]
        kernel, bias = dense.get_weights()
        dense.set_weights([kernel * scale, bias * scale])
        return _accuracy_after(model, data, seed, freeze_epochs=0, learning_rate=1e-4,
                               learning_rate_multiplier=1.0, patience=None)
    return arm


ARMS = {
    "default": lambda b, d, s: _accuracy_after(br._model(b), d, s, head_temperature=1.0),
    **{f"temp {t:g}": (lambda b, d, s, t=t: _accuracy_after(br._model(b), d, s,
                                                              head_temperature=t))
       for t in (2.0, 4.0, 8.0)},
    "probe x0.5": _scaled_probe(0.5),
    "probe x0.25": _scaled_probe(0.25),
    "rate 3e-4": lambda b, d, s: _accuracy_after(br._model(b), d, s,
                                                 learning_rate_multiplier=0.3),
    "one-stage 16": lambda b, d, s: _accuracy_after(
        br._model(b), d, s, freeze_epochs=0, learning_rate=1e-4, learning_rate_multiplier=1.0,
        patience=None),
    "bn trainable": lambda b, d, s: _accuracy_after(br._model(b, bn="trainable"), d, s),
}


def main(argv=None) -> int:
    require_full_fashion_mnist()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("backbone", choices=["mobilenet", "efficientnet_lite0"])
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--arms", nargs="+", default=["default", "temp 4"], choices=list(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    args = parser.parse_args(argv)
    out = RESULTS / f"dev_phase2_{args.per_class}_{args.backbone}.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    kt.models.install_weights(args.backbone, verbose=0)
    for seed in args.seeds:
        data = br._data(seed, args.per_class)
        for arm in args.arms:
            key = f"{arm}|{seed}"
            if key in results:
                continue
            start = time.perf_counter()
            keras.utils.set_random_seed(seed)
            results[key] = ARMS[arm](args.backbone, data, seed)
            keras.backend.clear_session()
            out.write_text(json.dumps(results, indent=1) + "\n")
            print(f"{args.backbone} {args.per_class}/class seed {seed} {arm}: "
                  f"{results[key]:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
