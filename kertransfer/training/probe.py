"""A linear probe as the head: logistic regression on the frozen backbone's features.

`fit_linear_probe` fits L2-regularised multinomial logistic regression on
features, its strength ``C`` chosen by stratified cross-validation, and
`probe_head` writes the result into a transfer model's classification layer,
so the model predicts what the probe predicts. This is the head `fine_tune`
starts phase 2 from: a converged, regularised head, found in seconds, instead
of a head trained for a few gradient steps (the first phase of LP-FT, Kumar
et al. 2022, solved exactly).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from kertransfer import _log
from kertransfer.data.gathering import gather
from kertransfer.errors import InvalidArgumentError, format_message
from kertransfer.models.surgery import feature_predictor, head_layers
from kertransfer.validation import check_int, check_number, is_number

__all__ = ["C_GRID", "ProbeFit", "fit_linear_probe", "probe_head", "probe_unavailable"]

#: The inverse regularisation strengths cross-validation chooses from.
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclasses.dataclass
class ProbeFit:
    """A fitted probe.

    Attributes:
        kernel: ``(features, classes)`` weights of the classification layer.
        bias: ``(classes,)`` biases.
        C: The inverse L2 strength chosen.
        cv_accuracy: Mean cross-validated accuracy at ``C`` (None without
            cross-validation: fewer than two examples of some class).
        examples: Training examples.
    """

    kernel: np.ndarray
    bias: np.ndarray
    C: float  # noqa: N815
    cv_accuracy: float | None
    examples: int

    def predict_proba(self, features: Any) -> np.ndarray:
        """Class probabilities of ``features`` ``(n, d)``: what the probed head predicts."""
        f = np.asarray(features, dtype="float64").reshape(len(features), -1)
        logits = f @ self.kernel + self.bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)


def _check_grid(grid) -> tuple[float, ...]:
    values = tuple(grid) if isinstance(grid, (list, tuple)) else None
    if not values or any(not is_number(c) or not c > 0 for c in values):
        raise InvalidArgumentError(format_message(
            "grid must be a non-empty list of positive numbers (values of C).",
            received={"grid": grid}))
    return tuple(float(c) for c in values)


def _row_space(f: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Features wider than their count, in coordinates of their row space.

    L2-regularised logistic regression's weights lie in the span of the
    training rows (the gradient of the loss and of the penalty both do), so
    fitting on ``f @ V`` (``V`` an orthonormal basis of that span, from the
    SVD) and mapping the weights back with ``V`` solves the same problem
    exactly: ``||V b|| = ||b||`` keeps the penalty, ``f V b`` the logits. With
    ``n`` examples of ``d > n`` features every fit, cross-validation folds
    included (their rows span part of the same space), works on ``n``
    columns instead of ``d`` (100 images of 1,024 MobileNet features: 0.78 s
    instead of 28.1 s for the cross-validated probe, ``benchmarks/bench_probe.py``).
    Returns ``(f, None)`` when ``d <= n``.
    """
    n, d = f.shape
    if d <= n:
        return f, None
    u, s, vt = np.linalg.svd(f, full_matrices=False)
    rank = max(int(np.sum(s > s[0] * d * np.finfo(f.dtype).eps)), 1)  # numpy's matrix_rank tol
    return u[:, :rank] * s[:rank], vt[:rank]


def fit_linear_probe(features: Any, labels: Any, num_classes: int | None = None, *,
                     grid=C_GRID, folds: int = 5, max_cv_examples: int = 5000,
                     seed: int | None = None) -> ProbeFit:
    """Multinomial logistic regression on ``features``, ``C`` by cross-validation.

    Args:
        features: ``(n, d)`` array.
        labels: ``(n,)`` integer class labels in ``[0, num_classes)``.
        num_classes: Columns of the result (default: the largest label + 1); a
            class absent from ``labels`` gets a zero kernel and a bias far
            below the others.
        grid: Values of ``C`` to choose from (one value: no search).
        folds: Stratified folds (fewer when a class has fewer examples).
        max_cv_examples: The search runs on a stratified sample of at most this
            many examples; the final fit uses all of them.
        seed: Seeds the folds and the sample.

    Returns:
        A `ProbeFit`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

    f = np.asarray(features, dtype="float64").reshape(len(features), -1)
    y = np.asarray(labels).reshape(-1)
    if len(y) != len(f) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise InvalidArgumentError(format_message(
            "labels must be one non-negative integer class label per row of features.",
            received={"labels": f"shape={y.shape}, dtype={y.dtype}"}))
    grid = _check_grid(grid)
    num_classes = check_int(num_classes, "num_classes", minimum=1, allow_none=True)
    folds = check_int(folds, "folds", minimum=1)
    max_cv_examples = check_int(max_cv_examples, "max_cv_examples", minimum=2)
    classes, counts = np.unique(y, return_counts=True)
    k = num_classes if num_classes is not None else int(classes.max()) + 1
    if classes.max() >= k:
        raise InvalidArgumentError(format_message(
            f"labels must be below num_classes={k}.",
            received={"labels": f"max {int(classes.max())}"}))
    if len(classes) < 2:
        raise InvalidArgumentError(format_message(
            "A linear probe needs examples of at least two classes.",
            received={"classes": classes.tolist()}))
    n_folds = int(min(folds, counts.min()))
    f, basis = _row_space(f)
    best, cv = grid[0], None
    if len(grid) > 1 and n_folds >= 2:
        xs, ys = f, y
        if len(y) > max_cv_examples:
            xs, _, ys, _ = train_test_split(f, y, train_size=max_cv_examples, stratify=y,
                                            random_state=seed)
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        scores = [float(np.mean(cross_val_score(LogisticRegression(C=c, max_iter=3000), xs,
                                                ys, cv=splitter))) for c in grid]
        best, cv = grid[int(np.argmax(scores))], max(scores)
    elif len(grid) > 1:
        best = 1.0 if 1.0 in grid else grid[len(grid) // 2]
    model = LogisticRegression(C=best, max_iter=3000).fit(f, y)
    coef, icpt = model.coef_, model.intercept_
    if basis is not None:  # back from the row space to the features
        coef = coef @ basis
    if len(classes) == 2:  # one binary column: logits [0, w.x + b] give the same softmax
        coef = np.concatenate([np.zeros_like(coef), coef])
        icpt = np.concatenate([np.zeros_like(icpt), icpt])
    kernel = np.zeros((coef.shape[1], k), dtype="float32")
    bias = np.full((k,), float(icpt.min()) - 20.0, dtype="float32")
    kernel[:, classes] = coef.T
    bias[classes] = icpt
    return ProbeFit(kernel, bias, float(best), cv, len(y))


def probe_unavailable(model, labels: Any = None) -> str:
    """Why ``model``'s head cannot be a linear probe ("" when it can).

    It can when its head is dropout and one dense layer over the pooled
    features, with a softmax (or logits) output of one task, and the labels
    (when given) are class indices.
    """
    if isinstance(getattr(model, "output", None), (dict, list, tuple)):
        return "the model has several heads"
    if getattr(model, "activation", "softmax") not in ("softmax", "logits"):
        return f"its output is {model.activation!r}, not one class per example"
    try:
        layers = head_layers(model)
    except (ValueError, AttributeError):
        return "it has no pooling layer before its head"
    dense = [layer for layer in layers if not isinstance(layer, keras.layers.Dropout)]
    if len(dense) != 1 or not isinstance(dense[0], keras.layers.Dense):
        return "its head has hidden layers (head_units)"
    if labels is not None:
        y = np.asarray(labels)
        if isinstance(labels, dict) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            return "its labels are not integer class indices"
    return ""


def _check_probe(model, labels: Any = None) -> None:
    why = probe_unavailable(model, labels)
    if why:
        raise InvalidArgumentError(format_message(
            f"The model's head cannot be fitted as a linear probe: {why}.",
            fix="Train the head with gradient steps instead (fine_tune(head_fit='epochs')).",
            received={"model": model.name}))


def probe_head(model, data: Any, *, grid=C_GRID, seed: int | None = None,
               batch_size: int = 64, temperature: float = 1.0, verbose: int = 1) -> ProbeFit:
    """Set ``model``'s classification layer to a linear probe on its backbone's features.

    The backbone runs once over the training images, streaming (inference
    mode, un-augmented; only the pooled features are kept in memory);
    `fit_linear_probe` fits on them; the
    result becomes the weights of the model's last dense layer.

    Args:
        model: A model from ``build_transfer_model`` whose head is one dense
            layer (see `probe_unavailable`).
        data: A bundle (its un-augmented train split), ``(x, y)`` arrays or a
            dataset of ``(images, labels)`` batches.
        grid: Values of ``C`` to choose from by cross-validation.
        seed: Seeds the folds.
        batch_size: Images per feature batch.
        temperature: The layer gets the probe's weights divided by this: the
            same decisions, with probabilities softened (above 1) or sharpened.
        verbose: Progress output.

    Returns:
        The `ProbeFit`.
    """
    temperature = check_number(temperature, "temperature", minimum=0, exclusive_minimum=True)
    _check_probe(model)  # before the pass over the data, then with its labels
    if verbose:
        _log.print_msg("Computing backbone features (once)")
    feats, y = gather(data, "data", feature_predictor(model),
                      batch_size=batch_size, verbose=verbose)
    _check_probe(model, y)
    dense = [layer for layer in head_layers(model)
             if not isinstance(layer, keras.layers.Dropout)][0]
    fit = fit_linear_probe(feats, y, num_classes=int(dense.units), grid=grid, seed=seed)
    kernel, bias = fit.kernel / temperature, fit.bias / temperature
    dense.set_weights([kernel.astype(dense.kernel.dtype), bias.astype(dense.bias.dtype)]
                      if dense.use_bias else [kernel.astype(dense.kernel.dtype)])
    if verbose:
        cv = "" if fit.cv_accuracy is None else f", cross-validated accuracy {fit.cv_accuracy:.3f}"
        _log.print_msg(f"Head: logistic-regression probe on {fit.examples} examples "
                       f"(C={fit.C:g}{cv})")
    return fit
