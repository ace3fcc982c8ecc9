"""Transferability scores against their definitions on small, hand-checked cases."""

import numpy as np
import pytest

from kertransfer.errors import DataError, LabelError
from kertransfer.transferability import h_score, leep, logme, logme_evidence

pytestmark = pytest.mark.backend_agnostic


def _labels(n=60, classes=3, seed=0):
    return np.random.default_rng(seed).permutation(np.arange(n) % classes)


@pytest.mark.parametrize("dims", [5, 80])  # fewer and more features than examples
def test_logme_maximises_the_gaussian_evidence_of_each_label_column(dims):
    rng = np.random.default_rng(dims)
    y = _labels()
    f = rng.normal(size=(60, dims)) + 0.8 * np.eye(3)[y] @ rng.normal(size=(3, dims))
    value, details = logme(f, y, return_details=True)
    assert value == pytest.approx(np.mean(details["per_class"]))
    for k, (a, b, score) in enumerate(zip(details["alpha"], details["beta"],
                                          details["per_class"])):
        column = (y == k).astype(float)
        # The closed form LogME evaluates equals the direct N x N Gaussian formula...
        assert score == pytest.approx(logme_evidence(f, column, a, b), rel=1e-6)
        # ...at the precisions that maximise it.
        for scale in (0.5, 2.0):
            assert logme_evidence(f, column, a * scale, b) < score
            assert logme_evidence(f, column, a, b * scale) < score


def test_logme_ranks_label_features_above_random_ones():
    rng = np.random.default_rng(1)
    y = _labels(90, 3)
    onehot = np.eye(3)[y] + rng.normal(0, 0.05, (90, 3))
    noise = rng.normal(size=(90, 3))
    assert logme(onehot, y) > logme(noise, y)
    # Informative directions hidden among noise still beat noise alone.
    assert logme(np.hstack([onehot, rng.normal(size=(90, 20))]), y) > \
        logme(rng.normal(size=(90, 23)), y)


def test_leep_on_a_hand_computed_case():
    theta = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    y = np.array([0, 1, 1])
    # P(y, z) = [[1/3, 0], [1/6, 1/2]], P(y | z) = [[2/3, 0], [1/3, 1]];
    # the examples' expected predictions of their labels: 2/3, 1, 2/3.
    assert leep(theta, y) == pytest.approx(2 / 3 * np.log(2 / 3), rel=1e-12)
    # A source head that already separates the target's classes scores 0, the maximum.
    y = _labels(30, 3)
    assert leep(np.eye(4)[y], y) == pytest.approx(0.0, abs=1e-12)
    uniform = np.full((30, 4), 0.25)
    assert leep(uniform, y) == pytest.approx(np.log(1 / 3))  # no information: the prior
    with pytest.raises(DataError, match=r"probabilities.*softmax.*Received"):
        leep(np.log(uniform), y)


def test_h_score_of_label_features_is_the_number_of_classes_minus_one():
    y = _labels(60, 4)
    assert h_score(np.eye(4)[y], y) == pytest.approx(3.0)
    noise = np.random.default_rng(0).normal(size=(60, 4))
    assert h_score(noise, y) < 0.5


def test_bad_inputs_are_named():
    with pytest.raises(DataError, match=r"2-D.*Received: features='shape \(5,\)'"):
        logme(np.zeros(5), np.zeros(5, int))
    with pytest.raises(LabelError, match=r"one integer class label.*Received"):
        h_score(np.zeros((5, 2)), np.zeros(4, int))
    with pytest.raises(LabelError, match=r"two classes"):
        logme(np.ones((5, 2)), np.zeros(5, int))
    with pytest.raises(DataError, match=r"NaN"):
        logme(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))
