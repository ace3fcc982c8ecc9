"""One backbone, several named heads: building, data, training, saving and serving."""

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.errors import InvalidArgumentError, InvalidTypeError
from kertransfer.training import train

TASKS = {"digit": None, "parity": [k % 2 for k in range(10)]}


@pytest.fixture
def bundle():
    data = kt.data.load("digits", image_size=(16, 16), validation_split=0.2, test_split=0.2,
                        samples_per_class=12, seed=0, verbose=0)
    return data.with_tasks(TASKS)


def _model(name, heads=None, **kwargs):
    return kt.build_transfer_model(name, heads or {"digit": 10, "parity": 2},
                                   input_shape=(16, 16, 3), weights=None, **kwargs)


def test_a_head_per_task_with_its_own_layers(tiny_backbone_name):
    model = _model(tiny_backbone_name, head_units=(8,), activation={"digit": "softmax",
                                                                    "parity": "logits"})
    assert model.heads == {"digit": 10, "parity": 2}
    out = model(np.zeros((3, 16, 16, 3), "float32"))
    assert set(out) == {"digit", "parity"}
    assert tuple(out["digit"].shape) == (3, 10) and tuple(out["parity"].shape) == (3, 2)
    np.testing.assert_allclose(np.sum(keras.ops.convert_to_numpy(out["digit"]), -1), 1, atol=1e-5)
    names = {layer.name for layer in model.layers}
    assert {"digit_dense_0", "digit_predictions", "parity_dense_0", "parity_predictions"} <= names
    # Freezing applies to the shared backbone; every head trains.
    kt.freeze(model, "all")
    assert not any(w.trainable for w in model.backbone.weights)
    assert model.get_layer("parity_predictions").trainable
    assert len(model.trainable_weights) == 8  # two dense layers per head, kernel and bias


def test_bad_heads_are_named(tiny_backbone_name):
    with pytest.raises(InvalidArgumentError, match=r"identifiers.*Received"):
        _model(tiny_backbone_name, {"two words": 2})
    with pytest.raises(InvalidTypeError, match=r"Received: num_classes\['parity'\]='2'"):
        _model(tiny_backbone_name, {"digit": 10, "parity": "2"})
    with pytest.raises(InvalidArgumentError, match=r"same heads.*Received: activation"):
        _model(tiny_backbone_name, activation={"digit": "softmax"})
    with pytest.raises(InvalidArgumentError, match=r"one class.*num_classes\['flag'\]=1"):
        _model(tiny_backbone_name, {"digit": 10, "flag": 1})


def test_with_tasks_gives_a_label_per_task(bundle):
    assert bundle.tasks == {"digit": 10, "parity": 2}
    x, labels = next(iter(bundle.train))
    labels = {k: np.asarray(v) for k, v in labels.items()}
    np.testing.assert_array_equal(labels["parity"], labels["digit"] % 2)
    assert "parity (2 classes)" in bundle.summary()
    with pytest.raises(InvalidArgumentError, match=r"one non-negative integer label per class"):
        bundle.with_tasks({"parity": [0, 1]})


def test_training_weighs_the_losses_and_saving_keeps_every_head(tiny_backbone_name, bundle,
                                                                tmp_path):
    model = _model(tiny_backbone_name, freeze="none")
    result = train(model, bundle, epochs=2, verbose=0, loss_weights={"parity": 0.5},
                   out=tmp_path / "run")
    assert {"digit_accuracy", "parity_accuracy", "val_parity_loss"} <= set(result.history)
    m = result.metrics
    assert m["test_loss"] == pytest.approx(m["test_digit_loss"] + 0.5 * m["test_parity_loss"],
                                           rel=1e-4)
    with pytest.raises(InvalidArgumentError, match=r"loss_weights.*Received"):
        train(model, bundle, epochs=1, verbose=0, loss_weights={"colour": 1.0})
    x, _ = bundle.as_numpy("test")
    again = keras.saving.load_model(tmp_path / "run" / "model.keras")
    want, got = model.predict(x[:4], verbose=0), again.predict(x[:4], verbose=0)
    for head in ("digit", "parity"):
        np.testing.assert_allclose(got[head], want[head], atol=1e-6)


def test_staged_fine_tuning_trains_every_head_on_cached_features(tiny_backbone_name, bundle):
    model = _model(tiny_backbone_name)
    before = {h: model.get_layer(f"{h}_predictions").get_weights()[0].copy()
              for h in ("digit", "parity")}
    out = kt.fine_tune(model, bundle, epochs=1, freeze_epochs=2, patience=None, verbose=0,
                       loss_weights={"parity": 0.5})
    assert out.cached_features is True  # phase 1 ran on the backbone's features, once
    hist = out.history
    assert len(hist["digit_loss"]) == len(hist["parity_loss"]) == len(hist["val_loss"]) == 3
    for h in ("digit", "parity"):
        assert not np.allclose(model.get_layer(f"{h}_predictions").get_weights()[0], before[h])
    _weighted_half(hist)


def _weighted_half(hist):
    """The total loss is digit + 0.5 * parity, epoch by epoch (Keras averages the total
    and each head's loss over batches slightly differently: within 0.2%)."""
    for prefix in ("", "val_"):
        np.testing.assert_allclose(hist[f"{prefix}loss"], np.add(
            hist[f"{prefix}digit_loss"], np.multiply(0.5, hist[f"{prefix}parity_loss"])),
            rtol=2e-3)


def _saved_backbone(name, path):
    keras.utils.set_random_seed(1)
    model = kt.build_transfer_model(name, 3, input_shape=(16, 16, 3), weights=None)
    model.save(path)
    return str(path)


def test_a_search_tunes_every_head_on_shared_features(tiny_backbone_name, bundle, tmp_path):
    import json

    weights = _saved_backbone(tiny_backbone_name, tmp_path / "pretrained.keras")
    hm = kt.TransferHyperModel(tiny_backbone_name, {"digit": 10, "parity": 2}, weights=weights,
                               loss_weights={"parity": 0.5}, input_shape=(16, 16, 3), epochs=3,
                               space={"head_epochs": 2, "unfreeze_top": 1})
    out = tmp_path / "search"
    with pytest.raises(InvalidArgumentError, match=r"val_digit_accuracy.*Received: objective"):
        kt.tune(hm, bundle, directory=out, verbose=0)  # "val_accuracy" names no head
    with pytest.raises(InvalidArgumentError, match=r"one label per task.*Received: data"):
        kt.tune(hm, kt.data.load("digits", image_size=(16, 16), samples_per_class=5,
                                 validation_split=0.2, verbose=0),
                objective="val_digit_accuracy", directory=out)
    assert not out.exists()
    result = kt.tune(hm, bundle, max_trials=2, objective="val_digit_accuracy", directory=out,
                     verbose=0)
    assert result.tuner.oracle.objective.direction == "max"
    done = [r for r in result.results if r["status"] == "COMPLETED"]
    assert len(done) == 2
    assert hm.features.passes == 2  # train and validation features, shared by every trial
    assert hm.features.partial_passes >= 2  # phase 2 trained the top block on cached inputs
    config = json.loads((out / "best_config.json").read_text())
    assert config["class_names"]["parity"] == ["0", "1"]
    best = keras.saving.load_model(out / "best_model.keras")
    x, y = bundle.as_numpy("val")
    pred = best.predict(x, verbose=0)
    assert set(pred) == {"digit", "parity"}
    assert np.mean(pred["digit"].argmax(-1) == y) == pytest.approx(config["score"], abs=1e-6)
    for trial in (out / "search").glob("trial_*"):
        hist = json.loads((trial / "history.json").read_text())["history"]
        assert len(hist["val_digit_accuracy"]) == len(hist["val_parity_accuracy"]) == 3
        _weighted_half(hist)


def test_the_export_serves_every_head(tiny_backbone_name, tmp_path):
    import tensorflow as tf

    model = _model(tiny_backbone_name)
    names = {"digit": [str(k) for k in range(10)], "parity": ["even", "odd"]}
    path = kt.export(model, tmp_path / "serve", class_names=names, check=False, verbose=0)
    x = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    out = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(x))
    want = model.predict(x, verbose=0)
    for head in ("digit", "parity"):
        np.testing.assert_allclose(out[f"{head}_probabilities"].numpy(), want[head], atol=1e-5)
    assert [n.decode() for n in out["parity_class_name"].numpy()] == \
        [names["parity"][i] for i in want["parity"].argmax(-1)]


def test_search_processes_get_the_labels_of_every_task(bundle, tmp_path):
    from kertransfer.tuning.children import _arrays_of, labels_from

    np.savez(tmp_path / "data.npz", **_arrays_of(bundle, None))
    with np.load(tmp_path / "data.npz") as f:
        arrays = dict(f)
    _, y = bundle.as_numpy("train")
    labels = labels_from(arrays, "y")
    assert set(labels) == {"digit", "parity"}
    np.testing.assert_array_equal(labels["digit"], y)
    np.testing.assert_array_equal(labels["parity"], y % 2)
    assert len(labels_from(arrays, "y_val")["parity"]) == len(arrays["x_val"])
    # Arrays with a label dict check against the heads before a search starts.
    hm = kt.TransferHyperModel("mobilenet_v3_small", {"digit": 10, "parity": 2}, weights=None,
                               input_shape=(32, 32, 3))
    x = arrays["x"]
    hm.check_data((x, labels), (arrays["x_val"], labels_from(arrays, "y_val")))
    with pytest.raises(InvalidArgumentError, match=r"heads \['digit', 'parity'\].*Received: "
                                                   r"validation_data=\['digit'\]"):
        hm.check_data((x, labels), (x, {"digit": y}))
    with pytest.raises(InvalidArgumentError, match=r"loss_weights.*Received"):
        kt.TransferHyperModel("mobilenet_v3_small", 10, loss_weights={"digit": 1.0})

