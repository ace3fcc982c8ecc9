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
