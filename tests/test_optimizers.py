"""Optimizers at unfreeze: first updates of a newly trained variable are a fresh optimizer's."""

import keras
import numpy as np
import pytest

import kertransfer as kt
from kertransfer.callbacks import StagedUnfreezing
from kertransfer.errors import InvalidArgumentError, InvalidTypeError
from kertransfer.training.optimizers import build_optimizer, make_optimizer

LR = 1e-3
HEAD_STEPS = 300  # head-only steps before the unfreeze: Adam's global bias correction is off there


class FirstStep(keras.callbacks.Callback):
    """|delta w| / lr of a backbone kernel over the first step of epoch ``epoch``."""

    def __init__(self, epoch, layer="stem_conv"):
        super().__init__()
        self.epoch, self.layer = epoch, layer
        self.ratio = None

    def _kernel(self):
        return np.array(self.model.backbone.get_layer(self.layer).get_weights()[0])

    def on_epoch_begin(self, epoch, logs=None):
        self._on = epoch == self.epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._on and batch == 0:
            self._before = self._kernel()

    def on_train_batch_end(self, batch, logs=None):
        if self._on and batch == 0:
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.ratio = float(np.median(np.abs(self._kernel() - self._before)) / lr)


def _model(name, **kwargs):
    return kt.build_transfer_model(name, 4, input_shape=(16, 16, 3), weights=None,
                                   freeze="all", **kwargs)


def _first_step_ratio(model, data, optimizer, head_epochs):
    x, y = data
    model.compile(optimizer, "sparse_categorical_crossentropy")
    probe = FirstStep(head_epochs)
    steps = [(0, "head"), (head_epochs, "all")] if head_epochs else [(0, "all")]
    model.fit(x, y, batch_size=2, epochs=head_epochs + 1, shuffle=False, verbose=0,
              callbacks=[StagedUnfreezing(steps, verbose=0), probe])
    return probe.ratio


def _optimizers():
    return {
        "adam": lambda: keras.optimizers.Adam(LR),
        "adamw": lambda: keras.optimizers.AdamW(LR, weight_decay=0.0),
        "schedule": lambda: keras.optimizers.Adam(
            keras.optimizers.schedules.ExponentialDecay(LR, 10_000, 0.999)),
        "discriminative": lambda: kt.optimizers.discriminative(
            keras.optimizers.Adam(LR), multipliers={"head": 1.0}),
        "loss_scale": lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(LR)),
    }


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("kind", list(_optimizers()))
def test_newly_unfrozen_kernel_gets_a_fresh_optimizers_first_step(tiny_backbone_name, tiny_data,
                                                                 kind):
    x, y = tiny_data
    data = (np.concatenate([x, x, x]), np.concatenate([y, y, y]))
    data = (data[0][:2 * HEAD_STEPS], data[1][:2 * HEAD_STEPS])
    make = _optimizers()[kind]
    keras.utils.set_random_seed(0)
    fresh = _first_step_ratio(_model(tiny_backbone_name), (data[0][:4], data[1][:4]), make(), 0)
    keras.utils.set_random_seed(0)
    late = _first_step_ratio(_model(tiny_backbone_name), data, make(), 1)
    assert 0.5 < fresh < 1.5  # Adam's first step is about the rate
    assert late == pytest.approx(fresh, rel=0.10)


@pytest.mark.backend_agnostic
def test_the_compiled_optimizer_stays_the_models(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = _model(tiny_backbone_name, bn="trainable")
    opt = keras.optimizers.Adam(LR)
    model.compile(opt, "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=50, epochs=2, verbose=0,
              callbacks=[StagedUnfreezing([(0, "head"), (1, "all")], verbose=0)])
    assert model.optimizer is opt
    assert isinstance(opt, keras.optimizers.Adam)
    assert int(keras.ops.convert_to_numpy(opt.iterations)) == 8
    # The head trained 8 steps, the backbone 4.
    head_kernel = model.get_layer("predictions").kernel
    stem_kernel = model.backbone.get_layer("stem_conv").kernel
    assert int(keras.ops.convert_to_numpy(opt.step_of(head_kernel))) == 8
    assert int(keras.ops.convert_to_numpy(opt.step_of(stem_kernel))) == 4


@pytest.mark.backend_agnostic
def test_a_rebuild_keeps_the_state_of_what_trained(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = _model(tiny_backbone_name)
    opt = keras.optimizers.Adam(LR)
    model.compile(opt, "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=50, epochs=1, verbose=0)  # a plain Adam, built on the head
    kernel = model.get_layer("predictions").kernel
    moments = [np.array(v) for v in opt.variables if v.name.startswith("predictions_kernel")]
    kt.freeze(model, "none", recompile=False)
    build_optimizer(opt, model.trainable_variables, model)
    assert model.optimizer is opt
    after = [np.array(v) for v in opt.variables if v.name.startswith("predictions_kernel")
             and not v.name.endswith("_step")]
    assert len(after) == 2 and all(np.array_equal(a, b) for a, b in zip(moments, after))
    assert int(keras.ops.convert_to_numpy(opt.step_of(kernel))) == 4
    stem = model.backbone.get_layer("stem_conv").kernel
    assert int(keras.ops.convert_to_numpy(opt.step_of(stem))) == 0


def test_make_optimizer_takes_names_and_instances():
    assert isinstance(make_optimizer("adamw", 1e-2), keras.optimizers.AdamW)
    opt = keras.optimizers.AdamW(1e-3, weight_decay=0.05)
    assert make_optimizer(opt, 1e-2) is opt
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(1e-2)
    copy = make_optimizer(opt, copy=True)
    assert copy is not opt and isinstance(copy, keras.optimizers.AdamW)
    assert copy.weight_decay == pytest.approx(0.05)
    with pytest.raises(InvalidArgumentError, match="Received: optimizer='adagrad-x'"):
        make_optimizer("adagrad-x", 1e-3)
    with pytest.raises(InvalidTypeError, match="Received: optimizer=3"):
        make_optimizer(3, 1e-3)


def _step(opt, variable):
    return int(keras.ops.convert_to_numpy(opt.step_of(variable)))


@pytest.mark.parametrize("cache", [True, False])
def test_fine_tune_keeps_the_users_optimizer_and_counts_steps_per_variable(
        tiny_backbone_name, tiny_data, cache):
    data = kt.data.load(tiny_data, image_size=(16, 16), batch_size=40, seed=0, verbose=0)
    model = _model(tiny_backbone_name)
    opt = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    kt.fine_tune(model, data, epochs=1, freeze_epochs=1, head_fit="epochs", optimizer=opt,
                 patience=None, cache_features=cache, verbose=0)
    assert model.optimizer is opt
    head = model.get_layer("predictions").kernel
    stem = model.backbone.get_layer("stem_conv").kernel
    assert (_step(opt, head), _step(opt, stem)) == (10, 5)  # 5 steps an epoch


def test_a_trial_phase_two_counts_steps_per_variable(tiny_backbone_name, tiny_data):
    import keras_tuner

    data = kt.data.load(tiny_data, image_size=(16, 16), batch_size=40, validation_split=0.2,
                        seed=0, verbose=0)
    hm = kt.TransferHyperModel(tiny_backbone_name, num_classes=4, input_shape=(16, 16, 3),
                               weights=None, epochs=2, batch_size=40, partial_cache_mb=0,
                               space={"head_epochs": 1})
    hp = keras_tuner.HyperParameters()
    hm.declare(hp)
    hp.values[f"{tiny_backbone_name}/unfreeze_top"] = 3
    model = hm.build(hp)
    compiled = model.optimizer
    hm.fit(hp, model, data, verbose=0)
    assert model.optimizer is compiled
    head = model.get_layer("predictions").kernel
    stem = model.backbone.get_layer("stem_conv").kernel
    assert (_step(compiled, head), _step(compiled, stem)) == (8, 4)


@pytest.mark.backend_agnostic
def test_lwf_joint_phase_goes_on_with_the_warmup_optimizer(tiny_backbone_name, tiny_data):
    from kertransfer.methods import add_head, fit_two_heads

    x, y = tiny_data
    two = add_head(_model(tiny_backbone_name), 3)
    opt = keras.optimizers.Adam(1e-3)
    fit_two_heads(two, (x, y % 3), warmup_epochs=1, epochs=1, optimizer=opt, batch_size=50)
    assert two.optimizer is opt
    new_head = two.get_layer("new_predictions").kernel
    stem = two.backbone.get_layer("stem_conv").kernel
    assert (_step(opt, new_head), _step(opt, stem)) == (8, 4)


def _global_states():
    import random

    return random.getstate(), np.random.get_state()[1].copy()


@pytest.mark.backend_agnostic
def test_adapt_and_pretrain_train_with_the_optimizer_given(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                    weights=None, freeze="none")
    opt = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    kt.methods.adapt(model, source=(x[:64], y[:64]), target=255.0 - x[64:128],
                     method="coral", epochs=1, optimizer=opt)
    assert int(keras.ops.convert_to_numpy(opt.iterations)) > 0
    opt = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    kt.pretrain(tiny_backbone_name, x[:64], task="rotation", epochs=1, batch_size=32,
                optimizer=opt, verbose=0)
    assert int(keras.ops.convert_to_numpy(opt.iterations)) > 0


@pytest.mark.backend_agnostic
def test_adapt_and_pretrain_reset_no_global_seed(tiny_backbone_name, tiny_data):
    x, y = tiny_data
    after = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        model = kt.build_transfer_model(tiny_backbone_name, 4, input_shape=(16, 16, 3),
                                        weights=None, freeze="none")
        kt.methods.adapt(model, source=(x[:64], y[:64]), target=255.0 - x[64:128],
                         method="dann", epochs=1, seed=0)
        before = _global_states()
        kt.pretrain(tiny_backbone_name, x[:64], task="rotation", epochs=1, batch_size=32,
                    seed=0, verbose=0)
        state = _global_states()
        # A seeded pretrain leaves the caller's random state as it found it.
        assert state[0] == before[0] and np.array_equal(state[1], before[1])
        after.append(state)
    assert after[0][0] != after[1][0] and not np.array_equal(after[0][1], after[1][1])


def test_a_model_saved_after_a_rebuild_loads_with_its_optimizer_state(tiny_backbone_name,
                                                                      tiny_data, tmp_path):
    import subprocess
    import sys

    x, y = tiny_data
    model = _model(tiny_backbone_name)
    model.compile(kt.optimizers.discriminative(keras.optimizers.Adam(LR), decay=2.0),
                  "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=50, epochs=2, verbose=0,
              callbacks=[StagedUnfreezing([(0, "head"), (1, "all")], verbose=0)])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    stem = loaded.backbone.get_layer("stem_conv").kernel
    assert _step(loaded.optimizer, stem) == 4
    saved = {v.name: np.array(v) for v in model.optimizer.variables}
    for v in loaded.optimizer.variables:
        np.testing.assert_array_equal(np.array(v), saved[v.name])
    # A new process knows the optimizer's class from `import kertransfer` alone.
    code = ("import keras, kertransfer; "
            f"m = keras.saving.load_model({str(tmp_path / 'm.keras')!r}); "
            "print(type(m.optimizer).__name__, int(m.optimizer.iterations))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["StepCountedDiscriminativeAdam", "8"]
