"""Discriminative learning rates: a true per-variable rate, for Adam, AdamW, SGD."""

import re

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.callbacks import StagedUnfreezing
from kertransfer.errors import InvalidArgumentError, InvalidTypeError
from kertransfer.optimizers import discriminative

LAYERS = ("stem_conv", "block1_conv", "block2_conv")


def _model(name):
    return kt.build_transfer_model(name, 4, input_shape=(16, 16, 3), weights=None,
                                   freeze="none", bn="frozen", dropout=0.0)


def _kernels(model):
    out = {n: model.backbone.get_layer(n).get_weights()[0].copy() for n in LAYERS}
    out["head"] = model.get_layer("predictions").get_weights()[0].copy()
    return out


def _one_step(model, x, y):
    before = _kernels(model)
    model.train_on_batch(x, y)
    after = _kernels(model)
    return {k: np.abs(after[k] - before[k]).max() for k in before}


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("rule", [{"decay": 2.0}, {"layer_decay": 0.5}])
def test_adam_gets_a_true_rate_per_block(tiny_backbone_name, tiny_data, rule):
    # Adam's first step moves every weight by about lr (it normalizes the gradient),
    # so the largest change per block is the block's own learning rate.
    x, y = tiny_data
    model = _model(tiny_backbone_name)
    model.compile(discriminative(keras.optimizers.Adam(1e-2), **rule),
                  "sparse_categorical_crossentropy")
    step = _one_step(model, x[:64], y[:64])
    expected = {"head": 1e-2, "block2_conv": 5e-3, "block1_conv": 2.5e-3, "stem_conv": 1.25e-3}
    for name, lr in expected.items():
        assert step[name] == pytest.approx(lr, rel=0.02), name


@pytest.mark.backend_agnostic
def test_explicit_multipliers_and_weight_decay_scale_together(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = _model(tiny_backbone_name)
    opt = discriminative(keras.optimizers.AdamW(0.1, weight_decay=0.5),
                         multipliers={"stem": 0.0, re.compile("^block1_"): 0.2, "head": 1.0})
    # A zero loss has zero gradients: only decoupled weight decay moves the weights.
    model.compile(opt, loss=lambda yt, yp: 0.0 * keras.ops.sum(yp))
    before = _kernels(model)
    model.train_on_batch(x[:32], y[:32])
    after = _kernels(model)
    for name, m in (("stem_conv", 0.0), ("block1_conv", 0.2), ("block2_conv", 1.0),
                    ("head", 1.0)):
        np.testing.assert_allclose(after[name], before[name] * (1 - 0.5 * 0.1 * m), rtol=1e-5)


def test_norm_and_bias_excluded_from_weight_decay(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="none", bn="trainable")
    model.get_layer("predictions").bias.assign(keras.ops.ones((4,)))
    opt = discriminative(keras.optimizers.AdamW(0.1, weight_decay=0.5), decay=1.0,
                         exclude_norm_and_bias_from_weight_decay=True)
    model.compile(opt, loss=lambda yt, yp: 0.0 * keras.ops.sum(yp))
    gamma = model.backbone.get_layer("stem_bn").gamma.numpy().copy()
    model.train_on_batch(x[:32], y[:32])
    np.testing.assert_array_equal(model.get_layer("predictions").bias.numpy(), np.ones(4))
    np.testing.assert_array_equal(model.backbone.get_layer("stem_bn").gamma.numpy(), gamma)


@pytest.mark.backend_agnostic
def test_survives_save_and_load(tmp_path, tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = _model(tiny_backbone_name)
    model.compile(discriminative(keras.optimizers.Adam(1e-2), decay=2.0),
                  "sparse_categorical_crossentropy")
    model.train_on_batch(x[:32], y[:32])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer).__name__ == "DiscriminativeAdam"
    assert loaded.optimizer.kt_decay == 2.0
    step = _one_step(loaded, x[:64], y[:64])
    assert step["stem_conv"] < step["head"] / 4


def test_works_with_staged_unfreezing(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="all", bn="frozen")
    model.compile(discriminative(keras.optimizers.Adam(1e-2), decay=4.0),
                  "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=50, verbose=0,
              callbacks=[StagedUnfreezing([(0, "head"), (1, "all")], verbose=0)])
    opt = model.optimizer
    assert isinstance(opt, kt.optimizers.DiscriminativeMixin)
    assert isinstance(opt, keras.optimizers.Adam)
    stem = model.backbone.get_layer("stem_conv").kernel
    assert opt.multiplier_of(stem) == pytest.approx(4.0 ** -3)


def test_bad_arguments():
    with pytest.raises(InvalidTypeError, match="Received: optimizer='adam'"):
        discriminative("adam", decay=2.6)
    with pytest.raises(InvalidArgumentError, match="exactly one rule.*Received: decay=2.6"):
        discriminative(keras.optimizers.Adam(), decay=2.6, layer_decay=0.8)
    with pytest.raises(InvalidArgumentError, match="Received: decay=0"):
        discriminative(keras.optimizers.Adam(), decay=0)
    with pytest.raises(InvalidArgumentError, match="Received: multipliers="):
        discriminative(keras.optimizers.Adam(), multipliers={"stem": -1})
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    plain.compile(discriminative(keras.optimizers.Adam(), decay=2.0), "mse")
    with pytest.raises(InvalidArgumentError, match="bound to a model"):
        plain.train_on_batch(np.ones((2, 3)), np.ones((2, 2)))


def _ten_blocks(include_top=False, weights=None, input_shape=(16, 16, 3)):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, padding="same", name="block1_conv")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="block2_conv")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="block10_conv")(x)
    return keras.Model(inputs, x, name="ten_blocks")


@pytest.mark.backend_agnostic
def test_block_keys_match_exactly():
    kt.register_backbone("ten_blocks_test", _ten_blocks,
                         blocks=(("block1", r"^block1_"), ("block2", r"^block2_"),
                                 ("block10", r"^block10_")),
                         preprocessing="tf", default_size=16, min_size=8, has_imagenet=False,
                         overwrite=True)
    model = kt.build_transfer_model("ten_blocks_test", 3, input_shape=(16, 16, 3),
                                    weights=None, freeze="none")
    opt = discriminative(keras.optimizers.Adam(1e-3), multipliers={"block1": 0.1})
    model.compile(opt, "sparse_categorical_crossentropy")
    opt.build(model.trainable_variables)
    kernel = {n: model.backbone.get_layer(f"{n}_conv").kernel for n in ("block1", "block10")}
    assert opt.multiplier_of(kernel["block1"]) == pytest.approx(0.1)
    assert opt.multiplier_of(kernel["block10"]) == pytest.approx(1.0)
    # A pattern, asked for explicitly, reaches across blocks; it survives a config round trip.
    opt = discriminative(keras.optimizers.Adam(1e-3), multipliers={re.compile(r"^block1"): 0.5})
    again = type(opt).from_config(opt.get_config())
    model.compile(again, "sparse_categorical_crossentropy")
    again.build(model.trainable_variables)
    assert again.multiplier_of(kernel["block10"]) == pytest.approx(0.5)
    # A name that is no block is refused, with the names there are.
    with pytest.raises(InvalidArgumentError, match="block10.*Received: multipliers="):
        model.compile(discriminative(keras.optimizers.Adam(), multipliers={"block3": 0.1}),
                      "sparse_categorical_crossentropy")
