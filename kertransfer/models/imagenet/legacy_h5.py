"""Write a model's weights as the legacy HDF5 file that ``keras.applications`` loads.

The files Keras downloads into ``$KERAS_HOME/models/`` (``mobilenet_1_0_224_tf.h5``
and the like) predate Keras 3's ``.weights.h5``: the root group lists
``layer_names``, each layer's group lists its ``weight_names`` and holds one
dataset per weight, trainable weights first. Keras 3 reads them in order, layer
by layer (``model.load_weights("x.h5")``), and its ``save_weights`` no longer
writes them, hence this writer.
"""

from __future__ import annotations

import os

import keras
import numpy as np


def _weight_name(layer, variable) -> str:
    path = getattr(variable, "path", "") or variable.name
    return f"{layer.name}/{path.rsplit('/', 1)[-1]}:0"


def write_legacy_h5(model: keras.Model, path: str | os.PathLike,
                    layer_names: list[str] | None = None) -> None:
    """Write the weights of ``model`` (or of its layers in ``layer_names``) to ``path``.

    Args:
        model: The model whose layers to write.
        path: The ``.h5`` file to write.
        layer_names: The layers to write, in the model's order; ``None``: all.
    """
    import h5py

    layers = [layer for layer in model.layers if layer_names is None or layer.name in layer_names]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name.encode("utf8") for layer in layers])
        f.attrs["backend"] = keras.backend.backend().encode("utf8")
        f.attrs["keras_version"] = str(keras.__version__).encode("utf8")
        for layer in layers:
            group = f.create_group(layer.name)
            variables = layer.trainable_weights + layer.non_trainable_weights
            names = [_weight_name(layer, v) for v in variables]
            group.attrs["weight_names"] = np.array([n.encode("utf8") for n in names])
            for name, variable in zip(names, variables):
                group.create_dataset(name, data=keras.ops.convert_to_numpy(variable))
