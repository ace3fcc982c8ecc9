"""kertransfer.validation: one message shape, numpy scalars accepted as numbers."""

import numpy as np
import pytest

from kertransfer.errors import InvalidArgumentError, InvalidTypeError
from kertransfer.validation import (
    check_choice,
    check_fraction,
    check_int,
    check_number,
    is_bool,
    is_int,
    is_number,
)

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_numpy_integers_are_integers(value):
    assert is_int(value) and check_int(value, "epochs", minimum=1) == 3
    assert type(check_int(value, "epochs")) is int


@pytest.mark.parametrize("value", [True, np.bool_(True), 2.0, "3", None, np.float32(3)])
def test_bools_floats_and_strings_are_not_integers(value):
    assert not is_int(value)
    with pytest.raises(InvalidArgumentError, match=r"epochs must be a positive integer\. "
                                                   r"Received: epochs="):
        check_int(value, "epochs", minimum=1)


def test_integer_ranges_read_as_they_are_checked():
    with pytest.raises(InvalidArgumentError, match="must be a non-negative integer"):
        check_int(-1, "freeze_epochs", minimum=0)
    with pytest.raises(InvalidArgumentError, match="must be an integer >= 2 and <= 5"):
        check_int(6, "ways", minimum=2, maximum=5)
    with pytest.raises(InvalidTypeError, match="or None"):
        check_int("x", "batch_size", minimum=1, allow_none=True, error=InvalidTypeError)
    assert check_int(None, "batch_size", allow_none=True) is None


@pytest.mark.parametrize("value", [0.5, np.float32(0.5), np.float64(0.5), 1, np.int64(1)])
def test_numpy_floats_are_numbers(value):
    assert is_number(value)
    assert check_number(value, "temperature", minimum=0, exclusive_minimum=True) == float(value)


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), True, "1"])
def test_numbers_outside_their_range_are_refused(value):
    with pytest.raises(InvalidArgumentError,
                       match=r"temperature must be a number > 0\. Received: temperature="):
        check_number(value, "temperature", minimum=0, exclusive_minimum=True)


def test_choices_suggest_the_closest():
    assert check_choice("dann", "method", ("dann", "coral")) == "dann"
    with pytest.raises(InvalidArgumentError, match=r"Did you mean 'dann'.*Received: method='dan'"):
        check_choice("dan", "method", ("dann", "coral"))


def test_recipes_take_numpy_integers(tiny_data):
    import kertransfer as kt

    x, y = tiny_data
    data = kt.data.from_arrays(x, y, batch_size=np.int64(16), validation_split=0.0, seed=0)
    assert data.batch_size == 16


def test_bounds_read_as_they_are_checked_and_fix_comes_before_received():
    assert check_number(np.float32(0.5), "dropout", minimum=0, maximum=1,
                        exclusive_maximum=True) == 0.5
    with pytest.raises(InvalidArgumentError, match=r"dropout must be a number >= 0 and < 1\. "
                                                   r"A rate\. Received: dropout=1"):
        check_number(1, "dropout", minimum=0, maximum=1, exclusive_maximum=True, fix="A rate.")
    with pytest.raises(InvalidArgumentError, match=r"positive integer\. Count them\. Received"):
        check_int(0, "epochs", minimum=1, fix="Count them.")
    assert is_bool(True) and is_bool(np.bool_(False)) and not is_bool(np.int64(1))


# Call sites: numpy scalars pass (as Python numbers), bools do not.

def test_freeze_shorthands_take_numpy_scalars_and_refuse_numpy_bools():
    from kertransfer.errors import FreezeError
    from kertransfer.freezing import FreezeBlocks, FreezeFraction, resolve_policy

    assert resolve_policy(np.int64(2)) == FreezeBlocks(2)
    assert resolve_policy(np.float32(0.5)) == FreezeFraction(0.5)
    assert type(FreezeBlocks(np.uint8(1)).n) is int
    for value in (True, np.bool_(True)):
        with pytest.raises(FreezeError, match=r"cannot be a bool.*Received: freeze=(np\.)?True"):
            resolve_policy(value)
        with pytest.raises(FreezeError,
                           match=r"non-negative integer.*Received: freeze=(np\.)?True"):
            FreezeBlocks(value)
        with pytest.raises(FreezeError, match=r"\[0, 1\].*Received: freeze=(np\.)?True"):
            FreezeFraction(value)
    with pytest.raises(FreezeError, match=r"Received: freeze='half'"):
        FreezeFraction("half")


def test_transfer_model_arguments_take_numpy_scalars(tiny_backbone_name):
    import kertransfer as kt

    model = kt.build_transfer_model(tiny_backbone_name, np.int64(3),
                                    input_shape=(np.int64(16), 16, 3), weights=None,
                                    dropout=np.float32(0.25), head_units=(np.int32(8),))
    config = model.get_config()
    assert config["num_classes"] == 3 and type(config["dropout"]) is float
    assert [type(u) for u in config["head_units"]] == [int]
    for kwargs, error in (({"num_classes": True}, InvalidTypeError),
                          ({"dropout": True}, InvalidArgumentError),
                          ({"head_units": (True,)}, InvalidArgumentError)):
        args = {"num_classes": 3, "input_shape": (16, 16, 3), "weights": None, **kwargs}
        with pytest.raises(error, match=f"Received: {next(iter(kwargs))}="):
            kt.build_transfer_model(tiny_backbone_name, **args)


def test_discriminative_rates_become_python_floats():
    import keras

    from kertransfer.optimizers import discriminative

    opt = discriminative(keras.optimizers.Adam(1e-3), decay=np.float32(2.5))
    assert type(opt.get_config()["decay"]) is float and opt.get_config()["decay"] == 2.5
    assert discriminative(keras.optimizers.Adam(), multipliers={"head": np.float32(1.0)})
    with pytest.raises(InvalidArgumentError, match=r"decay must be a number > 0\. "
                                                   r"Received: decay=True"):
        discriminative(keras.optimizers.Adam(), decay=True)
    with pytest.raises(InvalidArgumentError, match=r"Received: multipliers="):
        discriminative(keras.optimizers.Adam(), multipliers={"head": True})


def test_few_shot_arguments_take_numpy_scalars():
    from kertransfer.methods.fewshot import LogisticClassifier, evaluate_episodes

    # A numpy float32 C was refused ("C must be a number > 0") before.
    assert LogisticClassifier("pixels", C=np.float32(0.5), batch_size=np.int64(8)).C == 0.5
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (12, 2, 2, 3)).astype("float32")
    y = np.repeat(np.arange(3), 4)
    result = evaluate_episodes("pixels", x, y, ways=np.int64(2), shots=np.int32(1),
                               queries=np.uint8(2), episodes=np.int64(3))
    assert (result.ways, result.shots, result.queries) == (2, 1, 2)
    assert type(result.ways) is int and len(result.accuracies) == 3
    for kwargs, pattern in (({"shots": True}, r"shots must be a positive integer"),
                            ({"ways": np.bool_(True)}, r"ways must be an integer >= 2"),
                            ({"ways": 1}, r"two classes apart.*Received: ways=1"),
                            ({"classifier": "logistc"}, r"Did you mean 'logistic'")):
        with pytest.raises(InvalidArgumentError, match=pattern):
            evaluate_episodes("pixels", x, y, **kwargs)
    with pytest.raises(InvalidArgumentError, match=r"C must be a number > 0\. Received: C=True"):
        LogisticClassifier("pixels", C=True)


def test_probe_and_scores_take_numpy_integers():
    from kertransfer.insight import confusion_matrix, logme
    from kertransfer.training.probe import fit_linear_probe

    rng = np.random.default_rng(0)
    f = rng.normal(size=(40, 5)) + np.repeat(np.eye(5)[:2] * 3, 20, axis=0)
    y = np.repeat([0, 1], 20)
    fit = fit_linear_probe(f, y, num_classes=np.int64(3), grid=[np.float32(1.0)],
                           folds=np.int64(2))
    assert fit.kernel.shape == (5, 3)
    with pytest.raises(InvalidArgumentError, match=r"num_classes must be a positive integer "
                                                   r"or None\. Received: num_classes=True"):
        fit_linear_probe(f, y, num_classes=True)
    with pytest.raises(InvalidArgumentError, match=r"grid.*Received: grid=\[True\]"):
        fit_linear_probe(f, y, grid=[True])
    assert confusion_matrix([0, 1], [1, 1], num_classes=np.int64(3)).shape == (3, 3)
    with pytest.raises(InvalidArgumentError, match=r"Received: num_classes=2.0"):
        confusion_matrix([0, 1], [1, 1], num_classes=2.0)
    assert np.isfinite(logme(f, y, max_iter=np.int64(5)))
    with pytest.raises(InvalidArgumentError, match=r"Received: max_iter=True"):
        logme(f, y, max_iter=True)


def test_other_call_sites_refuse_bools_before_any_work():
    import kertransfer as kt
    from kertransfer.insight import save_overlays
    from kertransfer.training import recalibrate_batchnorm

    with pytest.raises(InvalidArgumentError, match=r"steps must be a positive integer or None"):
        recalibrate_batchnorm(None, None, steps=True)
    with pytest.raises(InvalidArgumentError, match=r"alpha must be a number >= 0 and <= 1"):
        save_overlays(np.zeros((1, 4, 4, 3)), None, "unused", alpha=1.5)
    with pytest.raises(InvalidArgumentError, match=r"Received: default_size=True"):
        kt.register_backbone("bool_sized", lambda **kw: None, blocks=[("b", "x")],
                             default_size=True)
    assert "bool_sized" not in kt.list_backbones()


def test_fractions_read_as_they_are_checked():
    assert check_fraction(np.float32(0.25), "validation_split") == 0.25
    assert check_fraction(0, "validation_split") == 0.0
    assert check_fraction(None, "test_split", allow_none=True) is None
    for value in (1, 1.0, -0.1, float("nan"), True, np.bool_(False), "0.2"):
        with pytest.raises(InvalidArgumentError, match=r"validation_split must be a fraction "
                                                       r"in \[0, 1\)\. Received: "):
            check_fraction(value, "validation_split")
    with pytest.raises(InvalidArgumentError, match=r"cut_frac must be a fraction in \(0, 1\)"):
        check_fraction(0, "cut_frac", open_low=True)


def test_schedules_and_unfreezing_keep_python_numbers_and_refuse_bools():
    import json

    from kertransfer.callbacks import GradualUnfreezing, StagedUnfreezing
    from kertransfer.training.schedules import OneCycle, SlantedTriangular, WarmupCosine

    s = WarmupCosine(np.float32(1e-3), np.int64(100), warmup_steps=np.int32(10),
                     min_learning_rate=np.float64(1e-5))
    config = s.get_config()
    assert json.dumps(config) and type(config["total_steps"]) is int
    assert type(OneCycle(1e-3, np.uint16(50), pct_start=np.float32(0.3)).pct_start) is float
    for make, pattern in (
            (lambda: WarmupCosine(1e-3, True), r"total_steps must be a positive integer"),
            (lambda: WarmupCosine(1e-3, 10, warmup_steps=np.bool_(True)), r"warmup_steps"),
            (lambda: WarmupCosine(1e-3, 10, warmup_steps=10),
             r"integer >= 0 and <= 9\. .*total_steps=10\. Received: warmup_steps=10"),
            (lambda: OneCycle(1e-3, 10, pct_start=True), r"pct_start must be a fraction"),
            (lambda: SlantedTriangular(1e-3, 10, cut_frac=0), r"in \(0, 1\).*cut_frac=0"),
            (lambda: GradualUnfreezing(every=True), r"every must be a positive integer"),
            (lambda: StagedUnfreezing([(0, np.bool_(True))]), r"Received: blocks="),
            (lambda: StagedUnfreezing([(0, 2, True)]), r"learning_rate_multiplier must be a "
                                                       r"number > 0.*=True")):
        with pytest.raises(InvalidArgumentError, match=pattern):
            make()
    stages = StagedUnfreezing([(np.int64(0), "head"), (np.int64(2), np.int64(1),
                                                       np.float32(0.5))])
    assert [type(v) for v in stages.schedule[1]] == [int, int, float]


def test_search_space_and_hypermodel_take_numpy_scalars(tiny_backbone_name):
    """KerasTuner declares only Python numbers; numpy ones in a space raised a TypeError
    there, and a numpy partial_cache_mb made the hypermodel's config unsaveable."""
    import json

    import keras_tuner

    import kertransfer as kt
    from kertransfer.tuning.space import declare, parse_space

    decls = parse_space({"dropout": [np.float32(0.25), np.float32(0.5)],
                         "head_units": [np.int64(0), np.int64(16)],
                         "head_learning_rate": (np.float32(1e-4), np.float32(1e-2)),
                         "head_epochs": np.int64(3)})
    hp = keras_tuner.HyperParameters()
    assert declare(hp, "dropout", decls["dropout"]) == 0.25
    assert declare(hp, "head_units", decls["head_units"]) == 0
    assert declare(hp, "head_epochs", decls["head_epochs"]) == 3
    assert type(decls["head_learning_rate"].low) is float
    with pytest.raises(InvalidArgumentError, match=r"'dropout'.*Received"):
        parse_space({"dropout": [np.bool_(True), 0.2]})
    hm = kt.TransferHyperModel(tiny_backbone_name, num_classes=np.int64(3),
                               input_shape=(16, 16, 3), weights=None, epochs=np.int64(2),
                               partial_cache_mb=np.int64(64))
    assert json.dumps(hm.get_config()) and hm.partial_cache_mb == 64
    with pytest.raises(InvalidArgumentError, match=r"partial_cache_mb must be a non-negative "
                                                   r"integer\. .*MiB.*=True"):
        kt.TransferHyperModel(tiny_backbone_name, num_classes=3, input_shape=(16, 16, 3),
                              weights=None, partial_cache_mb=True)


def test_data_generators_and_loaders_take_numpy_scalars():
    from kertransfer.data.augment import build_augmentation
    from kertransfer.data.loader import load
    from kertransfer.data.waveforms import waveforms

    x, y, _ = waveforms("target", np.int64(2), timesteps=np.uint8(8))
    assert x.shape == (8, 8, 1)
    with pytest.raises(InvalidArgumentError, match=r"timesteps must be a positive integer"):
        waveforms("source", 2, timesteps=True)
    with pytest.raises(InvalidArgumentError, match=r"Did you mean 'target'"):
        waveforms("targt", 2)
    assert build_augmentation({"rotation": np.float32(0.2)}) is not None
    with pytest.raises(InvalidArgumentError,
                       match=r"augment\['zoom'\] must be a fraction in \[0, 1\)\. E\.g\. "
                             r"\{'zoom': 0\.1\}.*Received: augment\['zoom'\]=True"):
        build_augmentation({"zoom": True})
    data = load("digits", image_size=(np.int64(8), np.int32(8)), batch_size=np.int64(16),
                validation_split=np.float32(0.2), seed=np.int64(1), augment=None)
    assert data.batch_size == 16 and type(data.batch_size) is int
    for kwargs, pattern in (({"seed": True}, r"seed must be a non-negative integer"),
                            ({"validation_split": np.bool_(False)},
                             r"validation_split must be a fraction in \[0, 1\)\. E\.g\. 0\.2"),
                            ({"samples_per_class": True}, r"positive integer or None")):
        with pytest.raises(InvalidArgumentError, match=pattern):
            load("digits", image_size=(8, 8), **kwargs)


def test_training_entry_points_refuse_bools_before_any_work(tiny_backbone_name):
    import keras

    import kertransfer as kt
    from kertransfer.errors import FreezeError
    from kertransfer.training.feature_cache import train_head_on_features
    from kertransfer.training.lr_find import lr_find
    from kertransfer.training.recipe import phase_optimizer, unfreeze_top

    for kwargs, pattern in (({"unfreeze_top": True}, r"unfreeze_top must be a non-negative"),
                            ({"patience": True}, r"patience must be a non-negative integer "
                                                 r"or None"),
                            ({"head_fit": "prob"}, r"Did you mean 'probe'")):
        with pytest.raises(InvalidArgumentError, match=pattern):
            kt.fine_tune(None, None, **kwargs)
    with pytest.raises(InvalidArgumentError, match=r"compile must be True, False or 'auto'"):
        kt.train(None, (np.zeros((2, 4, 4, 3)), np.zeros(2, "int32")), compile=1)
    with pytest.raises(InvalidArgumentError, match=r"Received: epochs=True"):
        train_head_on_features(None, None, epochs=True)
    for kwargs, pattern in (({"steps": True}, r"steps must be an integer >= 5"),
                            ({"smoothing": 1.0}, r"smoothing must be a fraction"),
                            ({"start_learning_rate": np.bool_(True)}, r"start_learning_rate"),
                            ({"method": "valey"}, r"Did you mean 'valley'")):
        with pytest.raises(InvalidArgumentError, match=pattern):
            lr_find(None, None, **kwargs)
    with pytest.raises(InvalidArgumentError, match=r"decay must be a number > 0 or None\. "
                                                   r"Received: decay=True"):
        phase_optimizer("adam", 1e-3, decay=True)
    opt = phase_optimizer("adam", 1e-3, decay=np.float32(2.0))
    assert type(opt.get_config()["decay"]) is float
    assert isinstance(phase_optimizer("adam", 1e-3, decay=np.float64(1.0)),
                      keras.optimizers.Adam)
    model = kt.build_transfer_model(tiny_backbone_name, 3, input_shape=(16, 16, 3),
                                    weights=None)
    for blocks in (np.bool_(True), 4):
        with pytest.raises(FreezeError, match=r"blocks must be an integer >= 0 and <= 3\. "
                                              r"The backbone has 3 blocks"):
            unfreeze_top(model, blocks)


def test_serving_and_penalties_take_numpy_scalars_and_refuse_bools():
    from kertransfer.methods import EWC, L2SP, LwF
    from kertransfer.models.imagenet.torch_pickle import _ints
    from kertransfer.serving.plan import check_tolerance, check_version
    from kertransfer.serving.predict import _check_threshold

    assert check_version(np.int64(3)) == 3 and type(check_version(np.int64(3))) is int
    assert check_version(None) is None
    with pytest.raises(InvalidArgumentError, match=r"version must be a positive integer or "
                                                   r"None\. .*Received: version=True"):
        check_version(True)
    assert type(check_tolerance(np.float32(1e-3), "keras")) is float
    with pytest.raises(InvalidArgumentError, match=r"tolerance must be a number >= 0\. It is "
                                                   r"the largest absolute difference"):
        check_tolerance(np.bool_(True), "keras")
    _check_threshold({"tag": np.float32(0.3), "other": None})
    with pytest.raises(InvalidArgumentError,
                       match=r"threshold\['tag'\] must be a number > 0 and < 1 or None\. "
                             r"A probability.*Received: threshold\['tag'\]=True"):
        _check_threshold({"tag": True})
    l2sp = L2SP(alpha=np.float32(0.5), beta=np.int64(0))
    assert (type(l2sp.alpha), type(l2sp.beta)) == (float, float)
    with pytest.raises(InvalidArgumentError, match=r"beta must be a number >= 0\. L2SP"):
        L2SP(beta=True)
    assert type(LwF(weight=np.float32(0.5)).weight) is float
    with pytest.raises(InvalidArgumentError, match=r"weight must be a number >= 0.*=True"):
        LwF(weight=True)
    with pytest.raises(InvalidArgumentError, match=r"lam must be a number >= 0\. EWC"):
        EWC(np.bool_(True), fisher={})
    with pytest.raises(InvalidArgumentError, match=r"samples must be a positive integer or None"):
        EWC(1.0, fisher={}, samples=True)
    assert _ints((np.int64(2), 3)) and not _ints((True, 3))
