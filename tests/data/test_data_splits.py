"""Stratified, seeded splits and per-class subsampling (pure numpy, fast)."""

import numpy as np
import pytest

from kertransfer.data.splits import stratified_split, take_per_class

LABELS = np.repeat(np.arange(4), [50, 30, 12, 8])  # imbalanced, N=100


def test_split_is_disjoint_complete_and_sized():
    train, val, test = stratified_split(LABELS, 0.2, 0.1, seed=0)
    assert len(val) == 20 and len(test) == 10 and len(train) == 70
    joined = np.concatenate([train, val, test])
    assert sorted(joined.tolist()) == list(range(len(LABELS)))
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)


def test_split_is_stratified_per_class():
    counts = np.bincount(LABELS)
    _, val, test = stratified_split(LABELS, 0.2, 0.1, seed=3)
    for part, fraction in ((val, 0.2), (test, 0.1)):
        per_class = np.bincount(LABELS[part], minlength=4)
        assert np.all(np.abs(per_class - fraction * counts) <= 1), per_class
    assert np.bincount(LABELS[val], minlength=4).tolist() == [10, 6, 2, 2]


def test_split_is_seeded():
    first = stratified_split(LABELS, 0.2, 0.1, seed=7)
    again = stratified_split(LABELS, 0.2, 0.1, seed=7)
    other = stratified_split(LABELS, 0.2, 0.1, seed=8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


def test_every_class_with_two_examples_keeps_a_training_example():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    train, val, test = stratified_split(labels, 0.5, 0.4, seed=0)
    assert set(labels[train]) == {0, 1, 2, 3}  # the singleton class 3 stays in train
    assert len(val) + len(test) > 0


def test_zero_fractions_hold_out_nothing():
    train, val, test = stratified_split(LABELS, 0.0, 0.0, seed=0)
    assert len(train) == 100 and len(val) == 0 and len(test) == 0


def test_small_positive_fraction_holds_out_at_least_one():
    _, val, _ = stratified_split(LABELS, 0.001, 0.0, seed=0)
    assert len(val) == 1


def test_take_per_class_counts_and_short_classes():
    train, _, _ = stratified_split(LABELS, 0.2, 0.0, seed=0)
    kept, short = take_per_class(train, LABELS, 11, seed=0, num_classes=5)
    per_class = np.bincount(LABELS[kept], minlength=5)
    assert per_class.tolist()[:2] == [11, 11]
    assert per_class[2] == np.sum(LABELS[train] == 2) < 11  # fewer than k: all kept
    assert set(short) == {2, 3, 4} and short[4] == 0
    assert set(kept) <= set(train)
    again, _ = take_per_class(train, LABELS, 11, seed=0, num_classes=5)
    other, _ = take_per_class(train, LABELS, 11, seed=1, num_classes=5)
    np.testing.assert_array_equal(kept, again)
    assert not np.array_equal(kept, other)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_never_empties_a_class_from_train(seed):
    labels = np.repeat(np.arange(10), 2)
    train, val, test = stratified_split(labels, 0.45, 0.45, seed=seed)
    assert np.bincount(labels[train], minlength=10).min() >= 1
    assert len(val) == 9 and len(test) == 1  # one per class can be held out in all
