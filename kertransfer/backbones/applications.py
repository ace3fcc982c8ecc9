"""The ``keras.applications`` backbones, as a table of specs.

Each family gets one function that turns its depth parameters into ordered
block patterns; the table below is data. Blocks are stages where a family has
stages (ResNet, DenseNet, EfficientNet, ConvNeXt), and single blocks where the
family is a flat chain of them (MobileNet, Xception).
"""

from __future__ import annotations

from kertransfer.backbones.spec import BackboneSpec

_APPS = "keras.applications."


def _numbered(prefix_fmt: str, ids, name_fmt: str) -> list[tuple[str, str]]:
    return [(name_fmt.format(i), prefix_fmt.format(i)) for i in ids]


def _vgg(n_blocks: int = 5):
    return _numbered(r"^block{}_", range(1, n_blocks + 1), "block{}")


def _resnet():
    return [("stem", r"^(conv1_|pool1_)")] + _numbered(r"^conv{}_", range(2, 6), "conv{}")


def _resnet_v2():
    return _resnet() + [("top", r"^post_")]


def _densenet():
    return (
        [("stem", r"^(conv1_|pool1$)")]
        + _numbered(r"^(conv{0}_|pool{0}_)", range(2, 5), "dense{}")
        + [("dense5", r"^conv5_"), ("top", r"^(bn|relu)$")]
    )


def _mobilenet():
    return [("stem", r"^conv1(_bn|_relu)?$")] + _numbered(
        r"^conv_(pad|dw|pw)_{}(_|$)", range(1, 14), "block{}"
    )


def _mobilenet_v2():
    return (
        [("stem", r"^(Conv1|bn_Conv1|Conv1_relu|expanded_conv_\w+)$")]
        + _numbered(r"^block_{}_", range(1, 17), "block{}")
        + [("top", r"^(Conv_1|Conv_1_bn|out_relu)$")]
    )


def _mobilenet_v3(n_blocks: int):
    return (
        [("stem", r"^conv(_bn)?$"), ("block0", r"^expanded_conv_(depthwise|squeeze|project|add)")]
        + _numbered(r"^expanded_conv_{}_", range(1, n_blocks + 1), "block{}")
        + [("top", r"^conv_1(_bn)?$")]
    )


def _efficientnet(n_stages: int):
    return (
        [("stem", r"^stem_")]
        + _numbered(r"^block{}[a-z]+_", range(1, n_stages + 1), "block{}")
        + [("top", r"^top_")]
    )


def _convnext():
    # The final LayerNormalization is auto-named and joins stage 3.
    return [
        ("stem", r"_(prestem_normalization|stem)$"),
        ("stage0", r"_stage_0_"),
        ("stage1", r"(_downsampling_block_0|_stage_1_)"),
        ("stage2", r"(_downsampling_block_1|_stage_2_)"),
        ("stage3", r"(_downsampling_block_2|_stage_3_)"),
    ]


def _xception():
    return _numbered(r"^block{}_", range(1, 15), "block{}")


def _inception_v3():
    # Inception's branch layers are auto-named; each block is closed by its
    # named concatenation (``unmatched="next"``). The stem joins mixed0.
    return _numbered(r"^mixed{}$", range(0, 11), "mixed{}")


def _inception_resnet_v2():
    return [
        ("mixed_5b", r"^mixed_5b$"),
        ("block35", r"^block35_"),
        ("mixed_6a", r"^mixed_6a$"),
        ("block17", r"^block17_"),
        ("mixed_7a", r"^mixed_7a$"),
        ("block8", r"^block8_"),
        ("top", r"^conv_7b"),
    ]


def _nasnet(n_cells: int):
    # A cell also "adjusts" the output of the cell two back; those auto-placed
    # adjust_* layers interleave with the previous cell, so they are left
    # unmatched and join the next matched layer (the cell they feed).
    def cells(ids):
        alt = "|".join(str(i) for i in ids)
        return rf"^(?!.*_(stem|reduce)_\d+$)(normal|separable_conv)_.*_({alt})$"

    n = n_cells
    return [
        ("stem", r"(^stem_|_stem_[12]$)"),
        ("cells1", cells(range(0, n))),
        ("reduce1", rf"_reduce_{n}$"),
        ("cells2", cells(range(n + 1, 2 * n + 1))),
        ("reduce2", rf"_reduce_{2 * n}$"),
        ("cells3", cells(range(2 * n + 1, 3 * n + 1))),
    ]


_EFFNET_SIZES = {0: 224, 1: 240, 2: 260, 3: 300, 4: 380, 5: 456, 6: 528, 7: 600}
_EFFNETV2 = {
    "b0": ("EfficientNetV2B0", 224, 6),
    "b1": ("EfficientNetV2B1", 240, 6),
    "b2": ("EfficientNetV2B2", 260, 6),
    "b3": ("EfficientNetV2B3", 300, 6),
    "s": ("EfficientNetV2S", 384, 6),
    "m": ("EfficientNetV2M", 480, 7),
    "l": ("EfficientNetV2L", 480, 7),
}


def application_specs() -> list[BackboneSpec]:
    """Return the spec of every ``keras.applications`` constructor."""
    specs = [
        BackboneSpec("vgg16", _APPS + "VGG16", "caffe", 224, 32, _vgg(), family="vgg"),
        BackboneSpec("vgg19", _APPS + "VGG19", "caffe", 224, 32, _vgg(), family="vgg"),
        BackboneSpec("mobilenet", _APPS + "MobileNet", "tf", 224, 32, _mobilenet(),
                     family="mobilenet"),
        BackboneSpec("mobilenet_v2", _APPS + "MobileNetV2", "tf", 224, 32, _mobilenet_v2(),
                     family="mobilenet"),
        BackboneSpec("mobilenet_v3_small", _APPS + "MobileNetV3Small", "builtin", 224, 32,
                     _mobilenet_v3(10), family="mobilenet",
                     constructor_kwargs={"include_preprocessing": True}),
        BackboneSpec("mobilenet_v3_large", _APPS + "MobileNetV3Large", "builtin", 224, 32,
                     _mobilenet_v3(14), family="mobilenet",
                     constructor_kwargs={"include_preprocessing": True}),
        BackboneSpec("xception", _APPS + "Xception", "tf", 299, 71, _xception(),
                     family="xception"),
        BackboneSpec("inception_v3", _APPS + "InceptionV3", "tf", 299, 75, _inception_v3(),
                     unmatched="next", family="inception"),
        BackboneSpec("inception_resnet_v2", _APPS + "InceptionResNetV2", "tf", 299, 75,
                     _inception_resnet_v2(), unmatched="next", family="inception"),
        BackboneSpec("nasnet_mobile", _APPS + "NASNetMobile", "tf", 224, 32, _nasnet(4),
                     unmatched="next", family="nasnet"),
        BackboneSpec("nasnet_large", _APPS + "NASNetLarge", "tf", 331, 32, _nasnet(6),
                     unmatched="next", family="nasnet"),
    ]
    for depth in (50, 101, 152):
        specs.append(BackboneSpec(f"resnet{depth}", _APPS + f"ResNet{depth}", "caffe", 224, 32,
                                  _resnet(), family="resnet"))
    for depth in (50, 101, 152):
        specs.append(BackboneSpec(f"resnet{depth}_v2", _APPS + f"ResNet{depth}V2", "tf", 224,
                                  32, _resnet_v2(), family="resnet_v2"))
    for depth in (121, 169, 201):
        specs.append(BackboneSpec(f"densenet{depth}", _APPS + f"DenseNet{depth}", "torch", 224,
                                  32, _densenet(), family="densenet"))
    for i, size in _EFFNET_SIZES.items():
        n_stages = 7
        specs.append(BackboneSpec(f"efficientnet_b{i}", _APPS + f"EfficientNetB{i}", "builtin",
                                  size, 32, _efficientnet(n_stages), family="efficientnet"))
    for key, (ctor, size, n_stages) in _EFFNETV2.items():
        specs.append(BackboneSpec(f"efficientnet_v2_{key}", _APPS + ctor, "builtin", size, 32,
                                  _efficientnet(n_stages), family="efficientnet_v2",
                                  constructor_kwargs={"include_preprocessing": True}))
    for size in ("tiny", "small", "base", "large", "xlarge"):
        specs.append(BackboneSpec(f"convnext_{size}", _APPS + f"ConvNeXt{size.capitalize()}"
                                  if size != "xlarge" else _APPS + "ConvNeXtXLarge",
                                  "builtin", 224, 32, _convnext(), family="convnext",
                                  constructor_kwargs={"include_preprocessing": True}))
    return specs
