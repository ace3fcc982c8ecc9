"""EfficientNet-Lite0 to Lite4: EfficientNet for mobile accelerators, as Keras models.

EfficientNet-Lite (Google's ``tensorflow/tpu`` release, ``efficientnet/lite``)
is EfficientNet-B0's network of mobile inverted bottlenecks with what
quantizes badly taken out:

- no squeeze-and-excitation;
- ReLU6 instead of swish;
- a fixed stem and head: the stem keeps 32 filters, the head 1280, and the
  first and last stages keep their number of blocks whatever the width and
  depth multipliers are.

=========  =====  =====  ==========  =======
variant    width  depth  resolution  dropout
=========  =====  =====  ==========  =======
lite0      1.0    1.0    224         0.2
lite1      1.0    1.1    240         0.2
lite2      1.1    1.2    260         0.3
lite3      1.2    1.4    280         0.3
lite4      1.4    1.8    300         0.3
=========  =====  =====  ==========  =======

Layers are named like ``keras.applications.EfficientNetB0``'s (``stem_*``,
``block<stage><letter>_*``, ``top_*``, ``predictions``), so the registry's
blocks are the stem, the seven stages and the top. Convolutions pad as
TensorFlow's ``"same"`` does (more at the bottom and right), as the original
and its PyTorch port do; BatchNorm has epsilon 1e-3 and momentum 0.99.

The model rescales raw RGB in 0-255 itself (``include_preprocessing=True``):
``(x - 127) / 128``, the input the original release was trained on. The
PyTorch port's example normalizes with the ImageNet mean and standard
deviation instead; both give the right top-1 on the sample photos, but the
converted weights' stem BatchNorm decides: on scikit-image's photos the stem
outputs have 0.7-0.8 times its moving variance with ``(x - 127) / 128`` and
3.4-3.9 times with the mean and standard deviation (Lite0-2).

ImageNet weights for Lite0-2 come from ``kertransfer weights install
efficientnet_lite<N>``, which converts the PyTorch port's state dicts into
``$KERAS_HOME/models/`` (`imagenet_weights_path`); ``weights="imagenet"``
reads them from there and never downloads.
"""

from __future__ import annotations

import math
import os
import pathlib

import keras
from keras import layers

from kertransfer._fs import keras_cache_dir
from kertransfer.backbones.spec import BackboneSpec
from kertransfer.errors import WeightsNotFoundError, format_message

# name: (width, depth, resolution, dropout)
VARIANTS = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 280, 0.3),
    4: (1.4, 1.8, 300, 0.3),
}
WITH_IMAGENET = (0, 1, 2)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DROP_CONNECT_RATE = 0.2
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
INPUT_MEAN = 127.0
INPUT_STD = 128.0

# One stage per row: repeats, kernel, stride, expansion, filters in, filters out
# (EfficientNet-B0's, without squeeze-and-excitation).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

_CONV_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}
_DENSE_INIT = {"class_name": "VarianceScaling",
               "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a number of filters by ``width``, rounded to a multiple of ``divisor``."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's number of blocks by ``depth``, rounded up."""
    return int(math.ceil(depth * repeats))


def stage_table(variant: int) -> list[tuple[int, int, int, int, int, int]]:
    """The stages of ``efficientnet_lite<variant>`` after scaling, as in `STAGES`.

    The first and last stages keep their repeats (the fixed stem and head
    rule); the first stage reads the fixed 32-filter stem.
    """
    width, depth, _, _ = VARIANTS[variant]
    last = len(STAGES) - 1
    table = []
    for i, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(STAGES):
        f_in = STEM_FILTERS if i == 0 else round_filters(f_in, width)
        f_out = round_filters(f_out, width)
        if i not in (0, last):
            repeats = round_repeats(repeats, depth)
        table.append((repeats, kernel, stride, expand, f_in, f_out))
    return table


def _bn(name: str):
    return layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                     name=name)


def _relu6(name: str):
    return layers.ReLU(max_value=6.0, name=name)


def _block(x, prefix: str, kernel: int, stride: int, expand: int, f_in: int, f_out: int,
           drop_rate: float):
    """A mobile inverted bottleneck without squeeze-and-excitation."""
    inputs = x
    filters = f_in * expand
    if expand != 1:
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False,
                          kernel_initializer=_CONV_INIT, name=prefix + "expand_conv")(x)
        x = _bn(prefix + "expand_bn")(x)
        x = _relu6(prefix + "expand_activation")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               depthwise_initializer=_CONV_INIT, name=prefix + "dwconv")(x)
    x = _bn(prefix + "bn")(x)
    x = _relu6(prefix + "activation")(x)
    x = layers.Conv2D(f_out, 1, padding="same", use_bias=False,
                      kernel_initializer=_CONV_INIT, name=prefix + "project_conv")(x)
    x = _bn(prefix + "project_bn")(x)
    if stride == 1 and f_in == f_out:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
        x = layers.Add(name=prefix + "add")([x, inputs])
    return x


def imagenet_weights_file(variant: int, include_top: bool) -> str:
    """The file name of the converted ImageNet weights of ``efficientnet_lite<variant>``."""
    return f"efficientnet_lite{variant}_imagenet{'' if include_top else '_no_top'}.weights.h5"


def imagenet_weights_path(variant: int, include_top: bool) -> pathlib.Path:
    """Where ``weights="imagenet"`` looks: ``$KERAS_HOME/models/`` (``~/.keras/models/``).

    The folder of `kertransfer._fs.keras_cache_dir`: ``KERAS_HOME`` read when
    called, else ``~/.keras``, or ``/tmp/.keras`` when the home folder is not
    writable, as Keras decides.
    """
    return keras_cache_dir() / imagenet_weights_file(variant, include_top)


def _check_args(variant, include_top, weights, input_shape, pooling, classes):
    if variant not in VARIANTS:
        raise ValueError(f"EfficientNet-Lite variants are {sorted(VARIANTS)}; got {variant!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max'; got {pooling!r}")
    if weights == "imagenet":
        if variant not in WITH_IMAGENET:
            raise ValueError(f"EfficientNet-Lite{variant} has no ImageNet weights (Lite0-2 do); "
                             "pass weights=None or the path of a weights file.")
        if include_top and classes != 1000:
            raise ValueError("With weights='imagenet' and include_top=True, classes must be "
                             f"1000; got {classes}")
    elif weights is not None and not os.path.isfile(os.fspath(weights)):
        raise ValueError("weights must be None, 'imagenet' or the path of a weights file; "
                         f"got {weights!r}")
    if input_shape is None:
        size = VARIANTS[variant][2]
        return (size, size, 3)
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels); got {shape}")
    return shape


def _installed_imagenet_file(variant: int, include_top: bool) -> pathlib.Path:
    """The installed ImageNet file of Lite``variant``; checked before the network is built, so
    a missing file is said at once."""
    path = imagenet_weights_path(variant, include_top)
    name = f"efficientnet_lite{variant}"
    if not path.is_file():
        raise WeightsNotFoundError(
            format_message(
                f"The ImageNet weights of {name!r} are not installed.",
                expected=f"the file {path.name} at {path}",
                fix=f"Run `kertransfer weights install {name}`, which converts them "
                    "locally, without a download, from a package of the offline-weights extra "
                    '(pip install "kertransfer[offline-weights]"); or copy that file from a '
                    "machine where it is installed; set KERAS_HOME to use another cache "
                    "folder. Otherwise use weights=None or a local weights file.",
                received={"backbone": name, "weights": "imagenet"},
            )
        )
    return path


def efficientnet_lite(
    variant: int,
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_shape: tuple[int, int, int] | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    include_preprocessing: bool = True,
    dropout_rate: float | None = None,
    drop_connect_rate: float = DROP_CONNECT_RATE,
) -> keras.Model:
    """Build EfficientNet-Lite``variant`` as a functional Keras model.

    Args:
        variant: 0 to 4.
        include_top: Add the classifier (``avg_pool``, ``top_dropout``,
            ``predictions``).
        weights: ``None`` (random), ``"imagenet"`` (Lite0-2; read from
            ``$KERAS_HOME/models/``, installed by ``kertransfer weights
            install``) or the path of a ``.weights.h5`` file.
        input_shape: ``(height, width, channels)``; the variant's resolution
            by default. Any size of at least 32 works (the network is fully
            convolutional).
        pooling: Without the top, ``None`` (the feature map), ``"avg"`` or ``"max"``.
        classes: Units of the classifier.
        classifier_activation: Activation of the classifier (``None`` for logits).
        include_preprocessing: Rescale raw 0-255 RGB inside the model to
            ``(x - 127) / 128`` (layer ``stem_rescaling``).
        dropout_rate: Dropout before the classifier; the variant's by default.
        drop_connect_rate: Stochastic depth of the residual blocks, growing
            linearly from 0 to this rate over the blocks.

    Returns:
        A ``keras.Model`` named ``efficientnet_lite<variant>``.

    Raises:
        WeightsNotFoundError: ``weights="imagenet"`` and the converted file is
            not installed (the message names it and the install command).
        ValueError: An argument is outside what the network accepts.
    """
    shape = _check_args(variant, include_top, weights, input_shape, pooling, classes)
    imagenet_file = (_installed_imagenet_file(variant, include_top) if weights == "imagenet"
                     else None)
    _, _, _, default_dropout = VARIANTS[variant]
    dropout_rate = default_dropout if dropout_rate is None else dropout_rate

    inputs = keras.Input(shape, name="input_layer")
    x = inputs
    if include_preprocessing:
        x = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD,
                             name="stem_rescaling")(x)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      kernel_initializer=_CONV_INIT, name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_activation")(x)

    table = stage_table(variant)
    total = sum(row[0] for row in table)
    b = 0
    for stage, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(table, start=1):
        for j in range(repeats):
            x = _block(x, f"block{stage}{chr(ord('a') + j)}_", kernel,
                       stride if j == 0 else 1, expand, f_in if j == 0 else f_out, f_out,
                       drop_connect_rate * b / total)
            b += 1

    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False,
                      kernel_initializer=_CONV_INIT, name="top_conv")(x)
    x = _bn("top_bn")(x)
    x = _relu6("top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation,
                         kernel_initializer=_DENSE_INIT, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    model = keras.Model(inputs, x, name=f"efficientnet_lite{variant}")

    if imagenet_file is not None:
        model.load_weights(imagenet_file)
    elif weights is not None:
        model.load_weights(os.fspath(weights))
    return model


def _constructor(variant: int):
    def build(include_top: bool = True, weights=None, input_shape=None, **kwargs):
        return efficientnet_lite(variant, include_top=include_top, weights=weights,
                                 input_shape=input_shape, **kwargs)

    build.__name__ = build.__qualname__ = f"EfficientNetLite{variant}"
    build.__doc__ = (f"EfficientNet-Lite{variant} (``efficientnet_lite({variant}, ...)``; "
                     "the same arguments).")
    return build


EfficientNetLite0 = _constructor(0)
EfficientNetLite1 = _constructor(1)
EfficientNetLite2 = _constructor(2)
EfficientNetLite3 = _constructor(3)
EfficientNetLite4 = _constructor(4)


def blocks() -> list[tuple[str, str]]:
    """The ordered blocks: stem, the seven stages, top (exact-name-safe patterns)."""
    return ([("stem", r"^stem_")]
            + [(f"block{i}", rf"^block{i}[a-z]+_") for i in range(1, len(STAGES) + 1)]
            + [("top", r"^top_")])


def lite_specs() -> list[BackboneSpec]:
    """Return the registry specs of ``efficientnet_lite0`` to ``efficientnet_lite4``."""
    return [
        BackboneSpec(
            f"efficientnet_lite{i}",
            f"{__name__}.EfficientNetLite{i}",
            "builtin",
            size,
            32,
            blocks(),
            family="efficientnet_lite",
            has_imagenet=i in WITH_IMAGENET,
        )
        for i, (_, _, size, _) in VARIANTS.items()
    ]
