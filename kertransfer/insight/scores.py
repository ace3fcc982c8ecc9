"""Transferability scores: how well features will transfer, before fine-tuning.

Each score reads a candidate's features (or its source head's predictions) on
the target's labelled examples once, with no training:

- `logme` (You et al. 2021, "LogME: Practical Assessment of Pre-trained
  Models for Transfer Learning"): the log marginal likelihood, per example,
  of a Bayesian linear regression from the features to each one-hot label
  column, with its prior and noise precisions set by evidence maximisation
  (the paper's fixed-point iteration), averaged over the classes. Higher is
  better.
- `leep` (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate
  Transferability of Learned Representations"): the mean log-likelihood of
  the target labels under the "expected empirical predictor" built from the
  source head's class probabilities. Needs a source head; higher is better.
- `h_score` (Bao et al. 2019, "An Information-Theoretic Approach to
  Transferability in Task Transfer Learning"): ``tr(cov(f)^-1 cov(E[f|y]))``,
  how much of the features' variance the class means explain, with the
  shrinkage estimate that keeps it meaningful when features outnumber
  examples (Ibrahim et al. 2022, "Newer is not always better: rethinking
  transferability metrics"). Higher is better.

All three work in float64 numpy. Features wider than they are long (raw
pixels, flattened maps) are read in float64 blocks into one ``N x N`` Gram
matrix, never copied whole, so scoring 1,000 images of 224 x 224 x 3 pixels
takes seconds. `kertransfer.insight.ranking.rank_backbones` computes each
candidate's features once and scores them with every metric from the same
decomposition, best first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kertransfer._choices import RANKING_METRICS
from kertransfer.errors import (
    DataError,
    LabelError,
    format_message,
)
from kertransfer.validation import check_int, check_number

__all__ = ["METRICS", "h_score", "leep", "logme", "logme_evidence"]

def _check(features: Any, labels: Any, name: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """``(features, labels)`` checked; float features keep their dtype (no copy of a large
    float32 array: the scores read it in float64 blocks)."""
    f = np.asarray(features)
    if not np.issubdtype(f.dtype, np.floating):
        f = f.astype("float64")
    if f.ndim != 2 or not len(f):
        raise DataError(format_message(
            f"{name} must be a 2-D array, one row per example.",
            received={name: f"shape {f.shape}"}))
    if not np.isfinite(f).all():
        raise DataError(format_message(f"{name} hold NaN or infinite values.",
                                       received={name: f"shape {f.shape}"}))
    y = np.asarray(labels)
    if y.shape != (len(f),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise LabelError(format_message(
            f"labels must be one integer class label from 0 per row of {name}.",
            expected=f"shape ({len(f)},), integers >= 0",
            received={"labels": f"shape {y.shape}, dtype {y.dtype}"}))
    if len(np.unique(y)) < 2:
        raise LabelError(format_message("labels need at least two classes to score.",
                                        received={"labels": f"classes {np.unique(y)}"}))
    return f, y.astype("int64")


_BLOCK = 4096  # feature columns per block of the Gram matrix (N x 4096 float64 at a time)


def _gram(f: np.ndarray) -> np.ndarray:
    """``F F^T`` in float64, accumulated over blocks of columns: ``O(N^2 D)`` time and
    ``O(N^2 + N * 4096)`` memory, for features far wider than they are long."""
    n, d = f.shape
    g = np.zeros((n, n))
    for start in range(0, d, _BLOCK):
        block = np.array(f[:, start:start + _BLOCK], dtype="float64", order="C")
        g += block @ block.T  # one buffer and its transpose: a symmetric rank-k update
    return g


def _centred(g: np.ndarray) -> np.ndarray:
    """The Gram matrix of the column-centred features, from the uncentred one."""
    r = g.mean(axis=1)
    return g - r[:, None] - r[None, :] + r.mean()


class _Features:
    """What the scores need of ``[N, D]`` features, computed once and shared.

    When features outnumber examples (``D > N``: raw pixels, flattened maps)
    everything comes from one ``N x N`` Gram matrix and its eigenvectors,
    never from a ``D``-sized matrix: the singular values and left singular
    vectors for LogME, and the centred spectrum and Ledoit-Wolf statistics
    for H-score. Otherwise the ``[N, D]`` matrix itself is decomposed.
    """

    def __init__(self, f: np.ndarray):
        self.f = f
        self.n, self.d = f.shape
        self.wide = self.d > self.n
        self._g = None

    @property
    def gram(self) -> np.ndarray:
        if self._g is None:
            self._g = _gram(self.f)
        return self._g

    def left_singular(self) -> tuple[np.ndarray, np.ndarray]:
        """``(U, s)`` of the uncentred features, directions with no variance dropped."""
        if self.wide:
            lam, u = np.linalg.eigh(self.gram)
            # eigh resolves eigenvalues to about eps * largest * N; below that is noise
            keep = lam > lam.max() * self.n * np.finfo("float64").eps * 10
            return u[:, keep], np.sqrt(lam[keep])
        u, s, _ = np.linalg.svd(np.asarray(self.f, "float64"), full_matrices=False)
        keep = s > (s.max() if s.size else 0.0) * max(self.n, self.d) * np.finfo("float64").eps
        return u[:, keep], s[keep]

    def centred_span(self) -> tuple[np.ndarray, float, float]:
        """``(Z, mu, a)``: the centred features in their own span (``Z Z^T`` is their Gram
        matrix; at most ``N`` columns), the mean variance ``mu`` and the Ledoit-Wolf
        shrinkage intensity ``a`` of their covariance (as scikit-learn computes it)."""
        n, d = self.n, self.d
        if not self.wide:
            from sklearn.covariance import ledoit_wolf_shrinkage

            f = np.asarray(self.f, "float64")
            f = f - f.mean(axis=0)
            a = float(ledoit_wolf_shrinkage(f, assume_centered=True)) if d > 1 else 0.0
            return f, float(np.sum(f * f)) / n / d, a
        gc = _centred(self.gram)
        lam, u = np.linalg.eigh(gc)
        lam[lam <= lam.max() * n * np.finfo("float64").eps * 10] = 0.0  # rounding, not variance
        z = u * np.sqrt(lam)
        # Ledoit-Wolf from the Gram matrix alone: sum_k |x_k|^4 and |X^T X|_F^2 = |X X^T|_F^2
        trace = float(np.trace(gc))
        mu = trace / n / d
        delta_ = float(np.sum(gc * gc)) / n ** 2
        beta = (float(np.sum(np.diag(gc) ** 2)) / n - delta_) / (d * n)
        delta = (delta_ - 2.0 * mu * trace / n + d * mu ** 2) / d
        beta = min(beta, delta)
        return z, mu, 0.0 if beta == 0 else beta / delta


def logme_evidence(features: np.ndarray, target: np.ndarray, alpha: float,
                   beta: float) -> float:
    """Log evidence of ``target`` under ``y = F w + noise``, ``w ~ N(0, I/alpha)``,
    noise ``N(0, 1/beta)``: ``log N(target; 0, I/beta + F F^T/alpha)``, per example.

    The direct Gaussian formula (an ``N x N`` determinant), for checking `logme`
    on small cases.
    """
    f = np.asarray(features, dtype="float64")
    t = np.asarray(target, dtype="float64")
    n = len(f)
    cov = np.eye(n) / beta + f @ f.T / alpha
    sign, logdet = np.linalg.slogdet(cov)
    quad = t @ np.linalg.solve(cov, t)
    return float(-0.5 * (quad + logdet + n * np.log(2 * np.pi)) / n)


def _logme_column(u_t_y: np.ndarray, y_norm2: float, s: np.ndarray, n: int, d: int,
                  max_iter: int, tol: float) -> tuple[float, float, float]:
    """Evidence maximisation for one label column: ``(evidence / n, alpha, beta)``.

    ``s`` are the singular values of the features and ``u_t_y`` the column in
    the left singular basis; the other ``d - len(s)`` eigenvalues of ``F^T F`` are 0.
    """
    sigma = s * s
    out_of_span = max(y_norm2 - float(u_t_y @ u_t_y), 0.0)  # |y|^2 outside F's column space
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        denom = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / denom))
        coef = beta * s * u_t_y / denom          # m = V coef: the posterior mean
        m2 = float(coef @ coef)
        res2 = out_of_span + float(np.sum((u_t_y - s * coef) ** 2))  # |y - F m|^2
        new_alpha = gamma / max(m2, 1e-12)
        new_beta = (n - gamma) / max(res2, 1e-12)
        converged = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    denom = alpha + beta * sigma
    coef = beta * s * u_t_y / denom
    m2 = float(coef @ coef)
    res2 = out_of_span + float(np.sum((u_t_y - s * coef) ** 2))
    log_det = float(np.sum(np.log(denom))) + (d - len(s)) * np.log(alpha)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * log_det
                - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
    return float(evidence / n), alpha, beta


def logme(features: Any, labels: Any, *, max_iter: int = 100, tol: float = 1e-5,
          return_details: bool = False):
    """LogME of ``features`` for the classification ``labels`` (higher is better).

    Args:
        features: ``[N, D]`` features of the target's labelled examples.
        labels: ``[N]`` integer class labels.
        max_iter: Fixed-point iterations per class at most (the paper's
            iteration converges in a few).
        tol: Relative change of ``alpha / beta`` at which it stops.
        return_details: Also return ``{"alpha": [...], "beta": [...],
            "per_class": [...]}``.

    Returns:
        The mean over classes of the maximised log evidence per example.
    """
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_number(tol, "tol", minimum=0, exclusive_minimum=True)
    f, y = _check(features, labels)
    return _logme(_Features(f), y, max_iter, tol, return_details)


def _logme(feats: _Features, y: np.ndarray, max_iter: int = 100, tol: float = 1e-5,
           return_details: bool = False):
    n, d = feats.n, feats.d
    u, s = feats.left_singular()  # directions with no variance add nothing but log(alpha)
    scores, alphas, betas = [], [], []
    for k in np.unique(y):
        column = (y == k).astype("float64")
        score, alpha, beta = _logme_column(u.T @ column, float(column @ column), s, n, d,
                                           max_iter, tol)
        scores.append(score)
        alphas.append(alpha)
        betas.append(beta)
    value = float(np.mean(scores))
    if return_details:
        return value, {"alpha": alphas, "beta": betas, "per_class": scores}
    return value


def leep(source_probabilities: Any, labels: Any) -> float:
    """LEEP of a source head for the target ``labels`` (higher is better; at most 0).

    Args:
        source_probabilities: ``[N, Z]`` the source head's class probabilities
            on the target's examples (each row sums to 1).
        labels: ``[N]`` target class labels.

    Returns:
        ``1/N sum_i log sum_z P(y_i | z) theta(x_i)_z``, with ``P(y | z)`` the
        empirical conditional of target label given source label.
    """
    theta, y = _check(source_probabilities, labels, "source_probabilities")
    if theta.min() < 0 or not np.allclose(theta.sum(axis=1), 1.0, atol=1e-3):
        raise DataError(format_message(
            "source_probabilities must be probabilities: rows >= 0 that sum to 1.",
            fix="Give the source head's softmax output, not its logits.",
            received={"source_probabilities": f"row sums {theta.sum(axis=1)[:3]}..."}))
    n = len(theta)
    joint = np.zeros((int(y.max()) + 1, theta.shape[1]))
    np.add.at(joint, y, theta)
    joint /= n                                            # P(y, z)
    conditional = joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-300)  # P(y | z)
    eep = np.sum(theta * conditional[y], axis=1)          # sum_z P(y_i|z) theta_z(x_i)
    return float(np.mean(np.log(np.maximum(eep, 1e-300))))


def h_score(features: Any, labels: Any, *, shrinkage: bool = True) -> float:
    """H-score of ``features`` for ``labels``: ``tr(cov(f)^+ cov(E[f | y]))``.

    Higher is better, at most the number of classes minus one. With few
    examples and many features the sample covariance is singular and the
    plain score reaches that maximum for any features. ``shrinkage`` (the
    default) uses Ibrahim et al.'s (2022) shrinkage estimate instead:
    ``tr(((1 - a) cov(f) + a mu I)^-1 (1 - a) cov(E[f | y]))``, with the
    Ledoit-Wolf intensity ``a`` and ``mu`` the mean variance. With
    ``shrinkage=False`` it is Bao et al.'s definition, with a pseudo-inverse.

    Both covariances, and the shrinkage intensity, are computed in the span
    of the centred features (at most ``N - 1`` directions), where the score
    lives, from their ``N x N`` Gram matrix when features outnumber
    examples: no ``D x D`` matrix is ever formed.
    """
    f, y = _check(features, labels)
    return _h_score(_Features(f), y, shrinkage)


def _h_score(feats: _Features, y: np.ndarray, shrinkage: bool = True) -> float:
    z, mu, a = feats.centred_span()
    a = a if shrinkage else 0.0
    means = np.zeros_like(z)
    for k in np.unique(y):
        means[y == k] = z[y == k].mean(axis=0)
    cov_f = (1 - a) * (z.T @ z / feats.n) + a * mu * np.eye(z.shape[1])
    cov_g = (1 - a) * (means.T @ means / feats.n)
    return float(np.trace(np.linalg.pinv(cov_f, hermitian=True) @ cov_g))

# -- ranking candidates -------------------------------------------------------------------------

METRICS = dict(zip(RANKING_METRICS, (logme, leep, h_score), strict=True))
