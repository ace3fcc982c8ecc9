"""Grad-CAM (Selvaraju et al. 2017): where in an image a transfer model looks for a class.

`grad_cam` splits the model at a convolutional feature map ``A`` (by default
the backbone's output, the last one before pooling), takes the gradient of
the class score (the logit, before softmax) with respect to ``A``, averages
it over space to weigh each channel, and keeps the positive part of the
weighted sum of channels: a coarse map, upsampled to the image. The split is
made from tensors of the model's own graph, so models whose backbone is a
nested ``keras.Model`` (every model of `kertransfer.build_transfer_model`)
work, where ``keras.Model(model.inputs, inner_layer.output)`` fails with
"Graph disconnected". Gradients come from the backend in use (TensorFlow,
JAX or PyTorch).

Classes are numbered as the head's decision rule numbers them
(`kertransfer.models.decisions`): a one-unit sigmoid head has two classes,
negative (0) and positive (1), and by default its single output, the
positive class, is explained; class 0 is explained by the negated logit (the
log-odds of the negative class).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import weakref
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kertransfer._plot import pyplot, save_figure
from kertransfer.data.batches import as_batches, iterate
from kertransfer.data.forms import form_of
from kertransfer.errors import DataError, InvalidArgumentError, format_message, suggest
from kertransfer.freezing.protocol import is_transfer_model
from kertransfer.models.decisions import head_rule
from kertransfer.models.surgery import layers_after
from kertransfer.validation import check_number

__all__ = ["GradCamResult", "grad_cam", "save_overlays"]


@dataclasses.dataclass
class GradCamResult:
    """What `grad_cam` returns.

    Attributes:
        heatmaps: ``[N, height, width]`` in [0, 1], at the images' size.
        coarse: ``[N, h, w]`` the maps at the feature map's resolution.
        class_index: ``[N]`` the class each map explains (for a one-unit
            sigmoid head, 1 is the positive class and 0 the negative one).
        probability: ``[N]`` the model's probability of that class (``p`` or
            ``1 - p`` for a one-unit sigmoid head).
        layer: The feature map's layer.
        paths: The overlay PNGs written (with ``out``).
    """

    heatmaps: np.ndarray
    coarse: np.ndarray
    class_index: np.ndarray
    probability: np.ndarray
    layer: str
    paths: list[pathlib.Path] = dataclasses.field(default_factory=list)


def _spatial(layer) -> bool:
    """Whether ``layer`` has one output ``[batch, h, w, channels]`` with a spatial extent."""
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return False  # several outputs, or never called
    return len(shape) == 4 and all(d is None or d > 1 for d in shape[1:3])


def _conv_layers(network) -> list:
    """The layers of ``network`` with one spatial output ``[batch, h, w, channels]``."""
    return [layer for layer in getattr(network, "layers", []) if _spatial(layer)]


def _pick(candidates: list, layer: str | None, where: str):
    """The feature-map layer: ``layer`` by name, or the last of ``candidates``."""

    if not candidates:
        raise InvalidArgumentError(format_message(
            f"{where} has no layer with a spatial output [batch, h, w, channels].",
            fix="Grad-CAM explains convolutional image classifiers.",
            received={"model": where}))
    if layer is None:
        return candidates[-1]
    named = {item.name: item for item in candidates}
    if layer not in named:
        raise InvalidArgumentError(format_message(
            f"{where} has no layer {layer!r} with a spatial output.",
            fix=suggest(layer, list(named)) or "Leave layer=None for the last feature map.",
            received={"layer": layer}))
    return named[layer]


def _cut(inputs, fmap, outputs, layer: str):
    try:
        return (keras.Model(inputs, fmap, name="to_feature_map"),
                keras.Model(fmap, outputs, name="from_feature_map"))
    except ValueError as err:
        raise InvalidArgumentError(format_message(
            f"The model cannot be cut after {layer!r}: a skip connection crosses it.",
            fix="Pick a layer at the end of a block, or leave layer=None.",
            received={"layer": layer})) from err


def _inputs(model):
    """The model's input tensor (its list, for several): the structure a call passes."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _split_classifier(model, layer: str | None):
    """The split of any functional Keras image classifier, at one of its own layers."""
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise InvalidArgumentError(format_message(
            "grad_cam explains a Keras image classifier built with the functional or "
            "Sequential API (or by kertransfer.build_transfer_model).",
            received={"model": type(model).__name__}))
    chosen = _pick(_conv_layers(model), layer, f"The model {model.name!r}")
    bottom, top = _cut(_inputs(model), chosen.output, model.outputs, chosen.name)
    return bottom, top, chosen.name


def _split(model, layer: str | None):
    """``(bottom, top, layer name)``: images -> feature map, feature map -> outputs."""

    if not is_transfer_model(model):
        return _split_classifier(model, layer)
    backbone = model.backbone
    names = [item.name for item in model.layers]
    at = names.index(backbone.name)
    if layer is None or layer == backbone.name:
        fmap = model.layers[at + 1].input  # the backbone's output, in the model's graph
        if len(fmap.shape) != 4:
            raise InvalidArgumentError(format_message(
                "The backbone's output is not a spatial feature map [batch, h, w, channels].",
                fix="Grad-CAM explains convolutional backbones; name a layer with layer=...",
                received={"backbone output": tuple(fmap.shape)}))
        return (keras.Model(_inputs(model), fmap, name="to_feature_map"),
                keras.Model(fmap, model.output, name="from_feature_map"), backbone.name)
    inner = _pick(_conv_layers(backbone), layer, "The backbone").output
    to_inner, from_inner = _cut(backbone.input, inner, backbone.output, layer)
    bottom = keras.Model(_inputs(model), to_inner(model.layers[at - 1].output),
                         name="to_feature_map")
    inputs = keras.Input(tuple(inner.shape[1:]))
    top = keras.Model(inputs, layers_after(model, backbone.name, from_inner(inputs)),
                      name="from_feature_map")
    return bottom, top, layer


_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached_split(model, layer: str | None):
    """`_split`, made once per model and layer: repeated calls reuse the same two models,
    so nothing is traced again."""
    per_model = _SPLITS.setdefault(model, {})
    if layer not in per_model:
        per_model[layer] = _split(model, layer)
    return per_model[layer]


@contextlib.contextmanager
def _logits(model):
    """Score classes by their logits: a softmax/sigmoid output layer runs linear meanwhile."""
    layers = [item for item in model.layers if item.name.endswith("predictions")]
    if not layers:  # another classifier: the layers that make its outputs
        outputs = {id(t) for t in keras.tree.flatten(model.outputs)}
        layers = [item for item in model.layers
                  if any(id(t) in outputs for t in keras.tree.flatten(item.output))]
    saved = [(item, item.activation) for item in layers if hasattr(item, "activation")]
    try:
        for item, _ in saved:
            item.activation = keras.activations.linear
        yield
    finally:
        for item, activation in saved:
            item.activation = activation


def _gradient(top, fmap: np.ndarray, index: np.ndarray, head: str | None,
              sign: np.ndarray) -> np.ndarray:
    """d(sum of each example's ``sign`` × logit of output ``index``) / d(feature map),
    by the backend's autodiff."""
    rows = keras.ops.convert_to_tensor(index[:, None].astype("int32"))
    signs = keras.ops.convert_to_tensor(sign[:, None].astype("float32"))

    def score(f):
        out = top(f, training=False)
        out = out[head] if head is not None else out
        return keras.ops.sum(signs * keras.ops.take_along_axis(out, rows, axis=1))

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        f = tf.convert_to_tensor(fmap)
        with tf.GradientTape() as tape:
            tape.watch(f)
            s = score(f)
        return tape.gradient(s, f).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(score)(jax.numpy.asarray(fmap)))
    if backend == "torch":
        import torch

        f = torch.tensor(fmap, requires_grad=True, device=keras.ops.convert_to_tensor(0).device)
        score(f).backward()
        return f.grad.detach().cpu().numpy()
    raise InvalidArgumentError(format_message(
        "grad_cam needs a backend with gradients (tensorflow, jax or torch).",
        received={"backend": backend}))


def grad_cam(model, images: Any, class_index: int | Sequence[int] | None = None, *,
             layer: str | None = None, head: str | None = None, out=None,
             batch_size: int = 32, alpha: float = 0.45, names: Sequence[str] | None = None,
             class_names: Sequence[str] | None = None) -> GradCamResult:
    """Grad-CAM heatmaps of ``images`` under ``model``, and optionally overlay PNGs.

    Args:
        model: A model from `kertransfer.build_transfer_model` (or loaded from
            its ``.keras`` file), or any functional or Sequential Keras image
            classifier (``keras.applications.MobileNet()``, ...): its last
            layer with a spatial output is the default feature map.
        images: ``[N, height, width, 3]`` raw images (0-255), as the model
            takes, one image ``[height, width, 3]``, or images in any other form
            kertransfer reads (``(x, y)`` arrays, a ``tf.data.Dataset`` or
            ``keras.utils.PyDataset`` of batches, a DataBundle or ArrayData:
            its train split, unaugmented); see `kertransfer.data.adapter`.
            Labels are ignored. Batches are explained one at a time.
        class_index: The class to explain: one for every image, one per image,
            or None for each image's predicted class (the most probable one;
            for a multi-label head, the most probable label). A one-unit
            sigmoid head has two classes, 0 (negative) and 1 (positive), and
            None explains its single output, the positive class, whatever the
            prediction.
        layer: A layer with a spatial output, of the backbone for a transfer
            model (default: the backbone's output, its last feature map), or of
            the model itself for another classifier (default: its last one).
        head: For a multi-task model, the head to explain.
        out: A folder for overlay PNGs (``cam_000.png``, ... or ``names``),
            each written atomically.
        batch_size: Images per gradient pass (for arrays; batched data keeps
            its own batches).
        alpha: Opacity of the heatmap in the overlays.
        names: File names (stems) of the overlays, one per image.
        class_names: Class names for the overlays' titles.

    Returns:
        A `GradCamResult`.
    """

    alpha = check_number(alpha, "alpha", minimum=0, maximum=1)
    if form_of(images, "images") == "images" and len(np.shape(images)) == 3:
        images = np.asarray(images)[None]  # one image
    heads = getattr(model, "num_classes", None)
    if isinstance(heads, dict) and head not in heads:
        raise InvalidArgumentError(format_message(
            "This model has several heads: name the one to explain.",
            expected=f"head= one of {sorted(heads)}", received={"head": head}))
    batches = as_batches(images, "images", images_only=True, batch_size=batch_size)
    bottom, top, layer_name = _cached_split(model, layer)
    wanted = None if class_index is None else np.asarray(class_index, dtype="int64")
    parts: list[GradCamResult] = []
    paths: list[pathlib.Path] = []
    start = 0
    for batch in iterate(batches):
        x = np.asarray(batch, dtype="float32")
        if x.ndim != 4 or not len(x):
            raise DataError(format_message(
                "images must be an array [N, height, width, channels] (or one image), or "
                "batches of them.", received={"images": f"batch of shape {x.shape}"}))
        part = _explain(bottom, top, model, x, head, _wanted(wanted, start, len(x), class_index),
                        class_index, layer_name)
        parts.append(part)
        if out is not None:
            shown = None if names is None else list(names)[start:start + len(x)]
            if names is not None and len(shown) != len(x):
                raise InvalidArgumentError(format_message(
                    "names must give one file name per image.",
                    received={"names": f"{len(names)} for at least {start + len(x)} images"}))
            shown = shown or [f"cam_{i:03d}" for i in range(start, start + len(x))]
            paths += save_overlays(x, part, out, alpha=alpha, names=shown,
                                   class_names=class_names)
        start += len(x)
    if not parts:
        raise DataError(format_message("images holds no image.",
                                       received={"images": type(images).__name__}))
    if wanted is not None and wanted.ndim and len(wanted) != start:
        raise InvalidArgumentError(format_message(
            "class_index must give one class for every image, or one for each image.",
            received={"class_index": f"{len(wanted)} for {start} images"}))
    if out is not None and names is not None and len(names) != start:
        raise InvalidArgumentError(format_message(
            "names must give one file name per image.",
            received={"names": f"{len(names)} for {start} images"}))
    return GradCamResult(*(np.concatenate([getattr(p, f) for p in parts])
                           for f in ("heatmaps", "coarse", "class_index", "probability")),
                         layer_name, paths)


def _wanted(wanted, start: int, n: int, class_index):
    """The classes asked for the images ``start .. start + n`` (None: predicted)."""
    if wanted is None or wanted.ndim == 0:
        return wanted
    if len(wanted) < start + n:
        raise InvalidArgumentError(format_message(
            "class_index must give one class for every image, or one for each image.",
            received={"class_index": f"{len(wanted)} for at least {start + n} images"}))
    return wanted[start:start + n]


def _explain(bottom, top, model, x, head, wanted, class_index, layer_name) -> GradCamResult:
    """Grad-CAM of one batch of images ``x``."""
    # Direct calls, not predict: no function is compiled (and retraced) per call.
    fmap = keras.ops.convert_to_numpy(bottom(x, training=False))
    p = top(fmap, training=False)
    p = keras.ops.convert_to_numpy(p[head] if head is not None else p)
    binary = head_rule(model, head, p.shape[-1]) == "binary"
    classes = 2 if binary else p.shape[-1]
    if wanted is not None:
        index = np.broadcast_to(wanted, (len(x),))
    else:
        index = np.ones(len(x), "int64") if binary else p.argmax(axis=-1)
    if index.min() < 0 or index.max() >= classes:
        raise InvalidArgumentError(format_message(
            f"class_index must be a class of the model, 0 to {classes - 1}"
            + (" (a one-unit sigmoid head: 0 negative, 1 positive)." if binary else "."),
            received={"class_index": class_index}))
    if binary:  # one output: the positive class's logit, negated for the negative class
        unit, sign = np.zeros(len(x), "int64"), np.where(index == 1, 1.0, -1.0)
        probability = np.where(index == 1, p[:, 0], 1.0 - p[:, 0])
    else:
        unit, sign = np.asarray(index), np.ones(len(x))
        probability = p[np.arange(len(x)), index]
    with _logits(model):
        grad = _gradient(top, fmap, unit, head, sign)
    weights = grad.mean(axis=(1, 2))                          # one weight per channel
    coarse = np.maximum(np.einsum("nhwc,nc->nhw", fmap, weights), 0.0)
    peak = coarse.max(axis=(1, 2), keepdims=True)
    coarse = np.where(peak > 0, coarse / np.where(peak > 0, peak, 1.0), 0.0)
    heatmaps = np.asarray(keras.ops.image.resize(coarse[..., None], x.shape[1:3],
                                                 interpolation="bilinear"))[..., 0]
    return GradCamResult(np.clip(heatmaps, 0, 1).astype("float32"), coarse.astype("float32"),
                         np.asarray(index), probability, layer_name)


def save_overlays(images: np.ndarray, result: GradCamResult, out, *, alpha: float = 0.45,
                  names: Sequence[str] | None = None,
                  class_names: Sequence[str] | None = None) -> list[pathlib.Path]:
    """Write each image with its heatmap over it as a PNG in ``out``; returns the paths."""

    alpha = check_number(alpha, "alpha", minimum=0, maximum=1)
    plt = pyplot()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names) if names is not None else [f"cam_{i:03d}" for i in range(len(images))]
    if len(names) != len(images):
        raise InvalidArgumentError(format_message(
            "names must give one file name per image.",
            received={"names": f"{len(names)} for {len(images)} images"}))
    # One figure whose image, heatmap and title change per overlay: no figure to build and
    # no tight bounding box to measure per image.
    fig, ax = plt.subplots(figsize=(3, 3))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9)
    ax.axis("off")
    picture = heat = None
    paths = []
    try:
        for i, image in enumerate(np.asarray(images)):
            k = int(result.class_index[i])
            label = class_names[k] if class_names is not None and k < len(class_names) else str(k)
            shown = np.clip(image / 255.0, 0, 1)
            if picture is None:
                picture = ax.imshow(shown)
                heat = ax.imshow(result.heatmaps[i], cmap="jet", alpha=alpha, vmin=0, vmax=1)
            else:
                picture.set_data(shown)
                heat.set_data(result.heatmaps[i])
            ax.set_title(f"{label} (p={result.probability[i]:.2f})", fontsize=9)
            paths.append(save_figure(fig, out / f"{pathlib.Path(names[i]).stem}.png",
                                     tight=False, close=False))
    finally:
        plt.close(fig)
    return paths
