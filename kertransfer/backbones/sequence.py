"""Sequence backbones for text and time series: LSTM, GRU and a Transformer encoder.

Each is built from Keras layers, headless, and takes either

- time series ``[batch, timesteps, features]`` (``input_shape=(T, F)``), or
- token ids ``[batch, timesteps]`` (``input_shape=(T,)``), embedded first.

The output is one vector per timestep, ``[batch, T, width]``; a
`kertransfer.TransferModel` pools it over time. Layers are named by block,
so freeze depths count encoder layers like they count stages of a CNN::

    stem     the input projection (Dense) or token embedding (+ positions)
    layer0   the first recurrent layer, or the first encoder block
    layer1   ...

None comes with pretrained weights: pretrain one on a source task (or
train a model on it) and pass the saved file as ``weights=``.
"""

from __future__ import annotations

import keras
from keras import layers

from kertransfer.backbones.spec import BackboneSpec

DEFAULT_VOCABULARY = 20000
DEFAULT_TIMESTEPS = 64
NUM_LAYERS = 2


@keras.saving.register_keras_serializable(package="kertransfer")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each timestep's position."""

    def build(self, input_shape):
        self.positions = self.add_weight(shape=(int(input_shape[-2]), int(input_shape[-1])),
                                         initializer="glorot_uniform", name="positions")

    def call(self, x):
        return x + keras.ops.cast(self.positions, x.dtype)[None]


def _check(include_top, weights, input_shape):
    if include_top:
        raise ValueError("Sequence backbones are headless: include_top must be False.")
    if weights is not None:
        raise ValueError("Sequence backbones have no downloadable weights; pass weights=None "
                         "and load a file through build_transfer_model(weights=...).")
    shape = tuple(input_shape)
    if len(shape) not in (1, 2):
        raise ValueError("input_shape must be (timesteps,) for token ids or "
                         f"(timesteps, features) for a time series; got {shape}")
    return shape


def _stem(inputs, width: int, vocabulary: int, positions: bool):
    if len(inputs.shape) == 2:  # token ids
        x = layers.Embedding(vocabulary, width, name="stem_embedding")(inputs)
    else:
        x = layers.Dense(width, name="stem_projection")(inputs)
    if positions:
        x = PositionEmbedding(name="stem_positions")(x)
    return x


def recurrent_encoder(include_top: bool = False, weights=None,
                      input_shape=(DEFAULT_TIMESTEPS, 1), *, cell: str = "lstm",
                      units: int = 64, num_layers: int = NUM_LAYERS,
                      vocabulary: int = DEFAULT_VOCABULARY, dropout: float = 0.0):
    """A stack of LSTM or GRU layers, each returning its whole sequence."""
    shape = _check(include_top, weights, input_shape)
    recurrent = {"lstm": layers.LSTM, "gru": layers.GRU}[cell]
    inputs = keras.Input(shape)
    x = _stem(inputs, units, vocabulary, positions=False)
    for i in range(num_layers):
        x = recurrent(units, return_sequences=True, dropout=dropout, name=f"layer{i}_{cell}")(x)
    return keras.Model(inputs, x, name=f"{cell}_encoder")


def transformer_encoder(include_top: bool = False, weights=None,
                        input_shape=(DEFAULT_TIMESTEPS, 1), *, width: int = 64,
                        num_heads: int = 4, ff_units: int = 128, num_layers: int = NUM_LAYERS,
                        vocabulary: int = DEFAULT_VOCABULARY, dropout: float = 0.1):
    """A Transformer encoder (post-norm blocks of self-attention and a feed-forward net)."""
    shape = _check(include_top, weights, input_shape)
    inputs = keras.Input(shape)
    x = _stem(inputs, width, vocabulary, positions=True)
    for i in range(num_layers):
        p = f"layer{i}_"
        attended = layers.MultiHeadAttention(num_heads, width // num_heads, dropout=dropout,
                                             name=f"{p}attention")(x, x)
        x = layers.LayerNormalization(name=f"{p}norm1")(layers.Add(name=f"{p}add1")([x, attended]))
        h = layers.Dense(ff_units, activation="relu", name=f"{p}ff1")(x)
        h = layers.Dropout(dropout, name=f"{p}dropout")(h)
        h = layers.Dense(width, name=f"{p}ff2")(h)
        x = layers.LayerNormalization(name=f"{p}norm2")(layers.Add(name=f"{p}add2")([x, h]))
    return keras.Model(inputs, x, name="transformer_encoder")


def sequence_blocks(num_layers: int = NUM_LAYERS):
    """The block table of an encoder with ``num_layers`` layers: stem, layer0, layer1, ..."""
    return (("stem", r"^stem_"), *((f"layer{i}", rf"^layer{i}_") for i in range(num_layers)))


def sequence_specs() -> list[BackboneSpec]:
    """The registered sequence backbones: ``lstm``, ``gru`` and ``transformer``."""
    common = {"preprocessing": "none", "default_size": DEFAULT_TIMESTEPS, "min_size": 1,
              "blocks": sequence_blocks(), "family": "sequence", "has_imagenet": False,
              "inputs": "sequence"}
    return [
        BackboneSpec(name="lstm", constructor=recurrent_encoder,
                     constructor_kwargs={"cell": "lstm"}, **common),
        BackboneSpec(name="gru", constructor=recurrent_encoder,
                     constructor_kwargs={"cell": "gru"}, **common),
        BackboneSpec(name="transformer", constructor=transformer_encoder, **common),
    ]
