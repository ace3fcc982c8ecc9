"""One backbone, two heads: the digit, and an auxiliary parity task.

Offline, on the embedded digits_m, in about a minute on a laptop CPU::

    python examples/multitask.py

``DataBundle.with_tasks`` gives each image a label per task (parity comes
from a lookup table over the digit classes), ``build_transfer_model`` takes
``{task: classes}``, and ``train`` weighs the task losses. The run folder
exports like any other; the SavedModel serves both heads.
"""

import keras

import kertransfer as kt
from kertransfer.training import train

SIZE = (32, 32)
data = kt.data.load("digits_m", image_size=SIZE, validation_split=0.0, test_split=0.3,
                    samples_per_class=10, seed=0, verbose=0)
tasks = data.with_tasks({"digit": None, "parity": [k % 2 for k in range(10)]})
print(tasks.summary())

keras.utils.set_random_seed(0)
model = kt.build_transfer_model("mobilenet_v3_small", tasks.tasks, input_shape=(*SIZE, 3),
                                weights=None, freeze="none", bn="trainable")
run = train(model, tasks, epochs=15, loss_weights={"parity": 0.5}, verbose=0,
            validate_each_epoch=False, out="runs/example_multitask")
print({k: round(v, 3) for k, v in run.metrics.items() if k.endswith("accuracy")})

keras.utils.set_random_seed(0)
single = kt.build_transfer_model("mobilenet_v3_small", 10, input_shape=(*SIZE, 3),
                                 weights=None, freeze="none", bn="trainable")
alone = train(single, data, epochs=15, verbose=0, validate_each_epoch=False)
print(f"digit head alone: test accuracy {alone.metrics['test_accuracy']:.3f}")

version = kt.export(run.out, "runs/example_multitask_serving", overwrite=True, verbose=0)
print(f"exported both heads to {version}")
