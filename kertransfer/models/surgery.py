"""Model surgery: cut a transfer model where training or explaining needs it.

A transfer model is images -> preprocessing -> backbone -> pooling -> head.
`feature_extractor` and `compute_features` stop at the pooling layer (the
head's input); `head_on_features` is the model's own head on such features;
`split_at_block` cuts inside the backbone before a block; `layer_outputs` adds
layers' maps (also the backbone's) to the outputs of one pass. Every piece reuses
the model's layer objects, so training a piece trains the model. The feature
cache and the tuner's shared features (training, tuning) and Grad-CAM
(insight) are built from these.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kertransfer.freezing.protocol import block_context, is_transfer_model


def feature_extractor(model) -> keras.Model:
    """The part of a transfer model up to its pooling layer (its head's input)."""
    return keras.Model(model.input, model.get_layer(pool_name(model)).output,
                       name="feature_extractor")


def pool_name(model) -> str:
    """The name of the layer whose output is the head's input."""
    names = [layer.name for layer in model.layers]
    return "pool" if "pool" in names else model.backbone.name


def head_layers(model) -> list:
    """The layers after the pooling layer, in order (every head's, for several heads)."""
    names = [layer.name for layer in model.layers]
    return model.layers[names.index(pool_name(model)) + 1:]


def layers_after(model, layer_name: str, inputs) -> Any:
    """``model``'s own layers from the output of ``layer_name`` on, applied to ``inputs``.

    The same layer objects (training the result trains ``model``); the outputs
    keep the model's structure, a dict of heads for a multi-task model.
    """
    names = [layer.name for layer in model.layers]
    # The tensor in ``model``'s graph: a nested model's ``output`` is its own graph's.
    start = model.layers[names.index(layer_name) + 1].input
    rest = keras.Model(start, model.output, name=f"after_{layer_name}")
    return rest(inputs)


def with_activation(new, model) -> keras.Model:
    """``new`` with ``model``'s output activation recorded (it picks the loss)."""
    new.activation = getattr(model, "activation", "softmax")  # picks the matching loss(es)
    return new


def head_on_features(model, feature_shape) -> keras.Model:
    """A model from features of ``feature_shape`` through ``model``'s own head layers.

    For a multi-task model its outputs are the dict of heads, as the model's.
    """
    inputs = keras.Input(tuple(feature_shape), name="features")
    outputs = layers_after(model, pool_name(model), inputs)
    return with_activation(keras.Model(inputs, outputs, name="head_on_features"), model)


def split_at_block(model, block: int) -> tuple[keras.Model, keras.Model] | None:
    """Cut a transfer model before backbone block ``block``: ``(bottom, top)``.

    ``bottom`` maps the model's images to the input of the block's first layer;
    ``top`` maps that tensor through the rest of the backbone and the model's
    own pooling and head layers (the same layer objects: training ``top``
    trains ``model``). ``top(bottom(x))`` equals ``model(x)``.

    Returns None when the backbone cannot be cut there: ``block`` is the first
    block or past the last, or more than one tensor crosses the cut (a skip
    connection spans it).
    """
    ctx = block_context(model)
    if not 0 < block < ctx.num_blocks or block not in ctx.block_of:
        return None
    first = ctx.layers[ctx.block_of.index(block)]
    backbone = model.backbone
    names = [layer.name for layer in model.layers]
    at = names.index(backbone.name)
    if at < 1:
        return None
    try:
        cut = first.input
        if not isinstance(cut, keras.KerasTensor):
            return None
        # Keras refuses a disconnected graph: a tensor from below the cut that
        # reaches above it (other than ``cut``) makes this raise.
        top_backbone = keras.Model(cut, backbone.output, name="backbone_top")
        bottom_backbone = keras.Model(backbone.input, cut, name="backbone_bottom")
    except (ValueError, AttributeError):
        return None
    bottom = keras.Model(model.input, bottom_backbone(model.layers[at - 1].output),
                         name="bottom")
    inputs = keras.Input(tuple(cut.shape[1:]), name="cut_features")
    outputs = layers_after(model, backbone.name, top_backbone(inputs))
    top = with_activation(keras.Model(inputs, outputs, name="top"), model)
    top.bottom_layers = list(bottom_backbone.layers)
    return bottom, top


def batch_predictor(model):
    """A function from a batch of inputs to ``model``'s outputs in inference mode, as
    numpy, compiled once: ``model.predict_on_batch``, or inside a ``tf.distribute``
    strategy a compiled direct call (there ``predict_on_batch`` returns every
    replica's copy of the batch)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy():
            call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            return lambda x: keras.tree.map_structure(np.asarray, call(x))
    return model.predict_on_batch


def feature_predictor(model):
    """`batch_predictor` of ``model`` up to its pooling layer: a batch of images to
    their pooled features (the head's input), compiled once."""
    return batch_predictor(feature_extractor(model))


def compute_features(model, x: np.ndarray, batch_size: int = 64, verbose: int = 1) -> np.ndarray:
    """Backbone features (after pooling) of images ``x``, in inference mode."""
    extractor = feature_extractor(model)
    return np.asarray(extractor.predict(x, batch_size=batch_size, verbose=verbose))


def layer_outputs(model, layers) -> tuple[keras.Model, list[str]]:
    """One model from ``model``'s inputs to ``[features, *outputs, *maps]`` in one pass.

    ``features`` is what the head reads (the pooled features of a transfer
    model, else the first output), ``outputs`` the model's own outputs and
    ``maps`` the output of each layer named in ``layers``: a layer of
    ``model`` or, for a transfer model, of its backbone (the backbone then
    runs once, with the maps as extra outputs). Returns the model and the
    names in ``layers`` that ``model`` lacks (the model is None when any is
    missing).
    """
    outer = {layer.name: layer for layer in model.layers}
    transfer = is_transfer_model(model)
    inner = {layer.name: layer for layer in model.backbone.layers} if transfer else {}
    missing = [n for n in layers if n not in outer and n not in inner]
    if missing:
        return None, missing
    pooled = pool_name(model) if transfer else "pool"
    features = outer[pooled].output if pooled in outer else model.outputs[0]
    if not any(n not in outer for n in layers):
        maps = [outer[n].output for n in layers]
        return keras.Model(model.inputs, [features, *model.outputs, *maps]), []
    backbone = model.backbone
    names = [layer.name for layer in model.layers]
    at = names.index(backbone.name)
    tapped = [n for n in layers if n not in outer]
    taps = keras.Model(backbone.input, [inner[n].output for n in tapped] + [backbone.output],
                       name="backbone_taps")
    *inner_maps, top = taps(model.layers[at - 1].output)  # the backbone's input in this graph
    start = model.layers[at + 1].input  # the backbone's output in model's graph
    later = [n for n in layers if n in outer and names.index(n) > at]
    wanted = [features, *model.outputs, *(outer[n].output for n in later)]
    unique = {id(t): t for t in wanted}  # Keras refuses one tensor twice among the outputs
    after = keras.Model(start, list(unique.values()), name="after_backbone")
    done = dict(zip(unique, keras.tree.flatten(after(top))))  # model's tensor -> this graph's
    found = dict(zip(tapped, inner_maps)) | {n: done[id(outer[n].output)] for n in later}
    found[backbone.name] = top
    maps = [found[n] if n in found else outer[n].output for n in layers]  # the rest: upstream
    head = [done[id(t)] for t in wanted[:1 + len(model.outputs)]]
    return keras.Model(model.inputs, [*head, *maps]), []
