"""Stratified, seeded train/validation/test splits and per-class subsampling.

Every split is drawn per class, so each held-out set keeps the class balance
of the source, and with a seed, so the same seed always gives the same split.
"""

from __future__ import annotations

import numpy as np

__all__ = ["split_with_test_set", "stratified_split", "take_per_class"]


def _allocate(
    total: int, quotas: np.ndarray, capacity: np.ndarray, priority: np.ndarray
) -> np.ndarray:
    """Share ``total`` examples among classes, as close to ``quotas`` as capacity allows.

    Largest-remainder rounding: each class first gets the floor of its quota,
    then the examples left go one at a time to the class furthest below its
    quota (ties broken by the seeded ``priority``).

    Args:
        total: How many examples to take in all.
        quotas: Ideal (fractional) number per class.
        capacity: Most that each class can give.
        priority: A seeded random tie-break per class.

    Returns:
        The number to take from each class (int array).
    """
    alloc = np.minimum(np.floor(quotas).astype(np.int64), capacity)
    remaining = total - int(alloc.sum())
    while remaining > 0:
        room = capacity - alloc
        if not room.any():
            break
        deficit = np.where(room > 0, quotas - alloc, -np.inf)
        best = np.flatnonzero(deficit == deficit.max())
        chosen = best[np.argmax(priority[best])]
        alloc[chosen] += 1
        remaining -= 1
    return alloc


def stratified_split(
    labels: np.ndarray, validation_split: float, test_split: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split example indices into train, validation and test, per class.

    The held-out sizes are ``round(fraction * N)`` overall (at least one when
    the fraction is positive), shared among classes in proportion to their
    size. A class with two or more examples always keeps at least one for
    training; a class with a single example keeps it for training.

    Args:
        labels: Integer class label per example, shape ``[N]``.
        validation_split: Fraction of examples for validation, in ``[0, 1)``.
        test_split: Fraction of examples for test, in ``[0, 1)``.
        seed: Seed of the random draw.

    Returns:
        ``(train, val, test)``: sorted int64 index arrays, disjoint, covering
        ``range(N)``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    priority = rng.random((2, len(classes)))
    capacity = np.maximum(counts - 1, 0)
    taken = []
    for row, fraction in enumerate((validation_split, test_split)):
        if fraction <= 0:
            taken.append(np.zeros(len(classes), dtype=np.int64))
            continue
        total = max(1, round(fraction * n))
        alloc = _allocate(total, fraction * counts, capacity, priority[row])
        capacity = capacity - alloc
        taken.append(alloc)
    train, val, test = [], [], []
    for i, cls in enumerate(classes):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val, n_test = int(taken[0][i]), int(taken[1][i])
        val.append(members[:n_val])
        test.append(members[n_val : n_val + n_test])
        train.append(members[n_val + n_test :])

    def _join(parts: list[np.ndarray]) -> np.ndarray:
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate(parts)).astype(np.int64)

    return _join(train), _join(val), _join(test)


def _draw(
    labels: np.ndarray,
    pool: np.ndarray,
    total: int,
    keep_one: bool,
    classes: np.ndarray,
    priority: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``total`` of the indices ``pool`` per class, in proportion to the classes' sizes.

    Returns:
        ``(drawn, rest)``: sorted int64 indices.
    """
    pool_labels = labels[pool]
    counts = np.array([np.count_nonzero(pool_labels == c) for c in classes], dtype=np.int64)
    capacity = np.maximum(counts - 1, 0) if keep_one else counts
    quotas = total * counts / max(1, len(pool))
    alloc = _allocate(total, quotas, capacity, priority)
    drawn, rest = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for cls, n in zip(classes, alloc):
        members = rng.permutation(pool[pool_labels == cls])
        drawn.append(members[: int(n)])
        rest.append(members[int(n) :])
    return np.sort(np.concatenate(drawn)), np.sort(np.concatenate(rest))


def split_with_test_set(
    labels: np.ndarray,
    test_only: np.ndarray,
    validation_split: float,
    test_split: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a source that has an official test set, keeping that set apart.

    The sizes are those of `stratified_split` (``round(fraction * N)`` of all
    ``N`` examples, at least one when the fraction is positive), but the test
    examples are drawn only from the official test set (all of it when the
    fraction asks for more) and the validation examples only from the rest,
    each stratified per class and seeded. Test-set examples that are not drawn
    are left out of every split; with ``test_split=0`` the test set is unused.

    Args:
        labels: Integer class label per example, shape ``[N]``.
        test_only: Bool mask ``[N]`` of the official test set.
        validation_split: Fraction of examples for validation, in ``[0, 1)``.
        test_split: Fraction of examples for test, in ``[0, 1)``.
        seed: Seed of the random draw.

    Returns:
        ``(train, val, test)``: sorted, disjoint int64 index arrays; ``test``
        holds official test examples only, ``train`` and ``val`` none.
    """
    labels = np.asarray(labels)
    test_only = np.asarray(test_only, dtype=bool)
    n = len(labels)
    rng = np.random.default_rng([seed, 3])
    classes = np.unique(labels)
    priority = rng.random((2, len(classes)))
    train_pool = np.flatnonzero(~test_only).astype(np.int64)
    test_pool = np.flatnonzero(test_only).astype(np.int64)
    val = test = np.zeros(0, np.int64)
    train = train_pool
    if validation_split > 0:
        total = max(1, round(validation_split * n))
        val, train = _draw(labels, train_pool, total, True, classes, priority[0], rng)
    if test_split > 0:
        total = min(len(test_pool), max(1, round(test_split * n)))
        test, _ = _draw(labels, test_pool, total, False, classes, priority[1], rng)
    return train, val, test


def take_per_class(
    indices: np.ndarray, labels: np.ndarray, k: int, seed: int, num_classes: int
) -> tuple[np.ndarray, dict[int, int]]:
    """Keep at most ``k`` of ``indices`` per class, drawn at random with a seed.

    Args:
        indices: Example indices to choose from.
        labels: Integer label of every example of the source (indexed by ``indices``).
        k: How many to keep per class.
        seed: Seed of the random draw.
        num_classes: Number of classes; classes absent from ``indices`` count as short.

    Returns:
        ``(kept, short)``: the sorted kept indices, and ``{class: available}``
        for every class that has fewer than ``k`` examples.
    """
    rng = np.random.default_rng([seed, 1])
    indices = np.asarray(indices, dtype=np.int64)
    chosen_labels = np.asarray(labels)[indices]
    kept, short = [], {}
    for cls in range(num_classes):
        members = indices[chosen_labels == cls]
        if len(members) < k:
            short[cls] = len(members)
            kept.append(members)
        else:
            kept.append(rng.choice(members, size=k, replace=False))
    if not kept:
        return np.zeros(0, dtype=np.int64), short
    return np.sort(np.concatenate(kept)).astype(np.int64), short
