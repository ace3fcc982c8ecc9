"""kertransfer.validation: one message shape, numpy scalars accepted as numbers."""

import numpy as np
import pytest

from kertransfer.errors import InvalidArgumentError, InvalidTypeError
from kertransfer.validation import check_choice, check_int, check_number, is_int, is_number

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
