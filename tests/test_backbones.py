"""Backbone registry, specs, block assignment and preprocessing."""

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.backbones import check_blocks, group_layers
from kertransfer.backbones.blocks import assign_blocks, blocks_from_model
from kertransfer.errors import InvalidArgumentError, KertransferError, UnknownBackboneError
from kertransfer.models import Preprocess

REQUIRED = (
    ["mobilenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]
    + [f"efficientnet_b{i}" for i in range(8)]
    + [f"efficientnet_v2_{k}" for k in ("b0", "b1", "b2", "b3", "s", "m", "l")]
    + ["resnet50", "resnet101", "resnet152", "resnet50_v2", "resnet101_v2", "resnet152_v2"]
    + ["densenet121", "densenet169", "densenet201", "xception", "inception_v3",
       "inception_resnet_v2"]
    + [f"convnext_{s}" for s in ("tiny", "small", "base", "large", "xlarge")]
    + ["vgg16", "vgg19", "nasnet_mobile", "nasnet_large"]
)
APPLICATIONS = [n for n in kt.list_backbones()
                if kt.get_backbone_spec(n).family not in ("custom", "sequence")]


def test_every_keras_application_is_registered():
    assert set(REQUIRED) <= set(kt.list_backbones())
    ctor_names = {kt.get_backbone_spec(n).constructor.rsplit(".", 1)[-1] for n in APPLICATIONS}
    public = {n for n in dir(keras.applications) if n[0].isupper()}
    assert public <= ctor_names


# Deeper members of a family whose block table a smaller member shares (and is
# checked by default); building them all takes minutes, so they run with --run-slow.
DEEPER = {f"efficientnet_b{i}" for i in range(1, 8)} | {
    "efficientnet_v2_b1", "efficientnet_v2_b2", "efficientnet_v2_b3", "efficientnet_v2_s",
    "efficientnet_v2_l", "convnext_small", "convnext_base", "convnext_large", "convnext_xlarge",
    "densenet169", "densenet201", "resnet101", "resnet152", "resnet101_v2", "resnet152_v2",
    "vgg19"} | {f"efficientnet_lite{i}" for i in range(1, 5)}


def _table(name):
    spec = kt.get_backbone_spec(name)
    return spec.family, tuple(spec.blocks), spec.unmatched


def test_deeper_members_share_a_block_table_checked_by_default():
    default = {_table(n) for n in APPLICATIONS if n not in DEEPER}
    assert set(APPLICATIONS) >= DEEPER
    assert all(_table(n) in default for n in DEEPER)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in DEEPER else n for n in APPLICATIONS])
def test_backbone_builds_and_blocks_cover_layers_in_order(name):
    spec = kt.get_backbone_spec(name)
    size = max(spec.min_size, 32)
    net = spec.construct((size, size, 3), weights=None)
    check_blocks(net.layers, spec.blocks, spec.unmatched)
    index = assign_blocks(net.layers, spec.blocks, spec.unmatched)
    assert len(index) == len(net.layers)
    assert index == sorted(index), "layers must be assigned to blocks in order"
    assert set(index) == set(range(len(spec.blocks))), "every block gets layers"
    groups = group_layers(net.layers, spec.blocks, spec.unmatched)
    assert sum(len(g) for _, g in groups) == len(net.layers)
    # Every layer with weights lands in a block (none left over).
    assigned = {id(layer) for _, layers in groups for layer in layers}
    assert all(id(layer) in assigned for layer in net.layers if layer.weights)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(UnknownBackboneError, match=r"resnet50.*Received: backbone='resnet5O'"):
        kt.get_backbone_spec("resnet5O")
    with pytest.raises(KertransferError, match=r"Did you mean 'efficientnet_b\d'"):
        kt.build_transfer_model("efficientnet-bo", num_classes=3, weights=None)


def test_list_backbones_filters():
    assert kt.list_backbones("convnext_*") == sorted(
        f"convnext_{s}" for s in ("tiny", "small", "base", "large", "xlarge"))
    assert set(kt.list_backbones(family="densenet")) == {"densenet121", "densenet169",
                                                         "densenet201"}


def test_register_backbone_rejects_duplicates_and_bad_specs(tiny_backbone_name):
    from testing import tiny_cnn_ctor

    with pytest.raises(InvalidArgumentError, match="already registered.*Received: name="):
        kt.register_backbone(tiny_backbone_name, tiny_cnn_ctor(), blocks=[("a", "x")])
    with pytest.raises(KertransferError, match="Received: blocks="):
        kt.register_backbone("no_blocks", tiny_cnn_ctor(), blocks=[])
    with pytest.raises(KertransferError, match="Received: constructor="):
        kt.register_backbone("not_callable", 42, blocks=[("a", "x")])


def test_block_patterns_out_of_order_are_rejected():
    from conftest import tiny_cnn

    net = tiny_cnn()
    with pytest.raises(InvalidArgumentError, match="comes after"):
        check_blocks(net.layers, [("b1", "^block1_"), ("stem", "^stem_")])
    with pytest.raises(InvalidArgumentError, match="match no layer"):
        check_blocks(net.layers, [("stem", "^stem_"), ("ghost", "^ghost_")])
    with pytest.raises(InvalidArgumentError, match="several blocks"):
        check_blocks(net.layers, [("a", "conv"), ("b", "block1_conv")])


def test_unmatched_layers_follow_the_rule():
    from conftest import TINY_BLOCKS, tiny_cnn

    net = tiny_cnn()
    names = [layer.name for layer in net.layers]
    prev = dict(zip(names, assign_blocks(net.layers, TINY_BLOCKS, "previous")))
    nxt = dict(zip(names, assign_blocks(net.layers, TINY_BLOCKS, "next")))
    relu = [n for n in names if n.startswith("re_lu")][0]  # auto-named, after block1_bn
    assert prev[relu] == 1 and nxt[relu] == 2
    assert prev[names[0]] == 0 and nxt[names[0]] == 0  # the input joins the first block


def test_custom_model_blocks_rule():
    from conftest import tiny_cnn

    blocks = blocks_from_model(tiny_cnn())
    # One block per layer with weights, except normalization layers.
    assert [b for b, _ in blocks] == ["stem_conv", "block1_conv", "block2_conv"]
    flat = keras.Sequential([keras.Input((4,)), keras.layers.Activation("relu")])
    with pytest.raises(InvalidArgumentError, match="no layer with weights"):
        blocks_from_model(flat)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "mode, reference",
    [
        ("caffe", keras.applications.vgg16.preprocess_input),
        ("tf", keras.applications.mobilenet_v2.preprocess_input),
        ("torch", keras.applications.densenet.preprocess_input),
    ],
)
def test_preprocess_matches_keras_applications(mode, reference):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = reference(x.copy())
    got = keras.ops.convert_to_numpy(Preprocess(mode)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_builtin_preprocessing_lives_in_the_backbone():
    # EfficientNet, ConvNeXt and MobileNetV3 rescale inside; kertransfer adds nothing.
    for name in ("efficientnet_b0", "convnext_tiny", "mobilenet_v3_small", "efficientnet_v2_b0"):
        assert kt.get_backbone_spec(name).preprocessing == "builtin"
    net = kt.get_backbone_spec("mobilenet_v3_small").construct((32, 32, 3))
    assert any(isinstance(layer, keras.layers.Rescaling) for layer in net.layers)
