"""Data-parallel fine-tuning on every device of one machine, with Keras' own engines.

Each batch is split across the devices, each device computes the gradients
of its part, and they are averaged before the step: the same model trains,
faster with more devices. kertransfer adds nothing of its own here; it runs
inside what the backend provides:

- JAX: ``keras.distribution.DataParallel`` set with
  ``keras.distribution.set_distribution`` before the model is built;
- TensorFlow: ``tf.distribute.MirroredStrategy``; the model is built and
  ``fine_tune`` runs inside ``strategy.scope()`` (it compiles the model,
  creating the optimizer's variables, which must be mirrored too).

Without GPUs, CPU devices show the mechanics (they share the same cores, so
they are not faster)::

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python examples/data_parallel.py --cpu-devices 2
    python examples/data_parallel.py --cpu-devices 2          # TensorFlow

With GPUs, leave ``--cpu-devices`` out: every GPU is used. The global batch
(``--batch-size``) is split evenly, so make it a multiple of the devices.
"""

import argparse
import contextlib
import os

parser = argparse.ArgumentParser(description="Data-parallel fine_tune on one machine.")
parser.add_argument("--cpu-devices", type=int, default=0,
                    help="split the CPU into this many devices (no GPU needed)")
parser.add_argument("--backbone", default="mobilenet_v3_small")
parser.add_argument("--weights", default="imagenet", help="'imagenet', a file, or 'none'")
parser.add_argument("--image-size", type=int, default=96)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--samples-per-class", type=int, default=60)
parser.add_argument("--epochs", type=int, default=2)
args = parser.parse_args()

import keras  # noqa: E402

import kertransfer as kt  # noqa: E402

backend = keras.backend.backend()
scope = contextlib.nullcontext()
if backend == "jax":
    import jax

    devices = jax.devices("cpu" if args.cpu_devices else None)
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
elif backend == "tensorflow":
    import tensorflow as tf

    if args.cpu_devices:  # before TensorFlow uses a device
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    else:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or None
    strategy = tf.distribute.MirroredStrategy(devices)
    scope = strategy.scope()
    devices = strategy.extended.worker_devices
else:
    raise SystemExit(f"This example runs under JAX or TensorFlow, not {backend}.")
print(f"{backend}: data parallel over {len(devices)} devices", flush=True)

data = kt.data.load("fashion_mnist", image_size=(args.image_size, args.image_size),
                    batch_size=args.batch_size, validation_split=0.1, test_split=1 / 7,
                    samples_per_class=args.samples_per_class, seed=0,
                    verbose=int(os.environ.get("KT_VERBOSE", "1")))
weights = None if args.weights == "none" else args.weights
with scope:
    keras.utils.set_random_seed(0)
    model = kt.build_transfer_model(args.backbone, data.num_classes,
                                    input_shape=(args.image_size, args.image_size, 3),
                                    weights=weights)
    result = kt.fine_tune(model, data, epochs=args.epochs, unfreeze_top=2, verbose=2)
print(result)
kernel = model.trainable_variables[-1].value  # where the weights live: one copy per device
copies = len(kernel.sharding.device_set) if backend == "jax" else len(kernel.values)
print(f"test accuracy {result.metrics['test_accuracy']:.3f}; weights on {copies} devices")
