"""Domain shift and forgetting methods: each term against its formula, on tiny models."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops
from testing import run_recipe_test

import kertransfer as kt
from kertransfer.errors import InvalidArgumentError, InvalidTypeError
from kertransfer.methods import (
    EWC,
    L2SP,
    GradientReversal,
    LwF,
    RegularizedModel,
    adabn,
    adapt,
    add_head,
    coral_loss,
    dann_lambda,
    fisher_diagonal,
    learn_without_forgetting,
    regularizer_terms,
    remove_regularizers,
    with_regularizers,
)

# Under JAX too (the tests_jax session): every formula and one run of each training
# path; the slower comparisons run under TensorFlow only.
agnostic = pytest.mark.backend_agnostic


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


@pytest.fixture
def model(tiny_backbone_name):
    keras.utils.set_random_seed(0)
    return kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3), weights=None,
                                   freeze="none", bn="trainable")


def _shift(variables, rng, scale=0.1):
    deltas = {}
    for v in variables:
        d = rng.normal(0, scale, v.shape).astype("float32")
        v.assign(_np(v.value).astype("float32") + d)
        deltas[v.path] = d
    return deltas


@agnostic
def test_l2sp_matches_its_formula_and_keeps_copies(model):
    term = L2SP(alpha=0.3, beta=0.05)
    with_regularizers(model, [term])
    backbone = kt.methods.parameters(model.backbone)
    start = {v.path: _np(v.value) for v in backbone}
    rng = np.random.default_rng(0)
    deltas = _shift(backbone, rng)
    for path, value in start.items():  # a snapshot, not the live variable
        np.testing.assert_array_equal(_np(term.start[path].value), value)
    head = [v for v in model.trainable_variables if v.path not in start]
    assert head and len(head) + len(backbone) == len(model.trainable_variables)
    expected = 0.15 * sum(float(np.sum(d.astype("float64") ** 2)) for d in deltas.values())
    expected += 0.025 * sum(float(np.sum(_np(v.value) ** 2)) for v in head)
    assert term.value(model) == pytest.approx(expected, rel=1e-5)
    # Frozen weights cost nothing: only what trains is in the penalty.
    kt.freeze(model, "all")
    expected_head = 0.025 * sum(float(np.sum(_np(v.value) ** 2)) for v in head)
    assert term.value(model) == pytest.approx(expected_head, rel=1e-5)


@agnostic
def test_regularized_fit_stays_near_the_start_and_evaluates_the_plain_loss(model, tiny_data,
                                                                          tiny_backbone_name):
    x, y = tiny_data
    start = [_np(v.value) for v in kt.methods.parameters(model.backbone)]

    def drift(m):
        return sum(float(np.sum((_np(v.value) - s) ** 2))
                   for v, s in zip(kt.methods.parameters(m.backbone), start))

    plain = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="none", bn="trainable")
    plain.set_weights(model.get_weights())
    for m in (plain, model):
        m.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    with_regularizers(model, [L2SP(alpha=5.0, beta=0.0)])  # lr * alpha < 1: stable
    assert [t.name for t in regularizer_terms(model)] == ["l2sp"]
    plain.fit(x, y, epochs=2, batch_size=50, verbose=0)
    history = model.fit(x, y, epochs=2, batch_size=50, verbose=0).history
    assert drift(model) < 0.5 * drift(plain)
    # The term is logged under its name: 0 at the start, growing as weights move.
    assert len(history["l2sp"]) == 2 and 0 < history["l2sp"][0] < history["l2sp"][1]
    assert "l2sp" not in plain.fit(x, y, epochs=1, batch_size=50, verbose=0).history
    # evaluate() reports the compiled loss alone, and the term's value beside it.
    with_term = model.evaluate(x, y, verbose=0, return_dict=True)
    assert with_term["l2sp"] == pytest.approx(regularizer_terms(model)[0].value(model),
                                              rel=1e-4)
    remove_regularizers(model)
    assert regularizer_terms(model) == []
    plain_eval = model.evaluate(x, y, verbose=0, return_dict=True)
    assert "l2sp" not in plain_eval
    assert plain_eval["loss"] == pytest.approx(with_term["loss"], rel=1e-6)


def test_bad_terms_are_named(model):
    with pytest.raises(InvalidArgumentError, match=r"terms.*Received"):
        with_regularizers(model, ["l2sp"])
    with pytest.raises(InvalidArgumentError, match=r"alpha.*Received: alpha=-1"):
        L2SP(alpha=-1)
    with pytest.raises(InvalidArgumentError, match=r"source data.*Received"):
        EWC(10.0)


@agnostic
def test_terms_live_in_the_transfer_models_loss_not_on_the_instance(model, tiny_data, tmp_path):
    x, y = tiny_data
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    own_metrics = list(model._metrics)
    assert with_regularizers(model, [L2SP(0.1, 0.0), L2SP(0.0, 0.01)]) is model
    # No compute_loss set on the instance and no tracker in Keras' private list: the
    # class's compute_loss and metrics read the terms registered on the model.
    assert "compute_loss" not in model.__dict__ and model._metrics == own_metrics
    assert [m.name for m in model.metrics][-2:] == ["l2sp", "l2sp_2"]
    history = model.fit(x, y, epochs=1, batch_size=50, verbose=0,
                        validation_data=(x[:50], y[:50])).history
    assert {"l2sp", "l2sp_2", "val_l2sp", "val_l2sp_2", "accuracy"} <= set(history)
    # Saved with its terms, the model loads as before: the weights, and no terms.
    path = tmp_path / "m.keras"
    model.save(path)
    back = keras.saving.load_model(path)
    assert regularizer_terms(back) == [] and "l2sp" not in [m.name for m in back.metrics]
    np.testing.assert_allclose(_np(back(x[:4])), _np(model(x[:4])), rtol=1e-5, atol=1e-6)
    assert len(back.weights) == len(model.weights)
    remove_regularizers(model)
    assert regularizer_terms(model) == [] and "l2sp" not in [m.name for m in model.metrics]
    assert "l2sp" not in model.fit(x, y, epochs=1, batch_size=50, verbose=0).history


def _plain_classifier():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(hidden))


@agnostic
def test_a_plain_keras_model_is_trained_through_a_wrapper_that_calls_it(tmp_path):
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(60, 6)).astype("float32"), rng.integers(0, 3, 60)
    plain = _plain_classifier()
    plain.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    plain_loss = plain.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    start = {v.path: _np(v.value) for v in plain.trainable_variables}
    term = L2SP(alpha=1.0, beta=0.0, pretrained=plain.trainable_variables)
    with pytest.raises(InvalidTypeError, match="RegularizedModel.*Received: model='Functional'"):
        with_regularizers(plain, [term])  # training plain would leave the terms out
    reg = with_regularizers(RegularizedModel(plain), [term])
    assert isinstance(reg, RegularizedModel) and reg.wrapped is plain
    assert reg.optimizer is plain.optimizer and regularizer_terms(reg) == [term]
    assert "compute_loss" not in plain.__dict__ and regularizer_terms(plain) == []
    # Evaluation: the plain model's loss, the term measured beside it (0 at the start).
    first = reg.evaluate(x, y, verbose=0, return_dict=True)
    assert first["loss"] == pytest.approx(plain_loss, rel=1e-6)
    assert first["l2sp"] == pytest.approx(0.0, abs=1e-9) and "accuracy" in first
    history = reg.fit(x, y, epochs=2, batch_size=20, verbose=0).history
    assert 0 < history["l2sp"][0] < history["l2sp"][1]
    # Training the wrapper trained the plain model's own weights.
    assert any(not np.allclose(start[v.path], _np(v.value)) for v in plain.trainable_variables)
    np.testing.assert_allclose(_np(reg(x[:4])), _np(plain(x[:4])), rtol=1e-6)
    assert term.value(plain) == pytest.approx(term.value(reg), rel=1e-6)
    path = tmp_path / "reg.keras"
    reg.save(path)
    back = keras.saving.load_model(path)
    assert isinstance(back, RegularizedModel) and regularizer_terms(back) == []
    np.testing.assert_allclose(_np(back(x[:4])), _np(plain(x[:4])), rtol=1e-5, atol=1e-6)
    assert int(_np(back.optimizer.iterations)) == int(_np(plain.optimizer.iterations)) == 6
    plain.save(tmp_path / "plain.keras")  # the plain model saves as it did
    again = keras.saving.load_model(tmp_path / "plain.keras")
    assert int(_np(again.optimizer.iterations)) == 6
    np.testing.assert_allclose(_np(again(x[:4])), _np(plain(x[:4])), rtol=1e-5, atol=1e-6)
    assert remove_regularizers(reg) is reg and regularizer_terms(reg) == []
    assert reg.evaluate(x, y, verbose=0, return_dict=True).keys() == {"loss", "accuracy"}


def _softmax_regression():
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])


@agnostic
def test_fisher_matches_the_per_example_gradients_of_a_softmax_regression():
    reg = _softmax_regression()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5)).astype("float32")
    labels = rng.integers(0, 3, 40)
    fisher = fisher_diagonal(reg, x, labels=labels, samples=None, batch_size=16)
    kernel, bias = reg.layers[0].kernel, reg.layers[0].bias
    p = _np(reg(x))
    err = np.eye(3)[labels] - p  # d log p(y|x) / d logits
    grad_w = x[:, :, None].astype("float64") * err[:, None, :]
    np.testing.assert_allclose(fisher[kernel.path], np.mean(grad_w ** 2, axis=0), rtol=1e-4,
                               atol=1e-7)
    np.testing.assert_allclose(fisher[bias.path], np.mean(err ** 2, axis=0), rtol=1e-4,
                               atol=1e-7)
    # Without labels, one label per image is drawn from the model's own prediction.
    sampled = fisher_diagonal(reg, x, samples=None, seed=5)
    draw = np.random.default_rng(5)
    own = np.array([draw.choice(3, p=q / q.sum()) for q in p])
    again = fisher_diagonal(reg, x, labels=own, samples=None)
    np.testing.assert_allclose(sampled[kernel.path], again[kernel.path], rtol=1e-5)
    assert not np.allclose(sampled[kernel.path], fisher[kernel.path])


@agnostic
def test_ewc_penalty_matches_its_formula_on_a_frozen_fisher():
    reg = _softmax_regression()
    x = np.random.default_rng(2).normal(size=(30, 5)).astype("float32")
    term = EWC(lam=4.0, data=x, variables=kt.methods.parameters(reg), samples=None)
    with_regularizers(RegularizedModel(reg), [term])
    star = {p: _np(v.value) for p, v in term.star.items()}
    deltas = _shift(reg.trainable_variables, np.random.default_rng(3))
    expected = 2.0 * sum(float(np.sum(term.fisher[p] * deltas[p].astype("float64") ** 2))
                         for p in deltas)
    assert term.value(reg) == pytest.approx(expected, rel=1e-5)
    for p, v in term.star.items():  # copies of the source solution
        np.testing.assert_array_equal(_np(v.value), star[p])


@agnostic
def test_gradient_reversal_is_identity_forward_and_reverses_gradients():
    layer = GradientReversal()
    x = np.arange(6, dtype="float32").reshape(2, 3)
    w = np.array([1.0, -2.0, 0.5], dtype="float32")
    np.testing.assert_allclose(_np(layer(x, factor=0.7)), x, atol=1e-6)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        grad = jax.grad(lambda v: (layer(v, factor=0.7) * w).sum())(x)
    else:
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out = tf.reduce_sum(layer(xt, factor=0.7) * w)
        grad = tape.gradient(out, xt)
    np.testing.assert_allclose(_np(grad), np.tile(-0.7 * w, (2, 1)), rtol=1e-6)
    assert float(_np(dann_lambda(0.0))) == 0.0
    assert float(_np(dann_lambda(1.0))) == pytest.approx(2 / (1 + np.exp(-10)) - 1)
    assert float(_np(dann_lambda(0.5))) == pytest.approx(2 / (1 + np.exp(-5)) - 1)


@agnostic
def test_coral_loss_matches_numpy():
    rng = np.random.default_rng(4)
    fs = rng.normal(size=(20, 6)).astype("float32")
    ft = (rng.normal(size=(15, 6)) * 2 + 1).astype("float32")
    expected = np.sum((np.cov(fs, rowvar=False) - np.cov(ft, rowvar=False)) ** 2) / (4 * 36)
    assert float(_np(coral_loss(fs, ft))) == pytest.approx(expected, rel=1e-5)
    assert float(_np(coral_loss(fs, fs))) == pytest.approx(0.0, abs=1e-9)


@agnostic
def test_adabn_statistics_equal_the_target_features_mean_and_variance():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    norm = keras.layers.BatchNormalization(name="bn")(conv)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(norm))
    net = keras.Model(inputs, out)
    target = np.random.default_rng(0).uniform(0, 5, (64, 8, 8, 3)).astype("float32") + 3.0
    feats = _np(keras.Model(inputs, conv)(target)).reshape(-1, 4)
    adabn(net, [target])  # one batch of all target images
    bn = net.get_layer("bn")
    np.testing.assert_allclose(_np(bn.moving_mean), feats.mean(0), rtol=1e-4)
    np.testing.assert_allclose(_np(bn.moving_variance), feats.var(0), rtol=1e-3)
    # Equal batches: the mean is still exact.
    adabn(net, [target[:32], target[32:]])
    np.testing.assert_allclose(_np(bn.moving_mean), feats.mean(0), rtol=1e-4)


def test_adabn_warns_about_frozen_batchnorm_layers(model):
    # Frozen BatchNorm layers hold the pretraining data's statistics, not the source's:
    # replacing them broke ImageNet MobileNet v1 on digits -> digits_m (0.517 -> 0.103).
    x = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adabn(model, [x])  # bn="trainable": the source's statistics, no warning
    kt.freeze(model, "none", bn="frozen")
    with pytest.warns(UserWarning, match=r"BatchNorm layer\(s\) that are frozen"):
        adabn(model, [x])


@pytest.mark.parametrize("method", [pytest.param("dann", marks=agnostic), "coral"])
def test_adapt_trains_on_source_and_target_batches(model, tiny_data, method):
    import tensorflow as tf

    x, y = tiny_data
    source = tf.data.Dataset.from_tensor_slices((x[:100], y[:100])).batch(20)
    target = tf.data.Dataset.from_tensor_slices(255.0 - x[100:]).batch(20)
    out = run_recipe_test(adapt, model, source=source, target=target, method=method, epochs=2,
                          expected_epochs=2, changes=model.trainable_variables)
    assert out.model is model and out.method == method
    assert np.isfinite(_np(model(x[:4]))).all()


def test_adapt_rejects_unknown_methods(model):
    with pytest.raises(InvalidArgumentError, match=r"Did you mean 'dann'.*Received: method"):
        adapt(model, source=None, target=None, method="dan")


@agnostic
def test_lwf_distils_the_old_head_at_temperature_two(model, tiny_data):
    x, y = tiny_data
    two = add_head(model, 3)
    assert set(two.output) == {"old", "new"} and two.backbone is model.backbone
    term = LwF(temperature=2.0, weight=0.5)
    term.attach(two)
    before = _np(two(x[:8])["old"])
    _shift([two.old_layer.kernel], np.random.default_rng(0), scale=0.5)  # the head drifts
    now = _np(two(x[:8])["old"])

    def soft(p):
        z = np.log(np.clip(p, 1e-7, 1)) / 2.0
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    expected = 0.5 * 4.0 * np.mean(-np.sum(soft(before) * np.log(soft(now)), axis=-1))
    value = _np(term(two, x[:8], None, two(x[:8])))
    assert float(value) == pytest.approx(expected, rel=1e-4)
    # The teacher is a copy: it still gives the outputs from before the drift.
    np.testing.assert_allclose(_np(term.teacher(x[:8])), before, rtol=1e-5)


def test_lwf_keeps_the_old_head_closer_than_plain_fine_tuning(tiny_backbone_name, tiny_data):
    from kertransfer.methods import fit_two_heads

    x, y = tiny_data
    new_x, new_y = 255.0 - x, (y + 1) % 4  # a new task on other images
    outputs = {}
    for name in ("plain", "lwf"):
        keras.utils.set_random_seed(0)
        src = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                      weights=None, freeze="none", dropout=0.0)
        reference = _np(src(x[:50]))
        if name == "lwf":
            two = learn_without_forgetting(src, (new_x, new_y), 4, warmup_epochs=1, epochs=3,
                                           weight=5.0, learning_rate=5e-3)
        else:
            two = add_head(src, 4)
            fit_two_heads(two, (new_x, new_y), warmup_epochs=1, epochs=3, learning_rate=5e-3)
        outputs[name] = np.abs(_np(two(x[:50])["old"]) - reference).mean()
    assert outputs["lwf"] < 0.5 * outputs["plain"], outputs


def test_add_head_gives_a_shared_backbone_model_that_saves_and_freezes(model, tmp_path):
    two = add_head(model, 3)
    assert isinstance(two, kt.models.SharedBackboneModel)
    assert kt.freezing.is_transfer_model(two) and two.backbone is model.backbone
    kt.freeze(two, "all")
    assert not model.backbone.trainable  # the same layers
    path = tmp_path / "two.keras"
    two.save(path)
    back = keras.saving.load_model(path, compile=False)
    assert isinstance(back, kt.models.SharedBackboneModel)
    assert back.block_patterns == two.block_patterns and set(back.output) == {"old", "new"}
    assert back.activation == two.activation
    x = np.random.default_rng(0).uniform(0, 255, (4, *model.input_shape[1:])).astype("float32")
    for key in ("old", "new"):
        np.testing.assert_allclose(_np(back(x)[key]), _np(two(x)[key]), rtol=1e-5, atol=1e-6)
    assert kt.trainable_summary(back, print_fn=None).frozen_text == "all blocks frozen"


@pytest.mark.parametrize("method", ["adapt", "pretrain", "meta_train", "learn_without_forgetting"])
def test_method_runs_let_go_of_the_graphs_they_traced(method, tiny_backbone_name, tiny_data,
                                                      monkeypatch):
    import kertransfer._graphs as graphs
    from kertransfer.methods.fewshot import meta_train

    released = []
    release = graphs.release_custom_gradients
    monkeypatch.setattr(graphs, "release_custom_gradients",
                        lambda before: released.append(release(before)) or released[-1])
    x, y = tiny_data
    before = graphs.custom_gradients()
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="none")
    if method == "adapt":
        kt.methods.adapt(model, source=(x[:64], y[:64]), target=255.0 - x[64:128],
                         method="coral", epochs=1)
    elif method == "pretrain":
        kt.pretrain(tiny_backbone_name, x[:64], task="rotation", epochs=1, batch_size=32,
                    verbose=0)
    elif method == "meta_train":
        meta_train(model, (x, y), ways=3, shots=1, queries=2, episodes=2, verbose=0)
    else:
        model = kt.methods.learn_without_forgetting(model, (x[:64], y[:64] % 2), 2,
                                                    warmup_epochs=1, epochs=1, batch_size=32)
    # Tracing the run's steps registered TensorFlow custom gradients, which it let go of.
    assert released and released[-1] > 0
    assert graphs.custom_gradients() <= before
