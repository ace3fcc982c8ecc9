"""Sequence backbones (LSTM, GRU, Transformer encoder): blocks, freezing, transfer."""

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.callbacks import StagedUnfreezing
from kertransfer.errors import InvalidArgumentError

agnostic = pytest.mark.backend_agnostic
NAMES = ["lstm", "gru", "transformer"]


def _series(n=64, steps=12, features=2, seed=0):
    """Two classes: a rising or a falling trend, under noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = np.linspace(-1, 1, steps)[None, :, None]
    x = np.where(y[:, None, None] == 1, t, -t) + rng.normal(0, 0.3, (n, steps, features))
    return x.astype("float32"), y.astype("int32")


def _weights(layer):
    return [np.array(w) for w in layer.get_weights()]


@agnostic
@pytest.mark.parametrize("name", NAMES)
def test_blocks_are_encoder_layers_for_series_and_tokens(name):
    model = kt.build_transfer_model(name, 3, input_shape=(12, 2), weights=None, freeze=1)
    assert model.block_names == ["stem", "layer0", "layer1"]
    assert model.output_shape == (None, 3)
    frozen = [layer for layer in model.backbone.layers if layer.name.startswith("stem_")]
    assert frozen and not any(layer.trainable for layer in frozen)
    assert all(layer.trainable for layer in model.backbone.layers
               if layer.name.startswith("layer1_"))
    tokens = kt.build_transfer_model(name, 3, input_shape=(12,), weights=None)
    ids = np.random.default_rng(0).integers(0, 100, (4, 12)).astype("float32")
    assert tuple(tokens(ids).shape) == (4, 3)
    assert tokens.backbone.get_layer("stem_embedding") is not None


@agnostic
def test_bad_sequence_shapes_are_named():
    with pytest.raises(InvalidArgumentError, match=r"sequence backbone.*Received: input_shape"):
        kt.build_transfer_model("lstm", 2, input_shape=(8, 8, 3), weights=None)
    with pytest.raises(InvalidArgumentError, match=r"no ImageNet weights.*Received"):
        kt.build_transfer_model("gru", 2, input_shape=(8, 1))  # the default weights="imagenet"
    with pytest.raises(InvalidArgumentError, match=r"Received: input_shape=\(0, 1\)"):
        kt.build_transfer_model("gru", 2, input_shape=(0, 1), weights=None)


@pytest.mark.parametrize("name", ["transformer"])
def test_a_trained_encoder_transfers_with_staged_unfreezing(name, tmp_path):
    x, y = _series()
    keras.utils.set_random_seed(0)
    source = kt.build_transfer_model(name, 2, input_shape=(12, 2), weights=None, freeze="none")
    source.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                   metrics=["accuracy"])
    source.fit(x, y, epochs=3, batch_size=16, verbose=0)
    source.save(tmp_path / "source.keras")
    # A new task on the same encoder: its weights load by layer name.
    target = kt.build_transfer_model(name, 3, input_shape=(12, 2),
                                     weights=str(tmp_path / "source.keras"), freeze="all")
    np.testing.assert_allclose(target.backbone.predict(x[:4], verbose=0),
                               source.backbone.predict(x[:4], verbose=0), atol=1e-5)
    stem = target.backbone.layers[1]
    top = next(layer for layer in target.backbone.layers if layer.name.startswith("layer1_")
               and layer.weights)
    before_stem, before_top = _weights(stem), _weights(top)
    target.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    yt = (np.arange(len(y)) % 3).astype("int32")
    target.fit(x, yt, epochs=2, batch_size=16, verbose=0,
               callbacks=[StagedUnfreezing([(0, "head"), (1, 1)], verbose=0)])
    # The top encoder layer trained in epoch 2; the stem never did.
    assert all(np.array_equal(a, b) for a, b in zip(_weights(stem), before_stem))
    assert not all(np.array_equal(a, b) for a, b in zip(_weights(top), before_top))
    again = keras.saving.load_model(tmp_path / "source.keras")
    np.testing.assert_allclose(again.predict(x[:4], verbose=0), source.predict(x[:4], verbose=0),
                               atol=1e-5)


@agnostic
def test_waveforms_are_a_seeded_source_and_shifted_target():
    from kertransfer.data import waveforms

    xs, ys, source = waveforms("source", 5, timesteps=32, seed=3)
    xt, yt, target = waveforms("target", 5, timesteps=32, seed=3)
    assert xs.shape == (30, 32, 1) and xt.shape == (20, 32, 1) and xs.dtype == np.float32
    assert source[:4] == target and len(source) == 6
    np.testing.assert_array_equal(np.bincount(ys), [5] * 6)
    np.testing.assert_array_equal(waveforms("source", 5, timesteps=32, seed=3)[0], xs)
    assert not np.allclose(waveforms("source", 5, timesteps=32, seed=4)[0], xs)
    with pytest.raises(InvalidArgumentError, match=r"Received: domain='test'"):
        waveforms("test")


@agnostic
def test_fewshot_classifiers_take_a_sequence_model():
    from kertransfer.data import waveforms
    from kertransfer.methods.fewshot import LogisticClassifier

    x, y, _ = waveforms("target", 6, timesteps=16, seed=0)
    model = kt.build_transfer_model("gru", 4, input_shape=(16, 1), weights=None)
    clf = LogisticClassifier(model).fit(x, y)
    assert clf.predict_proba(x).shape == (24, 4)
    assert 0.0 <= clf.score(x, y) <= 1.0


def test_pretrain_supervised_on_sequences_loads_into_a_new_task(tmp_path):
    x, y = _series(n=32)
    result = kt.pretrain("gru", (x, y), task="supervised", epochs=1, batch_size=16,
                         out=tmp_path / "gru", verbose=0)
    model = kt.build_transfer_model("gru", 3, input_shape=(12, 2), weights=str(result.path))
    np.testing.assert_allclose(model.backbone.predict(x[:3], verbose=0),
                               result.backbone.predict(x[:3], verbose=0), atol=1e-5)
    with pytest.raises(InvalidArgumentError, match=r"works on images.*Received: task='simclr'"):
        kt.pretrain("gru", (x, y), task="simclr")


@agnostic
def test_from_arrays_splits_stratified_seeded_and_reshuffles():
    from kertransfer.data import from_arrays
    from kertransfer.errors import DataError, LabelError

    x = np.arange(60 * 5 * 2, dtype="float32").reshape(60, 5, 2)
    y = np.repeat([0, 1, 2], 20)
    data = from_arrays(x, y, validation_split=0.2, test_split=0.1, batch_size=8, seed=3,
                       class_names=["a", "b", "c"])
    assert data.counts == {"train": 42, "val": 12, "test": 6}
    assert data.input_shape == (5, 2) and data.num_classes == 3
    for split, per_class in (("train", 14), ("val", 4), ("test", 2)):
        xs, ys = data.as_numpy(split)
        np.testing.assert_array_equal(np.bincount(ys), [per_class] * 3)
        np.testing.assert_array_equal(xs, x[(xs[:, 0, 0] // 10).astype(int)])  # rows intact
    rows = [set(data.as_numpy(s)[0][:, 0, 0]) for s in ("train", "val", "test")]
    assert sum(map(len, rows)) == 60 and not (rows[0] & rows[1] or rows[0] & rows[2])
    again = from_arrays(x, y, validation_split=0.2, test_split=0.1, batch_size=8, seed=3)
    np.testing.assert_array_equal(again.as_numpy("val")[0], data.as_numpy("val")[0])
    # Training batches cover the split once per epoch, in a new order each epoch.
    first = np.concatenate([b[1] for b in data.train])
    data.train.on_epoch_end()
    second = np.concatenate([b[0][:, 0, 0] for b in data.train])
    assert len(first) == 42 and sorted(second) == sorted(rows[0])
    assert not np.array_equal(second, np.concatenate([b[0][:, 0, 0] for b in again.train]))
    assert "val:      12 examples" in data.summary()
    with pytest.raises(LabelError, match=r"one integer class label.*Received: y"):
        from_arrays(x, y.astype("float32"))
    with pytest.raises(DataError, match=r"\[N, \.\.\.\].*Received: x"):
        from_arrays(np.zeros(10), np.zeros(10, "int32"))
    with pytest.raises(InvalidArgumentError, match=r"Received: validation_split=1.5"):
        from_arrays(x, y, validation_split=1.5)
    with pytest.raises(InvalidArgumentError, match=r"no 'test' split"):
        from_arrays(x, y).as_numpy("test")


def test_sequences_fine_tune_on_cached_features_and_train_from_arrays(tmp_path):
    from kertransfer.data import from_arrays
    from kertransfer.errors import InvalidTypeError
    from kertransfer.training import train

    x, y = _series(n=48)
    data = from_arrays(x, y, validation_split=0.25, batch_size=8)
    model = kt.build_transfer_model("gru", 2, input_shape=data.input_shape, weights=None)
    before = _weights(model.backbone.layers[1])
    out = kt.fine_tune(model, data, epochs=1, freeze_epochs=2, patience=None,
                      head_fit="epochs", verbose=0)
    assert out.cached_features is True  # the encoder ran once for the head's epochs
    assert len(out.history["val_accuracy"]) == 3
    assert not all(np.array_equal(a, b) for a, b in zip(_weights(model.backbone.layers[1]),
                                                       before))  # phase 2 trained the stem
    result = train(model, (x, y), epochs=1, verbose=0, out=tmp_path / "run")
    assert len(result.history["loss"]) == 1 and (tmp_path / "run" / "model.keras").is_file()
    with pytest.raises(InvalidTypeError, match=r"from_arrays.*Received: data='list'"):
        train(model, [x, y], epochs=1, verbose=0)


def test_a_search_runs_on_sequence_arrays(tmp_path):
    from kertransfer.data import from_arrays

    x, y = _series(n=48)
    source = kt.build_transfer_model("gru", 2, input_shape=(12, 2), weights=None)
    source.save(tmp_path / "source.keras")
    data = from_arrays(x, y, validation_split=0.25)
    hm = kt.TransferHyperModel("gru", 2, input_shape=data.input_shape,
                               weights=str(tmp_path / "source.keras"), epochs=3,
                               space={"head_epochs": 2, "unfreeze_top": 1})
    result = kt.tune(hm, data, max_trials=1, directory=tmp_path / "search", verbose=0)
    assert [r["status"] for r in result.results] == ["COMPLETED"]
    # Phase 1 on the encoder's cached output, phase 2 on the cached stem and layer0 output.
    assert hm.features.passes == 2 and hm.features.partial_passes == 2
