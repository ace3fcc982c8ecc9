"""The ImageNet demo (``kertransfer demo``): real ImageNet weights to Fashion-MNIST, offline.

Steps (all offline):

1. **Weights**: install the backbone's ImageNet weights into the Keras cache
   (`kertransfer.models.install_weights`, from the ``offline-weights``
   extra; nothing is done when they are there already).
2. **Data**: the Fashion-MNIST subset embedded in the package (5,000 images of
   the official test split, gray 28×28 shown as RGB at 96×96), with
   ``labels_per_class`` labelled images per class to train on and a test split
   of 1,000 images never trained on.
3. **Arms**, each scored on the test split:

   - kertransfer's default recipe: `kertransfer.fine_tune` as a user calls it
     (its default epochs, rates and head phase; no validation split, so no
     early stopping);
   - a linear probe: logistic regression on the frozen ImageNet features
     (`kertransfer.methods.fewshot.LogisticClassifier`);
   - the same network from random weights, every layer training for the same
     number of epochs;
   - logistic regression on raw pixels.
4. **Ship it**, as the digits demo does: export the fine-tuned model for TF
   Serving and run ``kertransfer predict`` on held-out test images saved as PNG.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from kertransfer.cli.demo.common import pixel_baseline, say

IMAGE_SIZE = (96, 96)
BACKBONE = "mobilenet"
DATASET = "fashion_mnist_subset"


def prepare_weights(backbone: str, verbose: int = 1) -> None:
    """Install ``backbone``'s ImageNet weights when kertransfer can and they are missing."""
    from kertransfer.models.imagenet.install import install_command, install_weights

    if install_command(backbone) is None:
        return  # weights="imagenet" reads Keras' own cache (or names the file it needs)
    report = install_weights(backbone, verbose=0)
    say(f"ImageNet weights of {backbone}: {report['status']} ({report['path']})", verbose)


def load_target(seed: int, labels_per_class: int = 10, image_size=IMAGE_SIZE,
                test_split: float = 0.2):
    """``labels_per_class`` labelled training images per class, and a test split (20% of
    the subset, 1,000 images; a smoke run takes fewer) that is never trained on."""
    from kertransfer.data import load

    return load(DATASET, image_size=image_size, batch_size=32, validation_split=0.0,
                test_split=test_split, samples_per_class=labels_per_class, seed=seed,
                verbose=0)


def run_seed(seed: int, *, backbone: str = BACKBONE, labels_per_class: int = 10,
             quick: bool = False, verbose: int = 1) -> dict:
    """The four arms for one seed; their test accuracies."""
    import keras

    from kertransfer.methods.fewshot import LogisticClassifier
    from kertransfer.models import build_transfer_model
    from kertransfer.training import fine_tune, train

    keras.utils.set_random_seed(seed)
    target = load_target(seed, labels_per_class, test_split=0.06 if quick else 0.2)
    shape = (*IMAGE_SIZE, 3)
    fit_verbose = 2 if verbose >= 2 else 0
    budget = {"epochs": 1, "freeze_epochs": 1} if quick else {}
    times: dict[str, float] = {}
    results: dict[str, float] = {}

    say(f"[seed {seed}] 1/3 kertransfer.fine_tune with its defaults: ImageNet {backbone}, "
        f"{target.counts['train']} Fashion-MNIST labels", verbose)
    t0 = time.perf_counter()
    model = build_transfer_model(backbone, target.num_classes, input_shape=shape)
    tuned = fine_tune(model, target, patience=None, seed=seed, verbose=fit_verbose, **budget)
    results[f"fine_tune (ImageNet {backbone}, defaults)"] = \
        tuned.metrics["test_accuracy"]
    times["fine_tune"] = time.perf_counter() - t0

    say(f"[seed {seed}] 2/3 linear probe: logistic regression on the ImageNet features",
        verbose)
    t0 = time.perf_counter()
    probe = LogisticClassifier(build_transfer_model(backbone, target.num_classes,
                                                    input_shape=shape))
    probe.fit(*target.as_numpy("train"))
    results["linear probe (ImageNet features)"] = float(probe.score(*target.as_numpy("test")))
    times["probe"] = time.perf_counter() - t0

    epochs = len(tuned.history["loss"])
    say(f"[seed {seed}] 3/3 scratch: the same network from random weights ({epochs} epochs)",
        verbose)
    t0 = time.perf_counter()
    scratch = build_transfer_model(backbone, target.num_classes, input_shape=shape,
                                   weights=None, freeze="none", bn="trainable")
    run = train(scratch, target, epochs=epochs, verbose=fit_verbose, validate_each_epoch=False)
    results["scratch (random init)"] = run.metrics["test_accuracy"]
    times["scratch"] = time.perf_counter() - t0

    results["raw-pixel logistic regression"] = pixel_baseline(target, C=1.0)
    keras.backend.clear_session()
    return {"seed": seed, "test_accuracy": results, "seconds": times,
            "target_counts": target.counts, "_transfer_model": model,
            "_history": tuned.history, "_stages": tuned.stages, "_target": target}


def run(seeds: Sequence[int], *, backbone: str | None = None, labels_per_class: int = 10,
        quick: bool = False, verbose: int = 1):
    """Every seed of the ImageNet demo: ``(per_seed, header, title, config)``."""
    backbone = backbone or BACKBONE
    prepare_weights(backbone, verbose)
    per_seed = [run_seed(seed, backbone=backbone, labels_per_class=labels_per_class,
                         quick=quick, verbose=verbose) for seed in seeds]
    header = (f"kertransfer demo: ImageNet {backbone} transferred to Fashion-MNIST with "
              f"{labels_per_class} labels per class, {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}; "
              f"{len(seeds)} seed(s)")
    config = {"task": "fashion", "backbone": backbone, "dataset": DATASET,
              "labels_per_class": labels_per_class, "image_size": list(IMAGE_SIZE),
              "quick": quick}
    return per_seed, header, "held-out Fashion-MNIST accuracy", config
