"""kertransfer.validation: one message shape, numpy scalars accepted as numbers."""

import numpy as np
import pytest

from kertransfer.errors import InvalidArgumentError, InvalidTypeError
from kertransfer.validation import (
    check_choice,
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
