"""`SharedFeatures`: what every trial of a search reuses instead of recomputing.

The pooled backbone features (phase 1, the head), computed once per split in
a streaming pass and kept on disk (`kertransfer.training.FeatureCache`, in
the search folder), and the outputs of the frozen bottom blocks (phase 2),
kept in memory within a budget.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import tempfile
from typing import Any

import numpy as np

from kertransfer.data.fingerprint import fingerprint
from kertransfer.data.gathering import gather
from kertransfer.models.surgery import batch_predictor, feature_predictor
from kertransfer.training.feature_store import FeatureCache, StoredFeatures, feature_key


class SharedFeatures:
    """Backbone features shared by the trials of one search.

    Keyed like `kertransfer.training.FeatureCache` (backbone, weights digest,
    input size, preprocessing, pooling, data fingerprint): trials that differ
    only in head, learning rates or depth read the same features. They are
    computed in one streaming pass and kept on disk, in ``directory`` (a
    resumed search or another worker on the same folder reuses them) or in a
    temporary folder that lives as long as this object; trials read them back
    a batch at a time.

    Outputs of a frozen bottom part of the backbone (phase 2, see
    `TransferHyperModel`) are kept in memory only, the least recently used
    dropped first when they exceed their budget.

    Attributes:
        directory: The folder given (None: a temporary one).
        passes: Backbone passes computed so far (cache misses).
        hits: Lookups served from memory or disk.
        partial_passes: Passes through a frozen bottom part (phase 2).
        partial_hits: Phase-2 lookups served from memory.
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = directory
        self._tmp = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kertransfer-features-")
        self.disk = FeatureCache(directory if directory is not None else self._tmp.name,
                                 max_bytes=None)
        self._stored: dict[str, StoredFeatures] = {}
        self._predictor: tuple = (None, None)  # the last model and its compiled feature pass
        self._partial: collections.OrderedDict[str, tuple] = collections.OrderedDict()
        self.passes = 0
        self.hits = 0
        self.partial_passes = 0
        self.partial_hits = 0

    def get(self, model, split: _Split, verbose: int = 0) -> tuple[StoredFeatures, Any]:
        """``model``'s pooled features on ``split`` and the labels ``fit`` takes."""
        key = self.disk.key(model, data_fingerprint=split.fingerprint)
        stored = self._stored.get(key)
        if stored is not None:
            self.hits += 1
        else:
            if self._predictor[0] is not model:  # one compiled pass per model (trial)
                self._predictor = (model, feature_predictor(model))
            stored, hit = self.disk.features(model, split.data, split=split.split, key=key,
                                             function=self._predictor[1], verbose=verbose)
            self._stored[key] = stored
            if hit:
                self.hits += 1
            else:
                self.passes += 1
        return stored, stored.labels if split.labels is None else split.labels

    def get_partial(self, model, block: int, bottom, weights_digest: str, split: _Split,
                    budget_bytes: int) -> tuple[np.ndarray, Any]:
        """``bottom``'s outputs on ``split`` and its labels: the input of backbone block
        ``block`` (``weights_digest``: of the weights below the cut)."""
        key = feature_key(model, split.fingerprint, weights_digest, extra=f"block{block}")
        if key in self._partial:
            self._partial.move_to_end(key)
            self.partial_hits += 1
            return self._partial[key]
        feats, labels = gather(split.data, "data", batch_predictor(bottom), split=split.split)
        found = (np.asarray(feats, dtype="float32"),
                 labels if split.labels is None else split.labels)
        self.partial_passes += 1
        self._partial[key] = found
        while len(self._partial) > 1 and \
                sum(a[0].nbytes for a in self._partial.values()) > budget_bytes:
            self._partial.popitem(last=False)
        return found


@dataclasses.dataclass
class _Split:
    """One split as a search reads it: ``data`` for the feature passes (``(x, key
    labels)`` arrays, a bundle whose ``split`` streams, or a dataset of batches), its
    ``rows`` (None when unknown), and the labels ``fit`` takes when they are in
    memory (None for a stream: the feature pass reads them)."""

    data: Any
    split: str
    rows: int | None
    labels: Any = None
    _fingerprint: str | None = None

    @property
    def x(self):
        """The inputs of an array split."""
        return self.data[0]

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.data, "data", self.split)
        return self._fingerprint

    @classmethod
    def of(cls, x, y) -> _Split:
        if isinstance(y, dict):
            labels = {k: np.asarray(v) for k, v in y.items()}
            key = np.stack([labels[k] for k in sorted(labels)], axis=-1)
            return cls((x, key), "train", len(x), labels)
        return cls((x, np.asarray(y)), "train", len(x), np.asarray(y))

    @classmethod
    def of_bundle(cls, bundle, split: str) -> _Split:
        return cls(bundle, split, int(bundle.counts[split]))
