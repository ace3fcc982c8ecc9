"""fine_tune: head first on the frozen backbone, then fine-tuning, in one fit()."""

import keras
import numpy as np
import pytest
from testing import run_recipe_test

import kertransfer as kt
from kertransfer.errors import InvalidArgumentError
from kertransfer.training import fine_tune, plot_history


@pytest.fixture
def bundle(tiny_data):
    return kt.data.load(tiny_data, image_size=(16, 16), batch_size=40, validation_split=0.2,
                        seed=0, verbose=0)


def test_two_phases_in_one_fit(tmp_path, tiny_backbone_name, bundle):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="none", bn="frozen")
    stem = model.backbone.get_layer("stem_conv").get_weights()[0].copy()
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(np.array_equal(
                self.model.backbone.get_layer("stem_conv").get_weights()[0], stem))

    out = run_recipe_test(fine_tune, model, bundle, epochs=2, freeze_epochs=2,
                          learning_rate=1e-2, learning_rate_multiplier=0.1, decay=2.0,
                          patience=None, callbacks=[Watch()], cache_features=False,
                          head_fit="epochs", expected_epochs=4)
    assert out.cached_features is False
    assert seen == [True, True, False, False]  # frozen in phase 1, trained in phase 2
    assert [e for e, _ in out.stages] == [0, 2]
    assert len(out.history["loss"]) == 4 and "val_accuracy" in out.history
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == \
        pytest.approx(1e-3)
    assert isinstance(model.optimizer, kt.optimizers.DiscriminativeMixin)
    plot_history(out.history, tmp_path / "curve.png", stages=out.stages)
    assert (tmp_path / "curve.png").stat().st_size > 0


@pytest.mark.backend_agnostic
def test_phase_one_on_cached_features(tiny_backbone_name, bundle, capsys):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, bn="frozen")
    stem = model.backbone.get_layer("stem_conv").get_weights()[0].copy()
    out = run_recipe_test(fine_tune, model, bundle, epochs=2, freeze_epochs=2,
                          learning_rate=1e-2, patience=None, head_fit="epochs",
                          expected_epochs=4, changes=model.backbone.trainable_variables)
    assert out.cached_features is True
    assert len(out.history["loss"]) == 4 and len(out.history["val_loss"]) == 4
    assert [e for e, _ in out.stages] == [0, 2]
    assert not np.array_equal(model.backbone.get_layer("stem_conv").get_weights()[0], stem)
    # The head's optimizer state carried over: the iteration count covers both phases.
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 4 * 4
    augmented = kt.data.load(bundle.as_numpy("train"), image_size=(16, 16), batch_size=40,
                             seed=0, augment={"contrast": 0.1}, verbose=0)
    out = fine_tune(model, augmented, epochs=1, freeze_epochs=1, patience=None,
                    head_fit="epochs", verbose=1)
    assert out.cached_features is False
    assert "Feature cache skipped: augmentation is on" in capsys.readouterr().out


def test_early_stopping_restores_best(tiny_backbone_name, bundle):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, bn="frozen")
    out = run_recipe_test(fine_tune, model, bundle, epochs=6, freeze_epochs=1,
                          learning_rate=5.0, learning_rate_multiplier=1.0, patience=1,
                          head_fit="epochs")
    # A huge rate makes val_loss worse at once; training stops early.
    losses = out.history["val_loss"]
    assert len(losses) < 7 and out.stopped_epoch > 0
    # The weights kept are the best monitored epoch's (phase 2 only: start_from_epoch).
    best = 1 + int(np.argmin(losses[1:])) + 1
    assert out.best_epoch == best
    now = model.evaluate(bundle.val, verbose=0, return_dict=True)["loss"]
    assert now == pytest.approx(losses[best - 1], rel=1e-4)
    assert out.metrics["val_loss"] == pytest.approx(now, rel=1e-5)
    assert f"epoch {best} of {len(losses)}" in str(out) and "restored" in str(out)


def test_bad_arguments(tiny_backbone_name, bundle):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    with pytest.raises(InvalidArgumentError, match="Received: epochs=0"):
        fine_tune(model, bundle, epochs=0)
    with pytest.raises(InvalidArgumentError, match="Received: learning_rate_multiplier=-1"):
        fine_tune(model, bundle, learning_rate_multiplier=-1)


def _random_states():
    import random

    return random.getstate(), np.random.get_state()[1].copy()


def test_fine_tune_resets_no_global_seed(tiny_backbone_name, bundle):
    states = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                        weights=None)
        out = fine_tune(model, bundle, epochs=1, freeze_epochs=1, patience=None,
                        head_fit="epochs", verbose=0)
        assert out.cached_features is True  # the path that trains a head on features
        states.append(_random_states())
    (py1, np1), (py2, np2) = states
    assert py1 != py2
    assert not np.array_equal(np1, np2)


def test_seeded_head_order_does_not_touch_the_global_state(tiny_backbone_name, bundle):
    keras.utils.set_random_seed(5)
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    before = _random_states()
    kt.training.train_head_on_features(model, bundle, epochs=2, seed=3, verbose=0)
    after = _random_states()
    assert before[0] == after[0] and np.array_equal(before[1], after[1])


def _bn_state(model, names):
    return {n: [w.copy() for w in model.backbone.get_layer(n).get_weights()] for n in names}


def test_recalibration_leaves_frozen_blocks_alone(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    data = kt.data.load((x, y), image_size=(16, 16), batch_size=40, validation_split=0.2,
                        seed=0, augment={"contrast": 0.3}, verbose=0)
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, bn="trainable")
    # Moving statistics that are not the fresh ones, as pretrained blocks would have.
    for layer in model.backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.3, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, "float32"))
    frozen = _bn_state(model, ["stem_bn"])
    trained = _bn_state(model, ["block1_bn", "block2_bn"])
    fine_tune(model, data, epochs=1, freeze_epochs=1, unfreeze_top=2, patience=None, verbose=0)
    after = _bn_state(model, ["stem_bn"])
    for name, weights in frozen.items():
        assert all(np.array_equal(a, b) for a, b in zip(weights, after[name])), name
    # The blocks that trained were recalibrated.
    moved = _bn_state(model, ["block1_bn", "block2_bn"])
    assert not np.array_equal(moved["block2_bn"][2], trained["block2_bn"][2])


def test_per_epoch_validation_uses_recalibrated_statistics(tiny_backbone_name, bundle):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, bn="trainable")
    out = fine_tune(model, bundle, epochs=2, freeze_epochs=1, learning_rate=1e-2, patience=None,
                    verbose=0)
    # The last epoch's validation saw the statistics the finished model has.
    final = model.evaluate(bundle.val, verbose=0, return_dict=True)
    assert out.history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-4)


def test_default_head_is_the_cross_validated_probe(tiny_backbone_name, bundle, capsys):
    from sklearn.linear_model import LogisticRegression

    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, bn="frozen")
    x, y = bundle.as_numpy("train")
    fit = kt.training.probe_head(model, bundle, seed=0, verbose=1)
    assert "logistic-regression probe on 160 examples" in capsys.readouterr().out
    feats = kt.models.compute_features(model, x, verbose=0)
    reference = LogisticRegression(C=fit.C, max_iter=3000).fit(feats, y)
    # The model now predicts what scikit-learn's probe at the chosen C predicts.
    np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict_proba(feats),
                               atol=2e-3)
    out = fine_tune(model, bundle, epochs=1, patience=None, seed=0, verbose=0)
    assert out.probe.C == fit.C and out.cached_features is False
    assert [label.split(" (")[0] for _, label in out.stages] == \
        ["head: linear probe", "fine-tune"]
    assert len(out.history["loss"]) == 1  # no head epochs: the probe is phase 1
    # A plain dataset of (images, labels) batches gets the probe too.
    out = fine_tune(model, bundle.train, epochs=1, patience=None, seed=0, verbose=0)
    assert out.probe.examples == 160
    # A temperature writes the probe's weights divided by it: the same decisions, softer.
    hot = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                  weights=None, bn="frozen")
    hot.set_weights(model.get_weights())
    fit = kt.training.probe_head(hot, bundle, seed=0, temperature=4.0, verbose=0)
    kernel, bias = hot.get_layer("predictions").get_weights()
    np.testing.assert_allclose(kernel, fit.kernel / 4, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bias, fit.bias / 4, rtol=1e-5, atol=1e-7)
    feats = kt.models.compute_features(hot, x, verbose=0)
    probs = hot.predict(x, verbose=0)
    np.testing.assert_array_equal(probs.argmax(1), fit.predict_proba(feats).argmax(1))
    assert probs.max(1).mean() < fit.predict_proba(feats).max(1).mean()
    for bad in (0, -1.0, "warm"):
        with pytest.raises(InvalidArgumentError, match="head_temperature.*Received"):
            fine_tune(hot, bundle, head_temperature=bad, verbose=0)


def test_probe_columns_for_binary_and_missing_classes():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    f = rng.normal(size=(40, 5))
    y = (f[:, 0] > 0).astype("int64") * 2  # classes 0 and 2 of 3; class 1 never seen
    fit = kt.training.fit_linear_probe(f, y, num_classes=3, grid=[1.0])
    logits = f @ fit.kernel + fit.bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    reference = LogisticRegression(C=1.0, max_iter=3000).fit(f, y).predict_proba(f)
    np.testing.assert_allclose(p[:, [0, 2]], reference, atol=1e-4)
    assert p[:, 1].max() < 1e-6 and fit.cv_accuracy is None
    with pytest.raises(InvalidArgumentError, match="Received: grid=\\[\\]"):
        kt.training.fit_linear_probe(f, y, grid=[])
    with pytest.raises(InvalidArgumentError, match="Received: labels="):
        kt.training.fit_linear_probe(f, y.astype("float32"))
    with pytest.raises(InvalidArgumentError, match="below num_classes=2"):
        kt.training.fit_linear_probe(f, y, num_classes=2)


def _penalised_loss(f, y, kernel, bias, C):  # noqa: N803
    logits = f @ kernel + bias
    logits -= logits.max(1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -C * log_p[np.arange(len(y)), y].sum() + 0.5 * (kernel ** 2).sum()


@pytest.mark.parametrize("classes", [2, 4])
def test_probe_on_features_wider_than_examples_solves_the_same_problem(classes):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    y = np.arange(60) % classes
    f = np.maximum(rng.normal(size=(60, 700)) + 0.4 * (np.arange(700) % classes == y[:, None]),
                   0)  # non-negative, like pooled ReLU features
    fit = kt.training.fit_linear_probe(f, y, grid=[1.0])
    assert fit.kernel.shape == (700, classes)
    exact = LogisticRegression(C=1.0, tol=1e-10, max_iter=20000).fit(f, y)
    coef, icpt = exact.coef_, exact.intercept_
    if classes == 2:
        coef, icpt = np.concatenate([np.zeros_like(coef), coef]), np.r_[0.0, icpt]
    best = _penalised_loss(f, y, coef.T, icpt, 1.0)
    assert _penalised_loss(f, y, fit.kernel.astype("float64"), fit.bias, 1.0) == \
        pytest.approx(best, rel=2e-3)
    # Unseen examples of the same classes are classified as the exact optimum does.
    yt = np.arange(200) % classes
    test = np.maximum(rng.normal(size=(200, 700)) + 0.4 * (np.arange(700) % classes ==
                                                           yt[:, None]), 0)
    agree = np.mean(np.argmax(test @ fit.kernel + fit.bias, 1) ==
                    np.argmax(test @ coef.T + icpt, 1))
    assert agree > 0.97


def test_head_fit_falls_back_or_refuses(tiny_backbone_name, bundle, capsys):
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, head_units=(8,))
    out = fine_tune(model, bundle, epochs=1, freeze_epochs=1, patience=None, verbose=1)
    assert out.probe is None and out.cached_features is True
    assert "not as a linear probe: its head has hidden layers" in capsys.readouterr().out
    with pytest.raises(InvalidArgumentError, match="Received: head_fit='probe'"):
        fine_tune(model, bundle, head_fit="probe", verbose=0)
    with pytest.raises(InvalidArgumentError, match="Received: head_fit='lbfgs'"):
        fine_tune(model, bundle, head_fit="lbfgs", verbose=0)


def test_phase_two_is_sized_in_steps_by_default():
    from kertransfer.training.fine_tune import DEFAULT_EPOCHS, MIN_STEPS, phase2_epochs

    assert phase2_epochs(None, [0] * 4) == MIN_STEPS // 4  # 4 steps an epoch: 75 epochs
    assert phase2_epochs(None, [0] * 1000) == DEFAULT_EPOCHS
    assert phase2_epochs(3, [0] * 4) == 3
    assert phase2_epochs(None, iter([])) == DEFAULT_EPOCHS  # length unknown


def test_arrays_with_validation_arrays_are_scored(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None)
    result = fine_tune(model, (x[:150], y[:150]), validation_data=(x[150:], y[150:]),
                       epochs=1, verbose=0)
    expected = model.evaluate(x[150:], y[150:], verbose=0, return_dict=True)["accuracy"]
    assert result.metrics["val_accuracy"] == pytest.approx(expected)
