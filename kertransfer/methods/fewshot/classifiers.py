"""Few-shot classifiers on a pretrained backbone's fixed features, and their evaluation.

See `kertransfer.methods.fewshot` for the classifiers, the ``backbone``
argument and the data every function here reads.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from kertransfer.data.batches import as_batches
from kertransfer.data.forms import form_of
from kertransfer.data.gathering import gather
from kertransfer.errors import DataError, InvalidArgumentError, InvalidTypeError, format_message
from kertransfer.training.probe import fit_linear_probe
from kertransfer.validation import check_choice, check_int, check_number

__all__ = ["EpisodeResult", "LogisticClassifier", "PrototypeClassifier", "evaluate_episodes",
           "extract_features"]

CLASSIFIERS = ("prototype", "logistic")


class ModelFeatures:
    """A model's features, batch by batch: called directly for the first few
    batches, then through ``predict``.

    ``predict`` compiles a graph on its first call, which costs as much as
    several direct calls for a small CNN or MobileNet (about 1 s against
    0.3 s a batch here), so features of a few hundred images, as when ranking
    backbones, come out faster without it.
    """

    EAGER_BATCHES = 4

    def __init__(self, model: keras.Model):
        self.model = model
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        if self.calls <= self.EAGER_BATCHES:
            struct = getattr(self.model, "_inputs_struct", None)  # functional: as built
            inputs = [x] if isinstance(struct, (list, tuple)) and len(struct) == 1 else x
            return keras.tree.map_structure(keras.ops.convert_to_numpy,
                                            self.model(inputs, training=False))
        return self.model.predict(x, verbose=0, batch_size=len(x))


def feature_function(backbone, *, with_outputs: bool = False):
    """Images (raw, 0-255) -> a features function, per the module's ``backbone`` rules.

    ``with_outputs``: a model's features and its outputs from the same pass,
    ``(features, outputs)`` per batch (a transfer model's pooled features and
    its head's predictions, as LEEP reads them); only for a ``keras.Model``.
    """
    if isinstance(backbone, str):
        if backbone != "pixels":
            raise InvalidArgumentError(format_message(
                "A backbone given by name must be 'pixels' (the raw-pixel baseline).",
                expected="a model from build_transfer_model, a keras.Model or callable from "
                         "images to features, or 'pixels'",
                received={"backbone": backbone}))
        return lambda x: np.asarray(x, "float32").reshape(len(x), -1) / 255.0
    if isinstance(backbone, keras.Model):
        try:
            pool = backbone.get_layer("pool").output
        except ValueError:
            pool = None
        if with_outputs:
            return ModelFeatures(keras.Model(backbone.inputs, [
                backbone.outputs[0] if pool is None else pool, backbone.outputs[0]]))
        return ModelFeatures(backbone if pool is None else keras.Model(backbone.inputs, pool))
    if with_outputs:
        raise InvalidTypeError(format_message(
            "Features and outputs of one pass need a keras.Model.",
            received={"backbone": type(backbone).__name__}))
    if callable(backbone):
        return backbone
    raise InvalidTypeError(format_message(
        "backbone must give features of images.",
        expected="a model from build_transfer_model, a keras.Model or callable, or 'pixels'",
        received={"backbone": type(backbone).__name__}))


def _features(fn, images, argument: str = "images", batch_size: int = 256,
              labels: bool | str = False):
    """``(features [N, D], labels or None)`` of ``images`` in any form, in one pass.

    Arrays are cut into batches here; every other form streams through
    `kertransfer.data.adapter.gather` (a bundle's train split, unaugmented),
    so only the features are kept in memory. ``labels`` as in ``gather``.
    """

    if form_of(images, argument) == "images":
        if labels is True:
            as_batches(images, argument, labels=True)  # refuses arrays without labels
        x = np.asarray(images, "float32")
        if x.ndim < 2 or len(x) == 0:
            raise DataError(format_message(
                f"{argument} must be a non-empty array [N, ...]: images [N, height, width, "
                "channels], or sequences [N, timesteps, features] for a sequence backbone.",
                received={argument: f"array of shape {x.shape}"}))
        f = np.concatenate([np.asarray(fn(x[i:i + batch_size]))
                            for i in range(0, len(x), batch_size)])
        y = None
    else:
        f, y = gather(images, argument, lambda xb: fn(np.asarray(xb, "float32")),
                      labels=labels, batch_size=batch_size)
    return flatten_features(f), y


def flatten_features(f: np.ndarray) -> np.ndarray:
    """Features ``[N, D]`` float32: feature maps or per-timestep vectors averaged over
    space or time."""
    f = np.asarray(f).astype("float32")
    if f.ndim > 2:
        f = f.mean(axis=tuple(range(1, f.ndim - 1)))
    return f.reshape(len(f), -1)


def extract_features(backbone, images, *, batch_size: int = 256) -> np.ndarray:
    """Features ``[N, D]`` of raw images (0-255) under ``backbone`` (see the module notes).

    ``images`` is any form kertransfer reads (see `kertransfer.data.adapter`):
    numpy images, ``(x, y)`` arrays, a ``tf.data.Dataset`` or
    ``keras.utils.PyDataset`` of batches, or a DataBundle or ArrayData (its
    train split, unaugmented, in order); labels are ignored. Arrays go in
    batches of ``batch_size``; batched data keeps its own batches.
    """
    return _features(feature_function(backbone), images, "images", batch_size)[0]


def _labels_once(labels, carried):
    if labels is None:
        return carried
    if carried is not None:
        raise InvalidArgumentError(format_message(
            "The labels are given twice: images carry their own labels and labels= is "
            "given too.", fix="Pass the labels once: (x, y) or a bundle alone, or images "
                              "and labels.",
            received={"labels": type(labels).__name__}))
    return labels


def _normalise(f):
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def _labels(labels, n):
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise DataError(format_message(
            "labels must be one label per image.",
            expected=f"an array of shape ({n},)", received={"labels": f"shape {y.shape}"}))
    if len(np.unique(y)) < 2:
        raise DataError(format_message("A classifier needs examples of at least two classes.",
                                       received={"classes": np.unique(y).tolist()}))
    return y


class _FeatureClassifier:
    """Shared parts: features, normalisation, fit/predict on raw images."""

    def __init__(self, backbone, *, normalize: bool = True, batch_size: int = 256):
        self.backbone = backbone
        self.normalize = bool(normalize)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self._features = None
        self.classes_: np.ndarray | None = None

    def _features_and_labels(self, images, labels=None, need: bool = True):
        """Normalised features of ``images`` and their labels (``labels``, or
        those the data carries), in one pass."""
        if self._features is None:
            self._features = feature_function(self.backbone)
        mode = "optional" if labels is not None or not need else True
        f, carried = _features(self._features, images, "images", self.batch_size, labels=mode)
        f = _normalise(f) if self.normalize else f
        return f, _labels_once(labels, carried)

    def features(self, images) -> np.ndarray:
        """The (normalised) features the classifier works on (``images`` in any form;
        labels ignored)."""
        if self._features is None:
            self._features = feature_function(self.backbone)
        f, _ = _features(self._features, images, "images", self.batch_size)
        return _normalise(f) if self.normalize else f

    def fit(self, images, labels=None):
        """Fit on the support set: raw ``images`` with ``labels``; returns ``self``.

        ``images`` is any form kertransfer reads (see `kertransfer.data.adapter`);
        without ``labels``, the labels it carries (``(x, y)``, a dataset of
        ``(x, y)`` batches, a DataBundle or ArrayData).
        """
        f, y = self._features_and_labels(images, labels)
        return self.fit_features(f, _labels(y, len(f)))

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities ``[N, classes]``, columns in the order of ``classes_``."""
        self._check_fitted()
        return self.proba_features(self.features(images))

    def predict(self, images) -> np.ndarray:
        """The predicted label of each image (labels as given to `fit`)."""
        return self.classes_[np.argmax(self.predict_proba(images), axis=1)]

    def score(self, images, labels=None) -> float:
        """Accuracy on ``images`` with true ``labels`` (or the labels ``images`` carries)."""
        self._check_fitted()
        f, y = self._features_and_labels(images, labels)
        y = np.asarray(y)
        if y.shape != (len(f),):
            raise DataError(format_message(
                "labels must be one label per image.",
                expected=f"an array of shape ({len(f)},)", received={"labels": f"shape {y.shape}"}))
        pred = self.classes_[np.argmax(self.proba_features(f), axis=1)]
        return float(np.mean(pred == y))

    def _check_fitted(self):
        if self.classes_ is None:
            raise InvalidArgumentError(format_message(
                f"{type(self).__name__} is not fitted yet.", fix="call fit(images, labels) first",
                received={"classes_": None}))

    def fit_features(self, f, y):  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def proba_features(self, f):  # pragma: no cover - implemented by subclasses
        raise NotImplementedError


class PrototypeClassifier(_FeatureClassifier):
    """Prototypical-network classifier (Snell et al. 2017) on a fixed backbone.

    ``fit`` stores one prototype per class: the mean of the class's
    L2-normalised support features. ``predict`` picks the nearest prototype
    by squared Euclidean distance; ``predict_proba`` is the softmax of the
    negative distances.

    Args:
        backbone: See the module notes (a model from `build_transfer_model`,
            a model or callable from images to features, or ``"pixels"``).
        normalize: L2-normalise features (as in the paper's cosine variants
            and Tian et al.; recommended).
        batch_size: Images per feature batch.

    Attributes:
        classes_: The labels, in the order of the prototypes.
        prototypes_: ``[classes, D]`` array.
    """

    def fit_features(self, f, y):
        """Fit on features ``f`` ``[N, D]`` (already normalised) and labels ``y``."""
        self.classes_ = np.unique(y)
        self.prototypes_ = np.stack([f[y == c].mean(axis=0) for c in self.classes_])
        return self

    def proba_features(self, f):
        d = ((f[:, None, :] - self.prototypes_[None]) ** 2).sum(-1)
        logits = -d - (-d).max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


class LogisticClassifier(_FeatureClassifier):
    """Logistic regression on L2-normalised features (Tian et al. 2020's baseline).

    Args:
        backbone: See the module notes.
        C: Inverse L2 strength of scikit-learn's ``LogisticRegression``.
        normalize: L2-normalise features first.
        batch_size: Images per feature batch.
    """

    def __init__(self, backbone, *, C: float = 10.0, normalize: bool = True,  # noqa: N803
                 batch_size: int = 256):
        super().__init__(backbone, normalize=normalize, batch_size=batch_size)
        self.C = check_number(C, "C", minimum=0, exclusive_minimum=True)

    def fit_features(self, f, y):
        # kertransfer's one logistic regression: the probe `fine_tune` starts from.
        self.classes_, index = np.unique(y, return_inverse=True)
        self._fit = fit_linear_probe(f, index, len(self.classes_), grid=(self.C,))
        return self

    def proba_features(self, f):
        return self._fit.predict_proba(f)


@dataclasses.dataclass
class EpisodeResult:
    """Accuracy over N-way K-shot episodes.

    Attributes:
        mean: Mean query accuracy over the episodes.
        ci95: Half-width of the 95% confidence interval of the mean
            (``1.96 * sd / sqrt(episodes)``).
        accuracies: Accuracy of each episode.
        ways, shots, queries: The episode shape.
        classifier: ``"prototype"`` or ``"logistic"``.
    """

    mean: float
    ci95: float
    accuracies: np.ndarray
    ways: int
    shots: int
    queries: int
    classifier: str

    def __str__(self) -> str:
        return (f"{self.ways}-way {self.shots}-shot ({self.classifier}, "
                f"{len(self.accuracies)} episodes): {self.mean:.3f} ± {self.ci95:.3f}")


def evaluate_episodes(backbone, images, labels=None, *, ways: int = 5, shots: int = 1,
                      queries: int = 15, episodes: int = 200, classifier: str = "prototype",
                      seed: int = 0, normalize: bool = True, batch_size: int = 256,
                      C: float = 10.0) -> EpisodeResult:  # noqa: N803
    """Score a few-shot classifier on random N-way K-shot episodes.

    Each episode draws ``ways`` classes, then ``shots`` support and
    ``queries`` query images per class (disjoint); the classifier is fitted
    on the support set and scored on the queries. Features of all images are
    computed once.

    Args:
        backbone: See the module notes.
        images: Raw images ``[N, H, W, C]`` (0-255), or labelled data in
            any form kertransfer reads (``(x, y)`` arrays, a dataset or
            ``PyDataset`` of ``(x, y)`` batches, a DataBundle or ArrayData);
            see `kertransfer.data.adapter`.
        labels: Their labels ``[N]`` (None: the labels ``images`` carries).
        ways: Classes per episode.
        shots: Labelled examples per class.
        queries: Query images per class.
        episodes: Number of episodes.
        classifier: ``"prototype"`` or ``"logistic"``.
        seed: Seed of the episode sampling.
        normalize: L2-normalise features.
        batch_size: Images per feature batch.
        C: ``LogisticClassifier``'s C.

    Returns:
        An `EpisodeResult` (mean accuracy with its 95% interval).
    """
    ways = check_int(ways, "ways", minimum=2, fix="An episode tells at least two classes apart.")
    shots, queries, episodes = (check_int(value, name, minimum=1) for name, value in
                                (("shots", shots), ("queries", queries), ("episodes", episodes)))
    check_choice(classifier, "classifier", CLASSIFIERS, what="few-shot classifier")
    cls = PrototypeClassifier if classifier == "prototype" else LogisticClassifier
    kwargs = {"C": C} if classifier == "logistic" else {}
    model = cls(backbone, normalize=normalize, batch_size=batch_size, **kwargs)
    f, y = model._features_and_labels(images, labels)
    y = _labels(y, len(f))
    classes, counts = np.unique(y, return_counts=True)
    usable = classes[counts >= shots + queries]
    if len(usable) < ways:
        raise DataError(format_message(
            f"Only {len(usable)} classes have {shots + queries} images (shots + queries).",
            expected=f"at least {ways} such classes",
            received={"ways": ways, "shots": shots, "queries": queries}))
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(y == c) for c in usable}
    accs = np.empty(episodes)
    for e in range(episodes):
        chosen = rng.choice(usable, ways, replace=False)
        support, query = [], []
        for c in chosen:
            idx = rng.choice(by_class[c], shots + queries, replace=False)
            support.append(idx[:shots])
            query.append(idx[shots:])
        support, query = np.concatenate(support), np.concatenate(query)
        model.fit_features(f[support], y[support])
        pred = model.classes_[np.argmax(model.proba_features(f[query]), axis=1)]
        accs[e] = np.mean(pred == y[query])
    sd = float(np.std(accs, ddof=1)) if episodes > 1 else 0.0
    return EpisodeResult(mean=float(accs.mean()), ci95=1.96 * sd / math.sqrt(episodes),
                         accuracies=accs, ways=ways, shots=shots, queries=queries,
                         classifier=classifier)
