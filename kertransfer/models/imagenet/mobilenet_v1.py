"""MobileNet v1 1.0_224 ImageNet weights from a frozen TF1 graph, as Keras' own cache files.

The source package ``nudity==0.2.3`` (of the ``offline-weights`` extra) ships
``nudity/files/retrained_graph.pb``: Google's TF-slim MobileNet v1 1.0_224
trained on ImageNet, frozen into ``MobilenetV1/*`` constants with its 1001-way
logits (class 0 is TF-slim's background class), plus a small retrained head of
its own that is not used here. The package is only read; it is never imported.

The constants map one to one onto ``keras.applications.MobileNet(alpha=1.0)``:

==================================  =======================================
TF-slim (``MobilenetV1/``)           Keras layer
==================================  =======================================
``Conv2d_0/weights``                 ``conv1``
``Conv2d_0/BatchNorm/*``             ``conv1_bn``
``Conv2d_<i>_depthwise/*``           ``conv_dw_<i>``, ``conv_dw_<i>_bn``
``Conv2d_<i>_pointwise/*``           ``conv_pw_<i>``, ``conv_pw_<i>_bn``
``Logits/Conv2d_1c_1x1/*``           ``conv_preds`` (without class 0)
==================================  =======================================

BatchNorm has epsilon 1e-3 on both sides. The result is written as the two
files Keras downloads for ``weights="imagenet"``, under the names it asks
``get_file`` for, so ``keras.applications.MobileNet(weights="imagenet")`` loads
them from ``$KERAS_HOME/models/`` with no network.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pathlib

import numpy as np

from kertransfer._log import print_msg
from kertransfer.backbones import get_backbone_spec
from kertransfer.errors import WeightsConversionError, WeightsNotFoundError, format_message
from kertransfer.models.imagenet import checks
from kertransfer.models.imagenet.legacy_h5 import write_legacy_h5

PACKAGE = "nudity"
GRAPH_FILE = "files/retrained_graph.pb"
#: The files written, with include_top: Keras' cache names for alpha 1.0 at 224 pixels.
FILES = {True: "mobilenet_1_0_224_tf.h5", False: "mobilenet_1_0_224_tf_no_top.h5"}
SIZE = 224
BLOCKS = 13
EPSILON = 1e-3
INPUT = "input:0"
LOGITS = "MobilenetV1/Logits/SpatialSqueeze:0"
FEATURES = f"MobilenetV1/MobilenetV1/Conv2d_{BLOCKS}_pointwise/Relu6:0"
#: Max |difference| allowed against the original graph (measured: about 2e-5 on the logits).
TOLERANCE = 1e-3
_BN = ("gamma", "beta", "moving_mean", "moving_variance")


def graph_path() -> pathlib.Path:
    """The frozen graph inside the installed ``nudity`` package (not imported).

    Raises:
        MissingDependencyError: The package is not installed.
        WeightsNotFoundError: It is installed but lacks the graph.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise checks.missing_extra("nudity==0.2.3", "Installing the ImageNet weights of "
                                   "'mobilenet'")
    for folder in spec.submodule_search_locations:
        path = pathlib.Path(folder) / GRAPH_FILE
        if path.is_file():
            return path
    raise WeightsNotFoundError(
        format_message(
            f"The installed {PACKAGE!r} package has no {GRAPH_FILE}.",
            expected=f"nudity==0.2.3, which ships it ({checks.INSTALL_EXTRA})",
            received={"package": f"{PACKAGE} {_version()}"},
        )
    )


def _version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def mapping() -> dict[str, list[str]]:
    """Keras layer name: the graph constants of its weights, in Keras' order."""
    def bn(scope):
        return [f"MobilenetV1/{scope}/BatchNorm/{k}" for k in _BN]

    table = {"conv1": ["MobilenetV1/Conv2d_0/weights"], "conv1_bn": bn("Conv2d_0")}
    for i in range(1, BLOCKS + 1):
        table[f"conv_dw_{i}"] = [f"MobilenetV1/Conv2d_{i}_depthwise/depthwise_weights"]
        table[f"conv_dw_{i}_bn"] = bn(f"Conv2d_{i}_depthwise")
        table[f"conv_pw_{i}"] = [f"MobilenetV1/Conv2d_{i}_pointwise/weights"]
        table[f"conv_pw_{i}_bn"] = bn(f"Conv2d_{i}_pointwise")
    table["conv_preds"] = ["MobilenetV1/Logits/Conv2d_1c_1x1/weights",
                           "MobilenetV1/Logits/Conv2d_1c_1x1/biases"]
    return table


def read_graph(path: pathlib.Path):
    """The GraphDef and its constants by name."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - a damaged file
        raise WeightsConversionError(
            format_message(f"{path} is not a TensorFlow GraphDef ({type(exc).__name__}: "
                           f"{exc}).", received={"path": str(path)})
        ) from None
    constants = {node.name: tf.make_ndarray(node.attr["value"].tensor)
                 for node in graph_def.node if node.op == "Const"}
    return graph_def, constants


def _check_epsilon(constants: dict, name: str) -> None:
    eps = {float(v) for k, v in constants.items() if k.endswith("BatchNorm/batchnorm/add/y")}
    if not eps or any(abs(e - EPSILON) > 1e-7 for e in eps):
        raise WeightsConversionError(
            format_message(f"The graph's BatchNorm epsilon is {sorted(eps)}.",
                           expected=f"{EPSILON} (Keras' MobileNet)", received={"backbone": name})
        )


def fill(model, constants: dict, name: str = "mobilenet") -> None:
    """Set every mapped layer of ``model`` from the graph's constants."""
    table = mapping()
    missing = sorted({c for consts in table.values() for c in consts} - set(constants))
    if missing:
        raise WeightsConversionError(
            format_message(f"The graph lacks {len(missing)} of MobileNet v1's constants "
                           f"(first: {missing[0]}).",
                           expected="Google's MobilenetV1 1.0_224 graph (nudity==0.2.3)",
                           received={"backbone": name}))
    for layer_name, names in table.items():
        values = [constants[c] for c in names]
        if layer_name == "conv_preds":  # drop TF-slim's background class
            values = [values[0][..., 1:], values[1][1:]]
        layer = model.get_layer(layer_name)
        shapes = [tuple(w.shape) for w in layer.get_weights()]
        if shapes != [v.shape for v in values]:
            raise WeightsConversionError(
                format_message(f"Layer {layer_name} has weights of shapes {shapes}; the graph "
                               f"gives {[v.shape for v in values]}.",
                               received={"backbone": name}))
        layer.set_weights(values)


def run_graph(graph_def, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original graph's logits (1001) and last feature map on preprocessed ``images``."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as sess:  # the graph's input has batch size 1
        outs = [sess.run([LOGITS, FEATURES], {INPUT: images[i:i + 1]})
                for i in range(len(images))]
    return (np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]))


def convert(destination_dir: pathlib.Path, *, name: str = "mobilenet", verbose: int = 1) -> dict:
    """Convert the graph into Keras' two MobileNet cache files under ``destination_dir``.

    The files are loaded back with Keras' own loader (``model.load_weights``)
    and checked: top-1 on the sample photos through kertransfer's preprocessing
    ("tf" mode), and the logits and the last feature map against the original
    graph run by TensorFlow.

    Args:
        destination_dir: An existing folder; the files get their final names.
        name: The backbone name (``"mobilenet"``).
        verbose: Print the checks when positive.

    Returns:
        ``{"name", "source", "files", "checks"}``.

    Raises:
        MissingDependencyError: ``nudity`` or scikit-image is not installed.
        WeightsConversionError: A check fails.
    """
    import keras


    destination_dir = pathlib.Path(destination_dir)
    path = graph_path()
    source = f"{PACKAGE} {_version()} ({PACKAGE}/{GRAPH_FILE})"
    if verbose:
        print_msg(f"Converting {name} from {source}")
    graph_def, constants = read_graph(path)
    _check_epsilon(constants, name)

    shape = (SIZE, SIZE, 3)
    model = keras.applications.MobileNet(input_shape=shape, alpha=1.0, include_top=True,
                                         weights=None, classifier_activation=None)
    fill(model, constants, name)
    top_path = destination_dir / FILES[True]
    no_top_path = destination_dir / FILES[False]
    write_legacy_h5(model, top_path)
    headless = keras.applications.MobileNet(input_shape=shape, alpha=1.0, include_top=False,
                                            weights=None)
    write_legacy_h5(model, no_top_path, [layer.name for layer in headless.layers])
    del model

    # Load the files back the way keras.applications does, and check them.
    classifier = keras.applications.MobileNet(input_shape=shape, alpha=1.0, include_top=True,
                                              weights=None, classifier_activation=None)
    classifier.load_weights(top_path)
    headless.load_weights(no_top_path)
    prep = get_backbone_spec(name).preprocessing
    def run(model, x):  # eager calls: a few images, no tf.function to trace
        return keras.ops.convert_to_numpy(model(x, training=False))

    report_checks = {"photos": checks.check_top1(
        lambda x: run(classifier, x), name=name, preprocessing=prep,
        size=(SIZE, SIZE), from_logits=True, verbose=verbose)}

    _, photos = checks.photo_batch((SIZE, SIZE))
    noise = np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype("float32")
    images = checks.preprocess(np.concatenate([photos, noise]), prep)
    graph_logits, graph_features = run_graph(graph_def, images)
    report_checks["graph_logits"] = checks.check_close(
        checks.max_abs_diff(run(classifier, images), graph_logits[:, 1:]),
        TOLERANCE, name=name, what="logits against the original graph", verbose=verbose)
    report_checks["graph_features"] = checks.check_close(
        checks.max_abs_diff(run(headless, images), graph_features),
        TOLERANCE, name=name, what="headless features against the original graph",
        verbose=verbose)
    return {"name": name, "source": source, "files": [FILES[False], FILES[True]],
            "checks": report_checks}
