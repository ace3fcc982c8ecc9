"""Self-supervised pretraining on unlabelled images, then transfer with ten labels per class.

Offline, on the embedded digits_m, in a few minutes on a laptop CPU::

    python examples/pretraining.py

Rotation pretraining (predict how far each image was turned) uses no
labels. The backbone it writes is then fine-tuned on ten labelled images per
class, beside the same network from random weights. Epochs are small so
that it runs quickly; ``benchmarks/bench_pretrain.py`` has the measured
settings.
"""

import keras

import kertransfer as kt
from kertransfer.training import train

SIZE = (32, 32)

# Every digits_m image, labels dropped: what a self-supervised task learns from.
everything = kt.data.load("digits_m", image_size=SIZE, validation_split=0.0, seed=0, verbose=0)
images, _ = everything.as_numpy("train")
result = kt.pretrain("mobilenet_v3_small", images, task="rotation", epochs=6, batch_size=64,
                     out="runs/example_rotation", verbose=2)

few = kt.data.load("digits_m", image_size=SIZE, validation_split=0.0, test_split=0.3,
                   samples_per_class=10, seed=0, verbose=0)
for name, weights in (("from rotation pretraining", result.path), ("from random weights", None)):
    keras.utils.set_random_seed(0)
    model = kt.build_transfer_model("mobilenet_v3_small", few.num_classes,
                                    input_shape=(*SIZE, 3), weights=weights, freeze="none",
                                    bn="trainable")
    run = train(model, few, epochs=15, verbose=0, validate_each_epoch=False)
    print(f"{name:<26} test accuracy {run.metrics['test_accuracy']:.3f}")
