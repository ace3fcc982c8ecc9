"""Which layers land in which block, for every backbone family of the registry.

Each family's representative is built (``weights=None``, smallest input) and checked:

- named sentinel layers (taken from the built models) land in the expected block, and
  freezing by depth counts that block (``freeze=k`` freezes it exactly when k reaches it);
- every layer lands in exactly one block; a layer no pattern matches is auto-named (its
  name depends on Keras' global counters) or one of the few named ones listed here;
- blocks are contiguous in layer order, no graph edge runs from a higher block down to a
  lower one (so freezing the bottom k blocks freezes a prefix of the network), and every
  unmatched layer that owns weights lands in the block the graph puts it in;
- block names are not regexes: ``block1`` is not ``block10`` (design page, trap 14).

Sentinels may name a layer (``"conv5_block3_out"``) or, for auto-named layers, a class
and its position among the layers of that class (``"Rescaling#0"``, ``"Conv2D#-1"``).
"""

from __future__ import annotations

import re
import types
from collections import Counter

import keras
import pytest

import kertransfer as kt
from kertransfer.backbones import assign_blocks, group_layers
from kertransfer.backbones.blocks import match_layers
from kertransfer.backbones.sequence import sequence_blocks, transformer_encoder
from kertransfer.freezing.policies import FreezeBlocks, FreezeThrough
from kertransfer.freezing.protocol import block_context
from kertransfer.optimizers import discriminative

# Building a keras.applications network takes 10-30 times longer under JAX (every
# initializer is compiled), so only the checks that build little run in the JAX
# session; all of them pass under KERAS_BACKEND=jax too.
agnostic = pytest.mark.backend_agnostic


class Rep:
    """What a representative backbone promises.

    Args:
        sentinels: ``{layer name or "Class#i": block name}``.
        named_unmatched: Regex of the named layers no block pattern matches (they
            join a block by the ``unmatched`` rule); every other unmatched layer is
            auto-named.
        weightless_strays: Weightless unmatched layers that land outside the block
            the graph puts them in (a name, or the class name of an auto-named one).
        input_shape: Instead of the smallest image (or time-series) input.
        slow: A larger family member, built only with --run-slow.
    """

    def __init__(self, sentinels, named_unmatched=None, weightless_strays=(),
                 input_shape=None, slow=False):
        self.sentinels = dict(sentinels)
        self.named_unmatched = named_unmatched
        self.weightless_strays = sorted(weightless_strays)
        self.input_shape = input_shape
        self.slow = slow


# NASNet's cells "adjust" the output of the cell two back; the ReLU and the
# padding/cropping of that path are listed before the closing concatenation of the
# previous cell (stem, reduce1, reduce2), so unmatched="next" leaves them there while
# the convolutions and BatchNorm they feed join the cell. They own no weights.
_NASNET_STRAYS = ["Cropping2D"] * 3 + ["ZeroPadding2D"] * 3

REPS = {
    "vgg16": Rep({
        "InputLayer#0": "block1", "block1_conv1": "block1", "block1_pool": "block1",
        "block2_conv1": "block2", "block4_pool": "block4", "block5_conv3": "block5",
        "block5_pool": "block5",
    }),
    "resnet50": Rep({
        "conv1_pad": "stem", "conv1_conv": "stem", "pool1_pool": "stem",
        "conv2_block1_0_conv": "conv2",  # the projection shortcut of the stage
        "conv2_block1_1_conv": "conv2", "conv2_block3_out": "conv2",
        "conv3_block1_0_conv": "conv3", "conv4_block6_out": "conv4",
        "conv5_block1_1_conv": "conv5", "conv5_block3_out": "conv5",
    }),
    "resnet50_v2": Rep({
        "conv1_conv": "stem", "pool1_pool": "stem",
        "conv2_block1_preact_bn": "conv2", "conv2_block3_out": "conv2",
        # The stride-2 shortcut of each stage's last unit is an auto-named MaxPooling2D.
        "MaxPooling2D#1": "conv2", "MaxPooling2D#2": "conv3", "MaxPooling2D#3": "conv4",
        "conv3_block1_preact_bn": "conv3", "conv5_block3_out": "conv5",
        "post_bn": "top", "post_relu": "top",
    }),
    "densenet121": Rep({
        "ZeroPadding2D#0": "stem", "conv1_conv": "stem", "pool1": "stem",
        "conv2_block1_0_bn": "dense2", "conv2_block6_concat": "dense2",
        # A transition layer closes the dense block before it.
        "pool2_conv": "dense2", "pool2_pool": "dense2",
        "conv3_block1_0_bn": "dense3", "pool4_pool": "dense4",
        "conv5_block1_0_bn": "dense5", "conv5_block16_concat": "dense5",
        "bn": "top", "relu": "top",
    }),
    "mobilenet": Rep({
        "conv1": "stem", "conv1_relu": "stem",
        "conv_dw_1": "block1", "conv_pw_1_relu": "block1", "conv_pad_2": "block2",
        "conv_dw_10": "block10", "conv_pw_12_bn": "block12",
        "conv_dw_13": "block13", "conv_pw_13_relu": "block13",
    }),
    "mobilenet_v2": Rep({
        "Conv1": "stem", "bn_Conv1": "stem", "expanded_conv_depthwise": "stem",
        "expanded_conv_project_BN": "stem",
        "block_1_expand": "block1", "block_1_pad": "block1", "block_1_project_BN": "block1",
        "block_10_expand": "block10", "block_16_project_BN": "block16",
        "Conv_1": "top", "out_relu": "top",
    }),
    "mobilenet_v3_small": Rep({
        "Rescaling#0": "stem", "conv": "stem", "conv_bn": "stem",
        "Activation#0": "stem",  # the stem's hard-swish, auto-named
        "expanded_conv_depthwise": "block0", "expanded_conv_squeeze_excite_mul": "block0",
        "expanded_conv_project_bn": "block0",
        "expanded_conv_1_expand": "block1", "expanded_conv_1_project": "block1",
        "expanded_conv_10_expand": "block10", "expanded_conv_10_add": "block10",
        "conv_1": "top", "conv_1_bn": "top", "Activation#-1": "top",
    }),
    # Block 0 of the large model has a residual add; block0's pattern names it.
    "mobilenet_v3_large": Rep({
        "conv": "stem", "Activation#0": "stem", "expanded_conv_depthwise": "block0",
        "expanded_conv_add": "block0",
        "expanded_conv_1_expand": "block1", "expanded_conv_10_expand": "block10",
        "expanded_conv_14_add": "block14", "conv_1": "top", "Activation#-1": "top",
    }),
    "xception": Rep({
        "block1_conv1": "block1", "block1_conv2_act": "block1",
        "block2_sepconv1": "block2", "block2_pool": "block2",
        # The auto-named 1x1 shortcut convolutions land in the block they bypass.
        "Conv2D#2": "block2", "Conv2D#3": "block3", "Conv2D#4": "block4",
        "Conv2D#-1": "block13", "Add#-1": "block13",
        "block10_sepconv1_act": "block10", "block13_pool": "block13",
        "block14_sepconv2_act": "block14",
    }),
    # Branch layers are auto-named; a block is closed by its named concatenation, and
    # the stem joins the first block.
    "inception_v3": Rep({
        "Conv2D#0": "mixed0", "MaxPooling2D#0": "mixed0", "mixed0": "mixed0",
        "mixed1": "mixed1", "mixed9_0": "mixed9", "mixed9": "mixed9",
        "mixed9_1": "mixed10",  # named after mixed9, inside the mixed10 module
        "mixed10": "mixed10", "Conv2D#-1": "mixed10",
    }, named_unmatched=r"^mixed9_[01]$"),
    "inception_resnet_v2": Rep({
        "Conv2D#0": "mixed_5b", "mixed_5b": "mixed_5b",
        "block35_1_mixed": "block35", "block35_10_ac": "block35", "mixed_6a": "mixed_6a",
        "block17_1_conv": "block17", "block17_20_ac": "block17", "mixed_7a": "mixed_7a",
        "block8_1_mixed": "block8", "block8_10_conv": "block8",
        "conv_7b": "top", "conv_7b_ac": "top",
    }),
    "nasnet_mobile": Rep({
        "stem_conv1": "stem", "reduction_concat_stem_1": "stem",
        "separable_conv_1_reduction_left1_stem_2": "stem", "reduction_concat_stem_2": "stem",
        # adjust_* layers are unmatched and join the cell they feed.
        "adjust_conv_1_0": "cells1", "adjust_bn_0": "cells1",
        "normal_conv_1_0": "cells1", "normal_conv_1_1": "cells1", "normal_concat_3": "cells1",
        "adjust_conv_projection_reduce_4": "reduce1", "reduction_concat_reduce_4": "reduce1",
        "adjust_conv_1_5": "cells2", "separable_conv_1_normal_left1_8": "cells2",
        # Ends in _8 like cell 8's layers, but belongs to the reduction cell after it.
        "separable_conv_1_reduction_left1_reduce_8": "reduce2",
        "normal_conv_1_9": "cells3", "normal_conv_1_11": "cells3",
        "normal_concat_12": "cells3",
    }, named_unmatched=r"^adjust_(?!.*_(stem|reduce)_\d+$)",
        weightless_strays=_NASNET_STRAYS + ["adjust_relu_1_0", "adjust_relu_1_5",
                                            "adjust_relu_1_9"]),
    "nasnet_large": Rep({
        "stem_conv1": "stem", "adjust_conv_1_0": "cells1", "normal_conv_1_1": "cells1",
        "normal_conv_1_5": "cells1", "reduction_concat_reduce_6": "reduce1",
        "adjust_conv_1_7": "cells2", "normal_conv_1_11": "cells2",
        "separable_conv_1_normal_left1_12": "cells2",
        "separable_conv_1_reduction_left1_reduce_12": "reduce2",
        "normal_conv_1_13": "cells3", "normal_conv_1_18": "cells3",
    }, named_unmatched=r"^adjust_(?!.*_(stem|reduce)_\d+$)",
        weightless_strays=_NASNET_STRAYS + ["adjust_relu_1_0", "adjust_relu_1_13",
                                            "adjust_relu_1_7"], slow=True),
    "efficientnet_b0": Rep({
        "Rescaling#0": "stem", "Normalization#0": "stem", "stem_conv": "stem",
        "stem_activation": "stem", "block1a_dwconv": "block1", "block1a_project_bn": "block1",
        "block2a_expand_conv": "block2", "block2b_add": "block2", "block6d_add": "block6",
        "block7a_project_bn": "block7", "top_conv": "top", "top_activation": "top",
    }),
    "efficientnet_v2_b0": Rep({
        "Rescaling#0": "stem", "stem_conv": "stem", "block1a_project_conv": "block1",
        "block2a_expand_conv": "block2", "block6a_expand_conv": "block6",
        "block6h_add": "block6", "top_conv": "top", "top_activation": "top",
    }),
    "efficientnet_v2_m": Rep({
        "Rescaling#0": "stem", "stem_conv": "stem", "block1a_project_conv": "block1",
        "block6a_expand_conv": "block6", "block7a_expand_conv": "block7",
        "block7e_add": "block7", "top_conv": "top",
    }, slow=True),
    "convnext_tiny": Rep({
        "convnext_tiny_prestem_normalization": "stem", "convnext_tiny_stem": "stem",
        "convnext_tiny_stage_0_block_0_depthwise_conv": "stage0",
        "convnext_tiny_stage_0_block_2_identity": "stage0",
        "convnext_tiny_downsampling_block_0": "stage1",
        "convnext_tiny_stage_1_block_0_depthwise_conv": "stage1",
        "convnext_tiny_downsampling_block_1": "stage2",
        "convnext_tiny_downsampling_block_2": "stage3",
        "convnext_tiny_stage_3_block_2_identity": "stage3",
        "LayerNormalization#-1": "stage3",  # the final, auto-named normalization
    }),
    "efficientnet_lite0": Rep({
        "InputLayer#0": "stem", "stem_conv": "stem", "stem_activation": "stem",
        "block1a_dwconv": "block1", "block2a_expand_conv": "block2",
        "block7a_project_bn": "block7", "top_conv": "top", "top_activation": "top",
    }),
    "lstm": Rep({"stem_projection": "stem", "layer0_lstm": "layer0",
                 "layer1_lstm": "layer1"}),
    "gru": Rep({"stem_projection": "stem", "layer0_gru": "layer0", "layer1_gru": "layer1"}),
    "transformer": Rep({
        "stem_embedding": "stem", "stem_positions": "stem",
        "layer0_attention": "layer0", "layer0_norm2": "layer0",
        "layer1_attention": "layer1", "layer1_add2": "layer1", "layer1_norm2": "layer1",
    }, input_shape=(1,)),  # token ids
}


def _param(name):
    marks = [pytest.mark.slow] if REPS[name].slow else []
    if kt.get_backbone_spec(name).inputs == "sequence":  # small, and kertransfer's own
        marks.append(agnostic)
    return pytest.param(name, marks=marks)


NAMES = [_param(name) for name in REPS]


def _table(spec):
    return spec.family, spec.blocks, spec.unmatched


# -- building ------------------------------------------------------------------------

def _build(name):
    """``(network, blocks, unmatched)`` of a registered backbone at its smallest input."""
    spec = kt.get_backbone_spec(name)
    shape = REPS[name].input_shape
    if shape is None:
        shape = ((spec.min_size, 1) if spec.inputs == "sequence"
                 else (spec.min_size, spec.min_size, 3))
    return spec.construct(shape, weights=None), spec.blocks, spec.unmatched


def _as_transfer_model(net, blocks, unmatched):
    """The transfer-model protocol over a bare backbone, as freezing reads it."""
    return types.SimpleNamespace(backbone=net, block_patterns=tuple(blocks),
                                 unmatched=unmatched, layers=[net])


def _layer(net, key):
    if "#" in key:
        cls, i = key.split("#")
        of_class = [layer for layer in net.layers if type(layer).__name__ == cls]
        assert of_class, f"{net.name} has no {cls} layer"
        return of_class[int(i)]
    return net.get_layer(key)


def _auto_named(layer) -> bool:
    """Whether the layer carries Keras' automatic name (class in snake case + counter)."""
    snake = re.sub(r"\W+", "", type(layer).__name__)
    snake = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", snake)
    snake = re.sub("([a-z])([A-Z])", r"\1_\2", snake).lower()
    return re.fullmatch(re.escape(snake) + r"(_\d+)?", layer.name) is not None


def _layer_parents(net) -> list[set[int]]:
    """For each layer, the indices of the layers whose outputs it reads (through ops)."""
    index = {id(layer): i for i, layer in enumerate(net.layers)}
    parents = []
    for layer in net.layers:
        found, seen = set(), set()
        stack = [t for node in layer._inbound_nodes for t in node.input_tensors]
        while stack:
            op, node_index, _ = stack.pop()._keras_history
            if id(op) in index:
                found.add(index[id(op)])
            elif (id(op), node_index) not in seen:  # an op such as x + 3: look through it
                seen.add((id(op), node_index))
                stack.extend(op._inbound_nodes[node_index].input_tensors)
        parents.append(found)
    return parents


def _graph_blocks(matched, parents, num_blocks, unmatched) -> list[int]:
    """The block of each layer as the graph says.

    ``"previous"``: an unmatched layer belongs with the layers it reads and with the
    named layers that read the same inputs (a shortcut beside its block's main path).
    ``"next"``: with the layers that read it (a branch of the module it feeds).
    """
    n = len(matched)
    children = [set() for _ in range(n)]
    for c, ps in enumerate(parents):
        for p in ps:
            children[p].add(c)
    out = list(matched)
    if unmatched == "previous":
        for i in range(n):
            if matched[i] is None:
                siblings = {matched[s] for p in parents[i] for s in children[p]
                            if matched[s] is not None}
                near = {out[p] for p in parents[i]} | siblings
                out[i] = max(near) if near else 0
    else:
        for i in range(n - 1, -1, -1):
            if matched[i] is None:
                near = {out[c] for c in children[i]}
                out[i] = min(near) if near else num_blocks - 1
    return out


# -- the checks, one function each ---------------------------------------------------

def check_sentinels(name, net, blocks, unmatched):
    """Named layers land in their block, and freezing by depth or name counts it."""
    sentinels = REPS[name].sentinels
    ctx = block_context(_as_transfer_model(net, blocks, unmatched))
    position = {id(layer): i for i, layer in enumerate(ctx.layers)}
    got = {key: ctx.block_names[ctx.block_of[position[id(_layer(net, key))]]]
           for key in sentinels}
    assert got == sentinels
    # freeze=k freezes a sentinel of the k-th block (from 1), freeze=k-1 leaves it
    # trainable; freezing through its block by name freezes it, through the one below not.
    for key, block in sentinels.items():
        k = ctx.block_names.index(block) + 1
        i = position[id(_layer(net, key))]
        assert FreezeBlocks(k).frozen(ctx)[i] and not FreezeBlocks(k - 1).frozen(ctx)[i], key
        assert FreezeThrough(block).frozen(ctx)[i], key
        if k > 1:
            assert not FreezeThrough(ctx.block_names[k - 2]).frozen(ctx)[i], key


def check_partition(name, net, blocks, unmatched):
    """Each layer is in exactly one block; unmatched layers are auto-named or listed."""
    groups = group_layers(net.layers, blocks, unmatched)
    count = Counter(id(layer) for _, members in groups for layer in members)
    assert len(count) == len(net.layers) and set(count.values()) == {1}
    assert [block for block, members in groups if not members] == [], "empty blocks"
    matched = match_layers(net.layers, blocks)  # raises for a name two patterns match
    documented = REPS[name].named_unmatched if name in REPS else None
    named = {layer.name for layer, m in zip(net.layers, matched)
             if m is None and not _auto_named(layer)}
    listed = {layer.name for layer in net.layers
              if documented and re.search(documented, layer.name)}
    assert named == listed, "named layers that no block pattern matches"
    # No pattern relies on a counter-dependent name.
    assert [layer.name for layer, m in zip(net.layers, matched)
            if m is not None and _auto_named(layer)] == []


def check_graph(name, net, blocks, unmatched):
    """Blocks are contiguous, follow the graph, and hold the unmatched layers it says."""
    block_of = assign_blocks(net.layers, blocks, unmatched)
    assert block_of == sorted(block_of), "a block's layers are contiguous in layer order"
    parents = _layer_parents(net)
    assert sum(map(len, parents)) >= len(net.layers) - 1  # the graph was found
    backward = [(net.layers[p].name, net.layers[c].name)
                for c, ps in enumerate(parents) for p in ps if block_of[p] > block_of[c]]
    assert backward == [], "an edge runs from a higher block down to a lower one"
    matched = match_layers(net.layers, blocks)
    expected = _graph_blocks(matched, parents, len(blocks), unmatched)
    names = [b for b, _ in blocks]
    strays = [(layer, names[block_of[i]], names[expected[i]])
              for i, layer in enumerate(net.layers) if block_of[i] != expected[i]]
    weighted = [(layer.name, got, want) for layer, got, want in strays if layer.weights]
    assert weighted == [], "layers with weights in another block than the graph's"
    weightless = sorted(type(layer).__name__ if _auto_named(layer) else layer.name
                        for layer, _, _ in strays)
    assert weightless == (REPS[name].weightless_strays if name in REPS else [])


def _prefix_pairs(block_names):
    """Pairs (b, c) of block names where b is a proper prefix of c (block1, block10)."""
    return [(b, c) for b in block_names for c in block_names if b != c and c.startswith(b)]


# Backbones whose layer names carry their block names, so that re.search("block1",
# "block10_sepconv1") would match: the trap of design page item 14 is live there.
LIVE_TRAPS = ("xception", "inception_v3", "transformer(num_layers=11)")


def check_names_are_not_regexes(name, net, blocks, unmatched):
    """Freezing through ``block1`` and a multiplier for ``block1`` leave ``block10`` alone."""
    pairs = _prefix_pairs([b for b, _ in blocks])
    if not pairs:
        return
    model = _as_transfer_model(net, blocks, unmatched)
    ctx = block_context(model)
    members = {b: [] for b in ctx.block_names}
    for layer, b in zip(ctx.layers, ctx.block_of):
        members[ctx.block_names[b]].append(layer)
    shorts = {short for short, _ in pairs}
    for short, long in pairs:
        assert ctx.block_names.index(long) > ctx.block_names.index(short)
        frozen = dict(zip(map(id, ctx.layers), FreezeThrough(short).frozen(ctx)))
        assert members[short] and all(frozen[id(layer)] for layer in members[short])
        assert members[long] and not any(frozen[id(layer)] for layer in members[long]), long
    optimizer = discriminative(keras.optimizers.SGD(0.1), multipliers=dict.fromkeys(shorts, 0.5))
    rate = optimizer.bind_model(model)
    for short, long in pairs:
        assert {rate[v.path] for layer in members[short] for v in layer.weights} == {0.5}
        if long not in shorts:
            assert {rate[v.path] for layer in members[long] for v in layer.weights} == {1.0}
    live = [layer.name for short, long in pairs for layer in members[long]
            if re.search(short, layer.name)]
    assert bool(live) == (name in LIVE_TRAPS), live[:3]


CHECKS = (check_sentinels, check_partition, check_graph, check_names_are_not_regexes)


def _run_checks(name, net, blocks, unmatched, checks=CHECKS):
    """Run every check; report all that fail, not just the first."""
    failures = []
    for check in checks:
        try:
            check(name, net, blocks, unmatched)
        except AssertionError as exc:
            failures.append(f"{check.__name__}: {exc}")
    assert not failures, f"{name}:\n" + "\n\n".join(failures)


# -- the tests ------------------------------------------------------------------------

@agnostic
def test_every_family_and_block_table_has_a_representative():
    specs = [kt.get_backbone_spec(n) for n in kt.list_backbones()]
    specs = [s for s in specs if s.family != "custom"]  # users' (and other tests') own
    reps = [kt.get_backbone_spec(name) for name in REPS]
    missing = sorted({s.family for s in specs} - {s.family for s in reps})
    assert not missing, f"families with no representative in this file: {missing}"
    tables = {_table(s) for s in reps}
    uncovered = sorted(s.name for s in specs if _table(s) not in tables)
    assert not uncovered, f"block tables no representative here shares: {uncovered}"
    for name, rep in REPS.items():  # the sentinels reach both ends of the table
        blocks = kt.get_backbone_spec(name).block_names
        assert {blocks[0], blocks[-1]} <= set(rep.sentinels.values()), name


@pytest.mark.parametrize("name", NAMES)
def test_which_layers_land_in_which_block(name):
    # One test per backbone (built once): Keras' session is cleared after every test,
    # which costs more than the checks.
    _run_checks(name, *_build(name))


@agnostic
def test_deeper_sequence_encoders_keep_layer1_apart_from_layer10():
    name = "transformer(num_layers=11)"
    net = transformer_encoder(input_shape=(2, 1), width=4, num_heads=1, ff_units=4,
                              num_layers=11)
    blocks = sequence_blocks(11)
    where = dict(zip([layer.name for layer in net.layers],
                     assign_blocks(net.layers, blocks, "previous")))
    names = [b for b, _ in blocks]
    assert {key: names[where[key]] for key in ("stem_projection", "layer1_ff1",
                                               "layer10_ff1", "layer10_norm2")} == {
        "stem_projection": "stem", "layer1_ff1": "layer1", "layer10_ff1": "layer10",
        "layer10_norm2": "layer10"}
    _run_checks(name, net, blocks, "previous",
                (check_partition, check_graph, check_names_are_not_regexes))
