"""Layers kertransfer puts into the models it builds."""

from __future__ import annotations

import keras
from keras import ops

from kertransfer.backbones.spec import PREPROCESSING_MODES

_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="kertransfer")
class Preprocess(keras.layers.Layer):
    """Map raw 0-255 RGB images to what a backbone expects.

    The same arithmetic as ``keras.applications.*.preprocess_input``, written
    with ``keras.ops`` so that it runs on every backend and is saved inside
    the model.

    Args:
        mode: ``"caffe"`` (RGB to BGR, ImageNet mean subtracted), ``"tf"``
            (scaled to [-1, 1]), ``"torch"`` (scaled to [0, 1], normalized
            with the ImageNet mean and standard deviation), ``"builtin"`` or
            ``"none"`` (identity: the backbone rescales inside, or needs
            nothing).
        **kwargs: Standard layer arguments.
    """

    def __init__(self, mode: str = "none", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"mode must be one of {PREPROCESSING_MODES}; got {mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN_RGB, dtype=x.dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD_RGB, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
