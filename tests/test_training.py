"""BatchNorm recalibration, train() and run folders."""

import json
import os

import keras
import numpy as np
import pytest
from testing import run_recipe_test

import kertransfer as kt
from kertransfer.errors import InvalidArgumentError
from kertransfer.training import recalibrate_batchnorm, save_run, train


@pytest.mark.backend_agnostic
def test_recalibration_gives_exact_statistics():
    inputs = keras.Input((4,))
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, keras.layers.Dense(2)(bn(inputs)))
    bn.trainable = False  # a frozen BN is recalibrated too, and stays frozen
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (256, 4)).astype("float32")
    batches = [x[i:i + 64] for i in range(0, 256, 64)]
    dense_before = model.layers[-1].get_weights()[0].copy()
    assert recalibrate_batchnorm(model, batches) == 4
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), x.mean(0), rtol=1e-4)
    per_batch_var = np.mean([b.var(0) for b in batches], axis=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), per_batch_var,
                               rtol=1e-3)
    assert bn.trainable is False and bn.momentum == 0.99
    np.testing.assert_array_equal(model.layers[-1].get_weights()[0], dense_before)
    with pytest.raises(InvalidArgumentError, match="no batch.*Received"):
        recalibrate_batchnorm(model, [])


def test_recalibration_fixes_lagging_statistics(tiny_backbone_name, tiny_data):
    # The BatchNorm trap: a network fits its data but its moving statistics lag.
    x, y = tiny_data
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="none", bn="trainable", dropout=0.0)
    bns = [layer for layer in model.backbone.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.9999  # the moving statistics barely follow the batches
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=25, verbose=0)
    for layer in bns:  # and start far from the truth
        layer.moving_mean.assign(keras.ops.ones(layer.moving_mean.shape) * 5.0)
    stale = model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    recalibrate_batchnorm(model, [x[i:i + 100] for i in range(0, 200, 100)])
    fresh = model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    assert fresh > 0.9 and fresh > stale + 0.2
    assert all(layer.momentum == 0.9999 for layer in bns)


def test_train_writes_a_run_folder(tmp_path, tiny_backbone_name, tiny_data):
    data = kt.data.load(tiny_data, image_size=(16, 16), batch_size=32, validation_split=0.2,
                        test_split=0.2, seed=0, verbose=0)
    model = kt.build_transfer_model(tiny_backbone_name, data.num_classes,
                                    input_shape=(16, 16, 3), weights=None, freeze=1,
                                    bn="trainable")
    result = run_recipe_test(train, model, data, epochs=2, out=tmp_path / "run",
                             config={"note": "x"}, expected_epochs=2,
                             changes=model.trainable_variables)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o777 & ~umask  # not 0700
    assert files == ["config.json", "history.json", "learning_curve.png", "model.keras"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["loss"]) == 2 and "val_accuracy" in history
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["note"] == "x" and 0 <= config["metrics"]["test_accuracy"] <= 1
    assert set(result.metrics) >= {"val_accuracy", "test_accuracy"}
    loaded = keras.saving.load_model(tmp_path / "run" / "model.keras")
    xb, _ = data.as_numpy("test")
    np.testing.assert_allclose(loaded.predict(xb, verbose=0), model.predict(xb, verbose=0),
                               atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="Received: epochs=0"):
        train(model, data, epochs=0)


def test_training_runs_let_go_of_the_graphs_they_traced(tiny_backbone_name, tiny_data):
    from kertransfer._graphs import custom_gradients

    data = kt.data.load(tiny_data, image_size=(16, 16), batch_size=32, validation_split=0.2,
                        seed=0, verbose=0)
    before, during = custom_gradients(), []
    seen = keras.callbacks.LambdaCallback(
        on_train_end=lambda logs: during.append(custom_gradients() - before))
    for _ in range(2):
        model = kt.build_transfer_model(tiny_backbone_name, data.num_classes,
                                        input_shape=(16, 16, 3), weights=None, freeze="none")
        train(model, data, epochs=1, verbose=0, callbacks=[seen])
        assert during[-1]  # tracing the train step registered TensorFlow custom gradients
        assert custom_gradients() <= before  # ... which the run let go of at its end
    kt.fine_tune(model, data, epochs=1, freeze_epochs=1, verbose=0, callbacks=[seen])
    assert during[-1] and custom_gradients() <= before
    # The model trains on with the step it traced: a traced graph runs without its entry.
    history = model.fit(data.train, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.backend_agnostic
def test_train_recalibrates_batchnorm_unfrozen_by_a_callback(tiny_backbone_name, tiny_data,
                                                             monkeypatch):
    # Frozen at the start, unfrozen by StagedUnfreezing during fit: BatchNorm trained,
    # so its statistics must be recomputed at the end.
    import kertransfer.training.run as run

    calls = []
    monkeypatch.setattr(run, "recalibrate_batchnorm",
                        lambda model, data, layers, **kw: calls.append(layers))
    data = kt.data.load(tiny_data, image_size=(16, 16), batch_size=32, validation_split=0.2,
                        seed=0, verbose=0)
    model = kt.build_transfer_model(tiny_backbone_name, data.num_classes,
                                    input_shape=(16, 16, 3), weights=None, freeze="all",
                                    bn="trainable")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    train(model, data, epochs=1, compile=False, verbose=0, validate_each_epoch=False,
          callbacks=[kt.callbacks.StagedUnfreezing([(0, "head")], verbose=0)])
    assert calls == []  # nothing BatchNorm trained
    train(model, data, epochs=2, compile=False, verbose=0, validate_each_epoch=False,
          callbacks=[kt.callbacks.StagedUnfreezing([(0, "head"), (1, "all")], verbose=0)])
    assert calls == ["trainable"]


def test_save_run_is_atomic(tmp_path, tiny_backbone_name):
    model = kt.build_transfer_model(tiny_backbone_name, 2, input_shape=(16, 16, 3),
                                    weights=None)
    out = save_run(model, tmp_path / "run", {"v": 1}, {"loss": [1.0]})
    assert json.loads((out / "config.json").read_text()) == {"v": 1}

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_run(model, tmp_path / "run", {"v": Boom()}, {"loss": [1.0]})
    # The old run is intact and no temporary folder is left behind.
    assert json.loads((out / "config.json").read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_recalibration_fixes_the_small_data_collapse():
    # DESIGN.md trap 1, the very case: a small BatchNorm CNN fits 900 digits in
    # about 195 steps (momentum 0.99) and collapses in inference mode.
    data = kt.data.load("digits", image_size=(16, 16), batch_size=32, seed=0, verbose=0)
    x, y = data.as_numpy("train")
    x, y = x[:900], y[:900]
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Rescaling(1 / 255.0)(inputs)
    for filters in (16, 32):
        h = keras.layers.Conv2D(filters, 3, padding="same")(h)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=7, shuffle=True, verbose=0)  # 203 steps
    train_mode = float(np.mean(np.argmax(keras.ops.convert_to_numpy(model(x[:300], training=True)),
                                         -1) == y[:300]))
    before = model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    kt.recalibrate_batchnorm(model, [x[i:i + 100] for i in range(0, 900, 100)])
    after = model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    assert train_mode > 0.9
    # The collapse: inference-mode accuracy far below what the same weights score in training mode.
    assert before < train_mode - 0.3, "no collapse; the test no longer shows the trap"
    assert after > 0.9


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow tracing detail")
@pytest.mark.parametrize("prebuild", [True, False])
def test_build_training_state_halves_the_tracing(prebuild):
    from kertransfer.training.run import build_training_state

    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    traces = []
    step = model.train_step

    def counted(data):
        traces.append(1)
        return step(data)

    model.train_step = counted
    if prebuild:
        build_training_state(model, (x, y))
        assert model.optimizer.built and model.optimizer.variables
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    # A tf.function that creates variables (optimizer slots, metric totals) is traced twice.
    assert len(traces) == (1 if prebuild else 2)


def test_per_epoch_validation_is_truthful_while_batchnorm_trains(tiny_backbone_name, tiny_data):
    data = kt.data.load(tiny_data, image_size=(16, 16), batch_size=20, validation_split=0.2,
                        seed=0, verbose=0)
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="none", bn="trainable")
    result = train(model, data, epochs=2, learning_rate=1e-2, verbose=0)
    # The last epoch's validation used the statistics the finished model has.
    assert result.history["val_loss"][-1] == pytest.approx(
        model.evaluate(data.val, verbose=0, return_dict=True)["loss"], rel=1e-4)


def test_learning_curves_have_whole_epoch_ticks(tmp_path, monkeypatch):
    from kertransfer.training import run_folder

    figures = []
    monkeypatch.setattr(run_folder, "save_figure", lambda fig, path, **kw: figures.append(fig))
    kt.training.plot_history({"loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.8]},
                             tmp_path / "c.png")
    ticks = figures[0].axes[0].get_xticks()
    assert len(ticks) and all(float(t).is_integer() for t in ticks)


def test_train_keeps_a_users_compile_and_recompiles_its_own(tiny_backbone_name, tiny_data,
                                                          capsys):
    import warnings

    x, y = tiny_data
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    mine = keras.optimizers.SGD(0.05)
    model.compile(mine, "sparse_categorical_crossentropy", metrics=["accuracy"])
    train(model, (x, y), epochs=1, learning_rate=1e-4, verbose=1)
    assert model.optimizer is mine  # the user's settings stay
    assert "keeping the compile settings you gave" in capsys.readouterr().out
    train(model, (x, y), epochs=1, compile=True, learning_rate=1e-4, verbose=0)
    assert model.optimizer is not mine
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)
    # The README's flow: train, freeze, train at another rate, with no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kt.freeze(model, "none")
    train(model, (x, y), epochs=1, learning_rate=3e-5, verbose=0)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-5)
    with pytest.raises(InvalidArgumentError, match="Received: compile='yes'"):
        train(model, (x, y), epochs=1, compile="yes")


def test_verbose_auto_is_a_line_per_epoch_off_a_terminal(monkeypatch):
    import io

    from kertransfer._log import fit_verbose

    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert fit_verbose("auto") == 2 and fit_verbose(1) == 1 and fit_verbose(0) == 0

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdout", Terminal())
    assert fit_verbose("auto") == 1


def test_results_say_which_epoch_they_score_and_ask_for_a_test_split():
    from kertransfer.methods import AdaptResult, PretrainResult
    from kertransfer.training import FineTuneResult, RunResult, TrainResult

    for cls in (TrainResult, FineTuneResult, PretrainResult, AdaptResult):
        assert issubclass(cls, RunResult)
    history = {"loss": [1.0, 0.8, 0.9], "val_loss": [1.1, 0.7, 0.9]}
    plain = TrainResult(model=None, history=history, metrics={"val_accuracy": 0.5})
    assert plain.scored_epoch == 3 and "after epoch 3" in str(plain)
    assert "No test split was held out" in str(plain)
    stopped = FineTuneResult(model=None, history=history, best_epoch=2,
                             metrics={"val_accuracy": 0.5, "test_accuracy": 0.4})
    assert stopped.scored_epoch == 2 and "epoch 2 of 3" in str(stopped)
    assert "No test split" not in str(stopped)
