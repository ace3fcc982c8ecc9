"""`SharedFeatures`: what every trial of a search reuses instead of recomputing.

The pooled backbone features (phase 1, the head) and the outputs of the frozen
bottom blocks (phase 2), computed once per split and kept in memory or in the
search folder (`kertransfer.training.feature_cache`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any

import numpy as np

from kertransfer.models.surgery import compute_features
from kertransfer.training.feature_cache import FeatureCache, feature_key


class SharedFeatures:
    """Backbone features shared by the trials of one search.

    Keyed like `kertransfer.training.FeatureCache` (backbone, weights digest,
    input size, preprocessing, pooling, data fingerprint): trials that differ
    only in head, learning rates or depth read the same features. Kept in
    memory and, with ``directory``, on disk, so a resumed search or another
    worker on the same folder reuses them too.

    Outputs of a frozen bottom part of the backbone (phase 2, see
    `TransferHyperModel`) are kept in memory only, the least recently used
    dropped first when they exceed their budget.

    Attributes:
        passes: Backbone passes computed so far (cache misses).
        hits: Lookups served from memory or disk.
        partial_passes: Passes through a frozen bottom part (phase 2).
        partial_hits: Phase-2 lookups served from memory.
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self.disk = FeatureCache(directory) if directory is not None else None
        self._memory: dict[str, np.ndarray] = {}
        self._partial: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self.passes = 0
        self.hits = 0
        self.partial_passes = 0
        self.partial_hits = 0

    def get(self, model, x: np.ndarray, y: np.ndarray, verbose: int = 0) -> np.ndarray:
        key = feature_key(model, x, y)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        if self.disk is not None:
            feats, hit = self.disk.load_or_compute(model, x, y, verbose=verbose)
        else:
            feats, hit = compute_features(model, x, verbose=verbose), False
        if hit:
            self.hits += 1
        else:
            self.passes += 1
        feats = np.asarray(feats, dtype="float32")  # float16 under mixed precision
        self._memory[key] = feats
        return feats

    def get_partial(self, model, block: int, bottom, weights_digest: str, x: np.ndarray,
                    y: np.ndarray, budget_bytes: int) -> np.ndarray:
        """``bottom``'s outputs on ``x``: the input of backbone block ``block``
        (``weights_digest``: of the weights below the cut)."""
        key = f"{feature_key(model, x, y, weights_digest)}-block{block}"
        if key in self._partial:
            self._partial.move_to_end(key)
            self.partial_hits += 1
            return self._partial[key]
        feats = np.asarray(bottom.predict(x, batch_size=64, verbose=0), dtype="float32")
        self.partial_passes += 1
        self._partial[key] = feats
        while len(self._partial) > 1 and \
                sum(a.nbytes for a in self._partial.values()) > budget_bytes:
            self._partial.popitem(last=False)
        return feats


@dataclasses.dataclass
class _Split:
    """Arrays of one split: images, the labels ``fit`` takes (a dict per task for
    several heads), and one array of them that keys the feature caches."""

    x: np.ndarray
    labels: Any
    key: np.ndarray

    @classmethod
    def of(cls, x, y, relabel=None) -> _Split:
        if relabel is not None:  # a bundle: class labels, relabelled per task when it has tasks
            return cls(x, relabel(y), np.asarray(y))
        if isinstance(y, dict):
            labels = {k: np.asarray(v) for k, v in y.items()}
            return cls(x, labels, np.stack([labels[k] for k in sorted(labels)], axis=-1))
        return cls(x, np.asarray(y), np.asarray(y))
