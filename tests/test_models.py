"""build_transfer_model: structure, saving, weight sources and input errors."""

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.errors import (
    FreezeError,
    IncompatibleInputError,
    InvalidArgumentError,
    InvalidTypeError,
    KertransferError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from kertransfer.models import weights as weights_module


def _x(n=4, size=16):
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.backend_agnostic
def test_builds_functional_model_with_head(tiny_backbone_name):
    model = kt.build_transfer_model(tiny_backbone_name, num_classes=5, input_shape=(16, 16, 3),
                                    weights=None, head_units=(12,), dropout=0.3)
    assert isinstance(model, kt.TransferModel)
    assert model.output_shape == (None, 5)
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["image", "preprocess", "backbone"]
    assert "head_dense_0" in names and names[-1] == "predictions"
    probs = keras.ops.convert_to_numpy(model(_x()))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.backend_agnostic
def test_output_activations(tiny_backbone_name):
    sig = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3), weights=None,
                                  activation="sigmoid")
    out = keras.ops.convert_to_numpy(sig(_x()))
    assert ((out > 0) & (out < 1)).all() and not np.allclose(out.sum(-1), 1.0)
    logits = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3),
                                     weights=None, activation="logits", dropout=0.0)
    assert (keras.ops.convert_to_numpy(logits(_x() * 0 + 255)) != 0).any()
    assert logits.get_layer("predictions").activation.__name__ == "linear"


@pytest.mark.backend_agnostic
def test_save_and_load_keras_gives_same_outputs_and_state(tmp_path, tiny_backbone_name):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3), weights=None,
                                    freeze=1, bn="trainable")
    x = _x()
    before = keras.ops.convert_to_numpy(model(x))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, kt.TransferModel)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), before, atol=1e-6)
    assert loaded.freeze_config == model.freeze_config
    assert loaded.bn_mode == "trainable" and loaded.block_names == model.block_names
    assert [w.path for w in loaded.trainable_weights] == [w.path for w in model.trainable_weights]


def test_weights_from_backbone_file_and_keras_model(tmp_path, tiny_backbone_name):
    src = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3), weights=None)
    src.backbone.save_weights(tmp_path / "bb.weights.h5")
    src.save(tmp_path / "full.keras")
    expected = src.backbone.get_layer("block2_conv").get_weights()[0]
    for path in (tmp_path / "bb.weights.h5", tmp_path / "full.keras"):
        dst = kt.build_transfer_model(tiny_backbone_name, 7, input_shape=(16, 16, 3),
                                      weights=path)
        np.testing.assert_array_equal(dst.backbone.get_layer("block2_conv").get_weights()[0],
                                      expected)
        assert dst.weights_report.complete


def test_a_keras_weights_file_is_read_once_until_it_changes(tmp_path, tiny_backbone_name,
                                                            monkeypatch):
    path = tmp_path / "pretrained.keras"
    first = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3), weights=None)
    first.save(path)
    reads = []
    real_load = keras.saving.load_model
    monkeypatch.setattr(keras.saving, "load_model",
                        lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))

    def conv(model):
        return model.backbone.get_layer("block2_conv").get_weights()[0]

    for classes in (3, 5):  # the trials of a search build the same backbone again
        model = kt.build_transfer_model(tiny_backbone_name, classes, input_shape=(16, 16, 3),
                                        weights=path)
        np.testing.assert_array_equal(conv(model), conv(first))
        model.backbone.get_layer("block2_conv").kernel.assign(conv(model) + 1)  # not shared
    assert len(reads) == 1
    # Read or kept, the file leaves the caller's random streams alone: a seeded build is the same.
    heads = []
    for clear in (True, False):
        if clear:
            weights_module._cached_keras_file_arrays.cache_clear()
        keras.utils.set_random_seed(3)
        model = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3),
                                        weights=path)
        heads.append(model.get_layer("predictions").get_weights()[0])
    np.testing.assert_array_equal(*heads)
    assert len(reads) == 2
    keras.utils.set_random_seed(7)
    second = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3), weights=None)
    second.save(path)  # the same path, new weights
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3), weights=path)
    np.testing.assert_array_equal(conv(model), conv(second))
    assert len(reads) == 3


def test_weights_for_another_architecture(tmp_path, tiny_backbone_name):
    other = kt.build_transfer_model("mobilenet_v3_small", 3, input_shape=(32, 32, 3),
                                    weights=None)
    other.save(tmp_path / "other.keras")
    other.backbone.save_weights(tmp_path / "other.weights.h5")
    for path in ("other.keras", "other.weights.h5"):
        with pytest.raises(WeightsMismatchError,
                           match="(another architecture|do not fit).*Received: weights="):
            kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3),
                                    weights=tmp_path / path)


def test_partial_load_by_name_reports_matches(tmp_path, tiny_backbone_name, capsys):
    from conftest import tiny_cnn

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="block1_conv")(x)  # other width
    keras.Model(inputs, x).save(tmp_path / "ckpt.keras")
    ref = keras.models.load_model(tmp_path / "ckpt.keras")
    model = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3),
                                    weights=tmp_path / "ckpt.keras", weights_strict=False)
    report = model.weights_report
    assert report.matched == ["stem_conv"]
    assert [m[0] for m in report.mismatched] == ["block1_conv"]
    assert "block2_conv" in report.missing and not report.complete
    np.testing.assert_array_equal(model.backbone.get_layer("stem_conv").get_weights()[0],
                                  ref.get_layer("stem_conv").get_weights()[0])
    assert "1 layers matched" in capsys.readouterr().out
    assert tiny_cnn  # the target architecture


def test_missing_weights_file(tmp_path, tiny_backbone_name):
    with pytest.raises(WeightsNotFoundError, match=r"does not exist.*Received: weights=") as e:
        kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3),
                                weights=tmp_path / "nope.keras")
    assert isinstance(e.value, FileNotFoundError)


def test_imagenet_offline_names_the_expected_file(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(WeightsNotFoundError) as e:
        kt.build_transfer_model("mobilenet_v3_small", 3, input_shape=(32, 32, 3))
    msg = str(e.value)
    assert "weights_mobilenet_v3_small" in msg and str(tmp_path / "models") in msg
    assert msg.endswith("Received: backbone='mobilenet_v3_small', weights='imagenet'")


@pytest.mark.backend_agnostic
def test_custom_keras_model_as_backbone():
    from conftest import tiny_cnn

    net = tiny_cnn()
    kernel = net.get_layer("block2_conv").get_weights()[0]
    model = kt.build_transfer_model(net, 2, freeze=1)  # keeps the model's own weights
    assert model.backbone_name == "custom"
    assert model.block_names == ["stem_conv", "block1_conv", "block2_conv"]
    np.testing.assert_array_equal(model.backbone.get_layer("block2_conv").get_weights()[0],
                                  kernel)
    assert not model.backbone.get_layer("stem_conv").trainable
    assert model.backbone.get_layer("block1_conv").trainable


@pytest.mark.backend_agnostic
def test_custom_backbone_with_open_input_size():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    net = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="c2")(x))
    with pytest.raises(InvalidArgumentError, match="input_shape is needed"):
        kt.build_transfer_model(net, 2)
    model = kt.build_transfer_model(net, 2, input_shape=(12, 12, 3))
    assert model.input_shape == (None, 12, 12, 3)


@keras.saving.register_keras_serializable(package="kertransfer_tests")
class SubclassedNet(keras.Model):
    """A subclassed backbone: conv, BatchNorm, dropout, conv, written in call()."""

    def __init__(self, width=4, outputs="tensor", **kwargs):
        super().__init__(**kwargs)
        self.width, self.outputs_kind = width, outputs
        self.conv_a = keras.layers.Conv2D(width, 3, padding="same", name="conv_a")
        self.bn = keras.layers.BatchNormalization(name="bn")
        self.drop = keras.layers.Dropout(0.5, name="drop")
        self.conv_b = keras.layers.Conv2D(8, 3, strides=2, name="conv_b")

    def call(self, x, training=None):
        x = keras.activations.relu(self.bn(self.conv_a(x), training=training))
        x = self.conv_b(self.drop(x, training=training))
        return {"features": x} if self.outputs_kind == "dict" else x

    def get_config(self):
        return {**super().get_config(), "width": self.width, "outputs": self.outputs_kind}


def _trainable_paths(model):
    return sorted(v.path for v in model.trainable_variables)


@pytest.mark.backend_agnostic
def test_subclassed_model_as_backbone_is_one_block(tmp_path):
    net = SubclassedNet(name="my_net")
    model = kt.build_transfer_model(net, 3, input_shape=(16, 16, 3), freeze="all")
    assert model.backbone_name == "custom"
    assert model.block_names == ["my_net"]
    assert model.output_shape == (None, 3)
    assert all(v.path.startswith("predictions/") for v in model.trainable_variables)

    kt.freeze(model, "none")  # BatchNorm stays in inference mode (bn="frozen")
    inner = [p for p in _trainable_paths(model) if not p.startswith("predictions/")]
    assert inner == sorted(w.path for layer in (net.conv_a, net.conv_b) for w in layer.weights)
    kt.freeze(model, "none", bn="trainable")
    assert {"my_net/bn/gamma", "my_net/bn/beta"} <= set(_trainable_paths(model))
    kt.freeze(model, "my_net")  # block-level freezing names the one block
    assert all(v.path.startswith("predictions/") for v in model.trainable_variables)
    with pytest.raises(FreezeError, match="my_net"):
        kt.freeze(model, "conv_a")

    # Cached features and the head on them give the model's own outputs.
    from kertransfer.models.surgery import compute_features, head_on_features

    x = _x(6)
    feats = compute_features(model, x, verbose=0)
    expected = keras.ops.mean(net(x, training=False), axis=(1, 2))
    np.testing.assert_allclose(feats, keras.ops.convert_to_numpy(expected), rtol=1e-5,
                               atol=1e-5)
    head = head_on_features(model, feats.shape[1:])
    np.testing.assert_allclose(head.predict(feats, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)

    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, np.arange(6) % 3, epochs=1, verbose=0)

    # A registered subclass reloads with its weights; Keras keeps no trainable flags of
    # the layers inside it, so the freeze is applied again after loading.
    kt.freeze(model, "all")
    keras.saving.save_model(model, tmp_path / "m.keras", include_optimizer=False)
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert loaded.block_names == ["my_net"]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    kt.freeze(loaded, "all")
    assert all(v.path.startswith("predictions/") for v in loaded.trainable_variables)


def test_subclassed_backbone_errors_name_the_argument():
    with pytest.raises(InvalidArgumentError, match="subclassed.*input_shape is needed"):
        kt.build_transfer_model(SubclassedNet(), 3)
    with pytest.raises(InvalidArgumentError,
                       match="one block.*functional API.*Received: backbone='SubclassedNet'"):
        kt.build_transfer_model(SubclassedNet(), 3, input_shape=(16, 16, 3),
                                blocks=[("a", "^conv_a$"), ("b", "^conv_b$")])
    with pytest.raises(InvalidTypeError,
                       match=r"one tensor.*Received: backbone='SubclassedNet'$"):
        kt.build_transfer_model(SubclassedNet(outputs="dict"), 3, input_shape=(16, 16, 3))


@pytest.mark.backend_agnostic
def test_sequential_backbone_without_input_is_built_on_input_shape():
    net = keras.Sequential([keras.layers.Conv2D(4, 3, name="c1"),
                            keras.layers.BatchNormalization(name="c1_bn"),
                            keras.layers.Conv2D(8, 3, name="c2")])
    model = kt.build_transfer_model(net, 2, input_shape=(12, 12, 3), freeze=1)
    assert model.block_names == ["c1", "c2"]
    assert not net.get_layer("c1").trainable and net.get_layer("c2").trainable


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"input_shape": (16, 16, 3)}, IncompatibleInputError,
         r"smaller than 'mobilenet_v3_small'.*at least 32.*Received: input_shape=\(16, 16, 3\)"),
        ({"input_shape": (32, 32, 1), "weights": "imagenet"}, IncompatibleInputError,
         r"3-channel.*Received: input_shape=\(32, 32, 1\), weights='imagenet'"),
        ({"num_classes": 0}, InvalidArgumentError, "at least 1.*Received: num_classes=0"),
        ({"num_classes": 2.5}, InvalidTypeError, "Received: num_classes=2.5"),
        ({"num_classes": 1}, InvalidArgumentError, "softmax over one class.*Received"),
        ({"freeze": 99}, FreezeError, "Cannot freeze 99 blocks.*has 13.*Received: freeze=99"),
        ({"freeze": "block99"}, FreezeError, "Unknown freeze.*Received: freeze='block99'"),
        ({"freeze": "al"}, FreezeError, "Received: freeze='al'"),
        ({"bn": "frozenn"}, InvalidArgumentError, "Did you mean 'frozen'.*Received: bn='frozenn'"),
        ({"pooling": "mean"}, InvalidArgumentError, "Unknown pooling.*Received: pooling='mean'"),
        ({"activation": "relu"}, InvalidArgumentError, "Received: activation='relu'"),
        ({"dropout": 1.5}, InvalidArgumentError, r"Received: dropout=1.5"),
        ({"head_units": (0,)}, InvalidArgumentError, r"Received: head_units=\(0,\)"),
        ({"input_shape": (32, 32)}, InvalidArgumentError, "three positive integers.*Received"),
        ({"weights": 3}, InvalidTypeError, "Received: weights=3"),
        ({"weights": "x.txt"}, WeightsNotFoundError, "Received: weights='x.txt'"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, pattern):
    args = {"num_classes": 3, "input_shape": (32, 32, 3), "weights": None}
    args.update(kwargs)
    with pytest.raises(error, match=pattern) as e:
        kt.build_transfer_model("mobilenet_v3_small", **args)
    assert isinstance(e.value, KertransferError)


def test_bad_backbone_type():
    with pytest.raises(InvalidTypeError, match="Received: backbone=42"):
        kt.build_transfer_model(42, num_classes=3)


@pytest.mark.backend_agnostic
def test_compiled_model_round_trip_keeps_optimizer_state(tmp_path, tiny_backbone_name):
    model = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3),
                                    weights=None, freeze=1)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(_x(8), np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.compiled and type(loaded.optimizer) is keras.optimizers.Adam
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 2
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))
