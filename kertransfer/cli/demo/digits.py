"""The digits demo (``kertransfer demo --task digits``): pretrain on digits, transfer to
digits_m, compare with scratch.

Steps (all offline, on the embedded data):

1. **Pretrain** a registry backbone (``mobilenet_v3_small`` by default, a
   ``keras.applications`` family) from random weights on the source task,
   clean ``digits``, and save its backbone.
2. **Transfer** it to the target task, ``digits_m`` (the same digits blended
   over photographs), using only ``labels_per_class`` labelled examples per
   class: build the model with ``weights=<pretrained file>`` and fine-tune it
   in two stages with `kertransfer.fine_tune`: the head alone on cached
   backbone features first, then the whole network, in one ``fit()``.
3. **Scratch**: train the same architecture from random weights on the same
   labelled examples for the same number of epochs.
4. Print held-out target accuracy (the test split, never trained on) for
   each, with a raw-pixel logistic regression as the floor, and save the run.
5. **Ship it**: export the transferred model for TF Serving with
   `kertransfer.export` (checked in a fresh process against the Keras model),
   save a few held-out test images as PNG files, and run ``kertransfer
   predict`` on them with the export.

BatchNorm moving statistics are recomputed after each training phase
(`kertransfer.training.recalibrate_batchnorm`): with this little data
they otherwise lag the weights and inference collapses to chance.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Sequence

import numpy as np

from kertransfer.cli.demo.common import pixel_baseline, say

IMAGE_SIZE = (32, 32)
HEAD_EPOCHS = 5  # transfer: epochs of head training before the whole network trains
LR_MULT = 0.3  # transfer: rate of the fine-tuning phase relative to the head's


def _seed_all(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)


def pretrain_source(seed: int, workdir: pathlib.Path, *, backbone: str = "mobilenet_v3_small",
                    epochs: int = 12, fit_verbose: int = 0):
    """Pretrain ``backbone`` from random weights on clean digits and save it.

    Returns:
        ``(model, path of the saved .keras file, source validation accuracy)``.
    """
    from kertransfer.data import load
    from kertransfer.models import build_transfer_model
    from kertransfer.training import train

    _seed_all(seed)
    source = load("digits", image_size=IMAGE_SIZE, batch_size=32, validation_split=0.1,
                  seed=seed, verbose=0)
    model = build_transfer_model(backbone, source.num_classes, input_shape=(*IMAGE_SIZE, 3),
                                 weights=None, freeze="none", bn="trainable", dropout=0.2)
    result = train(model, source, epochs=epochs, learning_rate=2e-3, verbose=fit_verbose,
                   validate_each_epoch=False)
    path = pathlib.Path(workdir) / f"pretrained_{backbone}_seed{seed}.keras"
    model.save(path)
    return model, path, float(result.metrics.get("val_accuracy", 0.0))


def load_target(seed: int, labels_per_class: int = 10):
    """The digits_m target: ``labels_per_class`` labelled examples per class to train on,
    and validation and test splits (20% each) that are never trained on."""
    from kertransfer.data import load

    return load("digits_m", image_size=IMAGE_SIZE, batch_size=16, validation_split=0.2,
                test_split=0.2, samples_per_class=labels_per_class, seed=seed, verbose=0)


def run_seed(seed: int, workdir: pathlib.Path, *, backbone: str = "mobilenet_v3_small",
             labels_per_class: int = 10, pretrain_epochs: int = 12, target_epochs: int = 40,
             verbose: int = 1) -> dict:
    """Run the three arms of the demo for one seed; return their test accuracies."""
    import keras

    from kertransfer.models import build_transfer_model
    from kertransfer.training import evaluate_splits, fine_tune, train

    shape = (*IMAGE_SIZE, 3)
    fit_verbose = 2 if verbose >= 2 else 0
    times: dict[str, float] = {}

    say(f"[seed {seed}] 1/3 pretraining {backbone} on digits ({pretrain_epochs} epochs)",
         verbose)
    t0 = time.perf_counter()
    src_model, weights_path, src_acc = pretrain_source(seed, workdir, backbone=backbone,
                                                       epochs=pretrain_epochs,
                                                       fit_verbose=fit_verbose)
    times["pretrain"] = time.perf_counter() - t0
    say(f"[seed {seed}]     source val accuracy {src_acc:.3f} ({times['pretrain']:.0f}s)",
         verbose)

    target = load_target(seed, labels_per_class)
    results: dict[str, float] = {}
    results["source model, no target labels"] = _source_only(src_model, target)

    head_epochs = min(HEAD_EPOCHS, target_epochs - 1)
    say(f"[seed {seed}] 2/3 transfer: {target.counts['train']} digits_m labels; the head "
         f"{head_epochs} epochs on cached features, then the whole network "
         f"{target_epochs - head_epochs} epochs (kertransfer.fine_tune)", verbose)
    t0 = time.perf_counter()
    _seed_all(seed)
    transfer = build_transfer_model(backbone, target.num_classes, input_shape=shape,
                                    weights=weights_path, freeze="none", bn="trainable",
                                    dropout=0.2)
    # A fixed budget, no early stopping: the validation split is far larger than
    # the labelled set and would leak labels into model selection.
    tr = fine_tune(transfer, dataclasses.replace(target, val=None),
                   epochs=target_epochs - head_epochs, freeze_epochs=head_epochs, head_fit="epochs",
                   learning_rate=1e-3, learning_rate_multiplier=LR_MULT, patience=None,
                   verbose=fit_verbose)
    tr_metrics = evaluate_splits(transfer, target)
    results["transfer (pretrained on digits)"] = tr_metrics["test_accuracy"]
    times["transfer"] = time.perf_counter() - t0

    say(f"[seed {seed}] 3/3 scratch: same network, same labels ({target_epochs} epochs)",
         verbose)
    t0 = time.perf_counter()
    _seed_all(seed)
    scratch = build_transfer_model(backbone, target.num_classes, input_shape=shape,
                                   weights=None, freeze="none", bn="trainable", dropout=0.2)
    sc = train(scratch, target, epochs=target_epochs, learning_rate=1e-3, verbose=fit_verbose,
                validate_each_epoch=False)
    results["scratch (random init)"] = sc.metrics["test_accuracy"]
    times["scratch"] = time.perf_counter() - t0

    results["raw-pixel logistic regression"] = pixel_baseline(target)
    keras.backend.clear_session()
    return {"seed": seed, "test_accuracy": results, "seconds": times,
            "source_val_accuracy": src_acc,
            "target_counts": target.counts, "_transfer_model": transfer,
            "_history": tr.history, "_stages": tr.stages, "_target": target}


def _source_only(model, target) -> float:
    """Accuracy of the source classifier applied to the target as is."""
    x, y = target.as_numpy("test")
    pred = np.argmax(model.predict(x, verbose=0), axis=-1)
    return float(np.mean(pred == y))




def run(seeds: Sequence[int], workdir: pathlib.Path, *, backbone: str | None = None,
        labels_per_class: int = 10, quick: bool = False, verbose: int = 1):
    """Every seed of the digits demo: ``(per_seed, header, title, config)``."""
    backbone = backbone or "mobilenet_v3_small"
    epochs = {"pretrain_epochs": 2, "target_epochs": 3} if quick else {}
    per_seed = [run_seed(seed, workdir, backbone=backbone, labels_per_class=labels_per_class,
                         verbose=verbose, **epochs) for seed in seeds]
    header = (f"kertransfer demo: {backbone} pretrained on digits, transferred to digits_m "
              f"with {labels_per_class} labels per class; {len(seeds)} seed(s)")
    config = {"task": "digits", "backbone": backbone, "labels_per_class": labels_per_class,
              "image_size": list(IMAGE_SIZE), "quick": quick}
    return per_seed, header, "held-out digits_m accuracy", config
