"""Use your own keras.Model as a backbone, and register it under a name.

    python examples/custom_backbone.py
"""

import keras

import kertransfer as kt


def small_cnn(include_top=False, weights=None, input_shape=(32, 32, 3)):
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"stage{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"stage{i}_bn")(x)
        x = keras.layers.ReLU(name=f"stage{i}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"stage{i}_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


# 1. Any headless keras.Model works as-is: each layer with weights (other than
#    normalization) opens a block named after it.
model = kt.build_transfer_model(small_cnn(), num_classes=10, freeze=1)
kt.trainable_summary(model)

# 2. Registered with named blocks, it works like the keras.applications entries.
kt.register_backbone(
    "small_cnn", small_cnn,
    blocks=[(f"stage{i}", rf"^stage{i}_") for i in range(3)],
    preprocessing="tf", default_size=32, min_size=8, has_imagenet=False, overwrite=True,
)
model = kt.build_transfer_model("small_cnn", num_classes=10, weights=None, freeze="stage0")
kt.trainable_summary(model)
