"""Freeze policies, BatchNorm modes, kt.freeze on compiled models, trainable_summary."""

import warnings

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.errors import FreezeError, InvalidTypeError
from kertransfer.freezing import (
    Compose,
    FreezeAll,
    FreezeBatchNorm,
    FreezeBlocks,
    FreezeFraction,
    FreezeNone,
    FreezePattern,
    FreezeThrough,
    policy_from_config,
    policy_to_config,
    resolve_policy,
)


def _model(name, **kwargs):
    args = {"input_shape": (16, 16, 3), "weights": None}
    args.update(kwargs)
    return kt.build_transfer_model(name, 4, **args)


def _states(model):
    return {r.block: r.state for r in kt.trainable_summary(model, print_fn=None).rows}


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "freeze, expected",
    [
        ("all", ["frozen", "frozen", "frozen"]),
        ("none", ["trainable", "trainable", "trainable"]),
        (0, ["trainable", "trainable", "trainable"]),
        (2, ["frozen", "frozen", "trainable"]),
        (0.34, ["frozen", "trainable", "trainable"]),
        ("block1", ["frozen", "frozen", "trainable"]),
        ([1, FreezePattern("^block2_conv$")], ["frozen", "trainable", "frozen"]),
    ],
)
def test_policies_freeze_whole_blocks(tiny_backbone_name, freeze, expected):
    model = _model(tiny_backbone_name, freeze=freeze, bn="trainable")
    states = _states(model)
    assert [states[b] for b in ("stem", "block1", "block2")] == expected
    assert states["head"] == "trainable"


@pytest.mark.backend_agnostic
def test_bn_frozen_keeps_every_batchnorm_in_inference(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    for bn, should_move in (("frozen", False), ("trainable", True)):
        model = _model(tiny_backbone_name, freeze="none", bn=bn)
        layer = model.backbone.get_layer("block2_bn")
        assert layer.trainable is should_move
        before = keras.ops.convert_to_numpy(layer.moving_mean).copy()
        conv_before = model.backbone.get_layer("block2_conv").get_weights()[0].copy()
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=1, batch_size=50, verbose=0)
        moved = not np.allclose(keras.ops.convert_to_numpy(layer.moving_mean), before)
        assert moved is should_move
        # The convolution in the unfrozen block trains in both modes.
        assert not np.allclose(model.backbone.get_layer("block2_conv").get_weights()[0],
                               conv_before)
        row = {r.block: r for r in kt.trainable_summary(model, print_fn=None).rows}["block2"]
        assert row.bn == ("training" if should_move else "inference")


@pytest.mark.backend_agnostic
def test_frozen_weights_do_not_change_in_fit(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = _model(tiny_backbone_name, freeze=2, bn="trainable")
    frozen = model.backbone.get_layer("block1_conv").get_weights()[0].copy()
    frozen_bn = model.backbone.get_layer("stem_bn").get_weights()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    np.testing.assert_array_equal(model.backbone.get_layer("block1_conv").get_weights()[0],
                                  frozen)
    for a, b in zip(model.backbone.get_layer("stem_bn").get_weights(), frozen_bn):
        np.testing.assert_array_equal(a, b)


@pytest.mark.backend_agnostic
def test_freeze_on_compiled_model_recompiles(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = _model(tiny_backbone_name, freeze="all")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    kernel = model.backbone.get_layer("stem_conv").get_weights()[0].copy()
    with pytest.warns(UserWarning, match="recompiled"):
        kt.freeze(model, "none")
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    assert not np.allclose(model.backbone.get_layer("stem_conv").get_weights()[0], kernel)


def test_freeze_before_first_fit_needs_no_recompile(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = _model(tiny_backbone_name, freeze="all")
    model.compile("adam", "sparse_categorical_crossentropy")
    opt = model.optimizer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kt.freeze(model, 1)
    assert model.optimizer is opt
    kernel = model.backbone.get_layer("block2_conv").get_weights()[0].copy()
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    assert not np.allclose(model.backbone.get_layer("block2_conv").get_weights()[0], kernel)


def test_freeze_without_recompile_warns(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = _model(tiny_backbone_name, freeze="all")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    with pytest.warns(UserWarning, match="compile"):
        kt.freeze(model, "none", recompile=False)


def test_freeze_changes_bn_mode_and_records_policy(tiny_backbone_name):
    model = _model(tiny_backbone_name, freeze="all")
    kt.freeze(model, FreezeBlocks(1) + FreezeBatchNorm(), bn="trainable")
    assert model.bn_mode == "trainable"
    assert not model.backbone.get_layer("block2_bn").trainable  # frozen by the policy
    assert model.backbone.get_layer("block2_conv").trainable
    assert policy_from_config(model.freeze_config) == Compose([FreezeBlocks(1),
                                                               FreezeBatchNorm()])


def test_freeze_rejects_foreign_models():
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(InvalidTypeError, match="build_transfer_model.*Received: model="):
        kt.freeze(plain, "all")


@pytest.mark.parametrize(
    "policy",
    [FreezeAll(), FreezeNone(), FreezeBlocks(3), FreezeFraction(0.5), FreezeThrough("stage2"),
     FreezeBatchNorm(), FreezePattern("conv$"), Compose([FreezeBlocks(1), FreezePattern("x")])],
)
def test_policy_config_round_trip(policy):
    assert policy_from_config(policy_to_config(policy)) == policy


@pytest.mark.parametrize(
    "value, pattern",
    [
        (True, "cannot be a bool.*Received: freeze=True"),
        (-1, "non-negative.*Received: freeze=-1"),
        (1.5, r"\[0, 1\].*Received: freeze=1.5"),
    ],
)
def test_bad_shorthands(value, pattern):
    with pytest.raises(FreezeError, match=pattern):
        resolve_policy(value)
    with pytest.raises(InvalidTypeError, match="Received: freeze="):
        resolve_policy(object())


def test_trainable_summary_table(tiny_backbone_name, capsys):
    model = _model(tiny_backbone_name, freeze=1, bn="frozen")
    summary = kt.trainable_summary(model)
    printed = capsys.readouterr().out
    n = len(model.block_names)
    assert f"bottom 1 of {n} blocks frozen (through stem)" in printed and "bn=frozen" in printed
    rows = {r.block: r for r in summary.rows}
    assert rows["stem"].trainable_params == 0 and rows["stem"].state == "frozen"
    conv = model.backbone.get_layer("block1_conv")
    assert rows["block1"].trainable_params == sum(int(np.prod(w.shape)) for w in conv.weights)
    assert rows["block1"].bn == "inference"
    assert summary.trainable_params == sum(int(np.prod(w.shape))
                                           for w in model.trainable_weights)
    assert summary.to_dict()["blocks"][0]["block"] == "stem"


def test_trainable_summary_reads_what_is_frozen_from_the_layers(tiny_backbone_name):
    model = _model(tiny_backbone_name, freeze="none")
    text = lambda: kt.trainable_summary(model, print_fn=None).frozen_text  # noqa: E731
    assert text() == "all blocks train"
    kt.freeze(model, "all")
    assert text() == "all blocks frozen"
    # Flags set by hand count, though the stored policy still says "all".
    model.backbone.trainable = True
    for layer in model.backbone.layers:
        layer.trainable = not layer.name.startswith("block1")
    assert model.freeze_config["class_name"] == "FreezeAll"
    assert text() == "frozen: block1"


def test_no_gradient_is_computed_for_frozen_variables(tiny_backbone_name, tiny_data,
                                                      monkeypatch):
    import tensorflow as tf

    x, y = tiny_data
    model = _model(tiny_backbone_name, freeze=2, bn="frozen")
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  run_eagerly=True)
    asked = []
    gradient = tf.GradientTape.gradient

    def spy(self, target, sources, *args, **kwargs):
        asked.append([v.path for v in tf.nest.flatten(sources)])
        return gradient(self, target, sources, *args, **kwargs)

    monkeypatch.setattr(tf.GradientTape, "gradient", spy)
    model.fit(x[:32], y[:32], epochs=1, batch_size=32, verbose=0)
    frozen = {v.path for layer, off in zip(kt.freezing.block_context(model).layers,
                                           kt.freezing.block_context(model).block_of)
              if off < 2 for v in layer.weights}
    bn = {v.path for v in model.backbone.weights if "_bn" in v.path}
    assert frozen and asked == [[v.path for v in model.trainable_variables]]
    assert not (set(asked[0]) & (frozen | bn))
