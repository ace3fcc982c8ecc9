"""Fine-tuning throughput and search speed on the machine's accelerator (or CPU).

Runs under any Keras backend, and needs no TensorFlow: on a GPU machine with
only JAX, run it with ``KERAS_BACKEND=jax``. The data are synthetic images
with a learnable signal (the embedded datasets need TensorFlow to load).

1. Throughput: images per second of a full fine-tuning epoch (every layer
   trainable, BatchNorm frozen) of a kertransfer model against the same
   network written in plain Keras (``keras.applications`` backbone, pooling,
   dropout, dense), same batch size and data, alternating timed epochs after
   a warm-up epoch each. Printed: both rates and their ratio (goal: at most
   3% slower).
2. Search: the same short random search of the same two-phase recipe, in
   plain KerasTuner (``bench_search_speed.HandWritten``) and with `kt.tune`
   (shared cached features), same oracle seed. Printed: both wall clocks, the
   speed-up (goal: at least 3x), images per second of trial epochs, and
   kertransfer's trials per hour.

Usage::

    KERAS_BACKEND=jax python benchmarks/gpu_search.py [--backbone resnet50]
        [--image-size 96] [--batch-size 64] [--images 2048] [--trials 6] [--mixed-precision]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402
from _common import append_row, machine  # noqa: E402
from bench_search_speed import HandWritten, block_starts  # noqa: E402

import kertransfer as kt  # noqa: E402


def device_name() -> str:
    """The accelerator Keras computes on, in words."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        return f"{dev.platform}:{getattr(dev, 'device_kind', dev)}"
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return gpus[0].name if gpus else "cpu"
    return backend


def synthetic(n: int, size: int, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % classes).astype("int32")
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    for c in range(classes):
        rows = slice(0, max(1, size * (c + 1) // (classes + 1)))
        x[y == c, rows, :, c % 3] = 255.0
    return x, y


def plain_keras(backbone: str, shape, classes: int, dropout: float = 0.2) -> keras.Model:
    """The same network as build_transfer_model, written by hand."""
    spec = kt.get_backbone_spec(backbone)
    ctor = spec.constructor
    if isinstance(ctor, str):
        mod, _, name = ctor.rpartition(".")
        ctor = getattr(__import__(mod, fromlist=[name]), name)
    base = ctor(include_top=False, weights=None, input_shape=shape,
                **dict(spec.constructor_kwargs))
    inputs = keras.Input(shape)
    x = kt.models.layers.Preprocess(spec.preprocessing)(inputs) \
        if spec.preprocessing not in ("builtin", "none") else inputs
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def images_per_second(models: dict, x, y, batch_size: int, rounds: int) -> dict:
    for model in models.values():
        model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # compile + warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            t0 = time.perf_counter()
            model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
            times[name].append(time.perf_counter() - t0)
    return {name: len(x) / statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # keras.applications MobileNetV3 and EfficientNet call TensorFlow in their preprocessing
    # layers even under JAX; ResNet runs on a machine with JAX alone.
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    device = device_name()
    shape = (args.image_size, args.image_size, 3)
    print(f"{machine()}; device {device}; {args.backbone} {args.image_size}px, batch "
          f"{args.batch_size}, {args.images} images", flush=True)
    x, y = synthetic(args.images, args.image_size)
    if args.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    models = {
        "kertransfer": kt.build_transfer_model(args.backbone, 10, input_shape=shape,
                                               weights=None, freeze="none", bn="frozen"),
        "plain keras": plain_keras(args.backbone, shape, 10),
    }
    rates = images_per_second(models, x, y, args.batch_size, args.rounds)
    keras.config.set_dtype_policy("float32")
    ratio = rates["plain keras"] / rates["kertransfer"]
    print(f"fine-tuning throughput: kertransfer {rates['kertransfer']:.0f} img/s, plain Keras "
          f"{rates['plain keras']:.0f} img/s; time ratio {ratio:.3f} (goal <= 1.03)", flush=True)
    del models
    keras.backend.clear_session()

    n_val = len(x) // 5
    train, val = (x[n_val:], y[n_val:]), (x[:n_val], y[:n_val])
    head_epochs = max(1, args.epochs // 2)
    seconds, best = {}, {}
    with tempfile.TemporaryDirectory(prefix="kt-gpu-search-") as tmp:
        weights = os.path.join(tmp, "backbone.keras")
        kt.build_transfer_model(args.backbone, 10, input_shape=shape, weights=None,
                                freeze="none").save(weights)
        # The same two-phase recipe and oracle seed as kt.tune, in plain KerasTuner.
        plain = HandWritten(args.backbone, shape, block_starts(args.backbone, shape),
                            head_epochs, weights=weights)
        t0 = time.perf_counter()
        tuner = keras_tuner.RandomSearch(plain, objective="val_accuracy",
                                         max_trials=args.trials, seed=1,
                                         directory=os.path.join(tmp, "plain"),
                                         project_name="plain")
        tuner.search(train, validation_data=val, epochs=args.epochs, verbose=0,
                     batch_size=args.batch_size)  # (x, y) as one argument: HandWritten's data
        seconds["plain"] = time.perf_counter() - t0
        best["plain"] = tuner.oracle.get_best_trials(1)[0].score
        keras.backend.clear_session()
        hm = kt.TransferHyperModel(args.backbone, num_classes=10, input_shape=shape,
                                   weights=weights, epochs=args.epochs,
                                   batch_size=args.batch_size,
                                   mixed_precision=args.mixed_precision,
                                   space={"head_epochs": head_epochs})
        t0 = time.perf_counter()
        result = kt.tune(hm, train, validation_data=val, max_trials=args.trials,
                         epochs=args.epochs, seed=0, directory=os.path.join(tmp, "search"),
                         verbose=0, save_best=False)
        seconds["kt"] = time.perf_counter() - t0
        best["kt"] = result.tuner.oracle.get_best_trials(1)[0].score
    done = sum(r["status"] == "COMPLETED" for r in result.results)
    per_hour = 3600 * done / seconds["kt"]
    speedup = seconds["plain"] / seconds["kt"]
    trial_images = args.trials * args.epochs * len(x)  # each epoch: training and validation
    print(f"search: {done} trials of {args.epochs} epochs, kertransfer {seconds['kt']:.0f}s "
          f"(best {best['kt']:.4f}, {trial_images / seconds['kt']:.0f} images/s), plain "
          f"KerasTuner {seconds['plain']:.0f}s (best {best['plain']:.4f}, "
          f"{trial_images / seconds['plain']:.0f} images/s): speed-up {speedup:.2f}x "
          f"(goal >= 3); {per_hour:.0f} trials per hour ({hm.features.passes} feature passes)")
    if not args.no_record:
        setup = (f"{machine()}; device {device}; {args.backbone} {args.image_size}px, batch "
                 f"{args.batch_size}, {args.images} synthetic images"
                 + (", mixed_float16" if args.mixed_precision else ""))
        append_row("fine-tuning throughput vs plain Keras (time ratio)", setup,
                   f"{rates['kertransfer']:.0f} img/s", f"{rates['plain keras']:.0f} img/s",
                   ratio, f"median of {args.rounds} alternating epochs; goal <= 1.03")
        append_row("search wall clock, plain KerasTuner / kertransfer (speed-up)", setup,
                   f"{seconds['kt']:.0f} s, best {best['kt']:.4f}",
                   f"{seconds['plain']:.0f} s, best {best['plain']:.4f}", speedup,
                   f"{done} random-search trials of {args.epochs} epochs ({head_epochs} head), "
                   f"same oracle seed; {trial_images / seconds['kt']:.0f} vs "
                   f"{trial_images / seconds['plain']:.0f} images/s; goal >= 3x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
