"""Differential entropy of hidden states from a Gaussian kernel-density estimate (the study's
"KDE entropy", Fig. 2 and 9 of arXiv 2502.01481 v4), in nats.

    H ≈ -(1/m) Σ_j ln p̂(x_j),   p̂ = Gaussian KDE fitted on other points than the x_j it scores

Steps, and why:
1. Optional PCA to the first `dims` principal axes. Hidden states are thousands wide, and a KDE in
   thousands of dimensions is all bandwidth and no density; the entropy of the projection (a
   marginal of the state's distribution) is what can be estimated from 10^4 points. Axes whose
   variance is below 1e-9 of the largest are dropped (they would make the covariance singular).
2. Bandwidth by Scott's rule, as scipy's `gaussian_kde` applies it: kernel covariance = f² × the
   sample covariance, f = n^(-1/(d+4)). It scales with the data, so scaling the states by s moves
   the estimate by exactly d·ln s, the property the Gaussian test checks.
3. Two-fold held-out scoring (`scipy.stats.gaussian_kde` fitted on one half scores the other, and
   the other way round), so no point is scored by a kernel centred on itself: the
   resubstitution log-likelihood would grow without bound as the bandwidth shrinks.

Cost: the PCA is one d_model² covariance (10,000 × 4,096 states: ~2·10^11 flops, about ten
seconds on a 2-core CPU, under a second on a GPU with torch), then the KDE is
2 × (n/2)² × dims kernel evaluations (10,000 points in 32 dimensions: 8·10^8, a few seconds on one
CPU core). `max_samples` caps n (a random subsample, seeded) to keep that quadratic term small.
NumPy / SciPy only, so `analysis` and tests can call it without torch.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

DEFAULT_DIMS = 16  # PCA axes kept before the KDE (None: all)
DEFAULT_MAX_SAMPLES = 10_000


def pca_project(features, dims: Optional[int]) -> np.ndarray:
    """The centred rows of `features` on their first `dims` principal axes (all when None), axes
    with a variance below 1e-9 of the largest left out.

    >>> x = np.array([[1.0, 0.0, 5.0], [-1.0, 0.0, 5.0], [0.0, 2.0, 5.0], [0.0, -2.0, 5.0]])
    >>> np.abs(pca_project(x, None)).max(axis=0).round(6).tolist()
    [2.0, 1.0]
    """
    x = np.asarray(features, dtype=np.float64)
    centred = x - x.mean(axis=0)
    if x.shape[0] > x.shape[1]:  # d × d covariance; else the n × n Gram matrix (same axes)
        eig, vectors = np.linalg.eigh(centred.T @ centred)
        order = np.argsort(eig)[::-1]
        eig, axes = eig[order], vectors[:, order]
    else:
        eig, vectors = np.linalg.eigh(centred @ centred.T)
        order = np.argsort(eig)[::-1]
        eig = eig[order]
        keep = eig > 0
        axes = np.zeros((x.shape[1], len(eig)))
        axes[:, keep] = centred.T @ vectors[:, order][:, keep] / np.sqrt(eig[keep])
    usable = int((eig > 1e-9 * max(eig[0], 0.0)).sum()) if eig.size and eig[0] > 0 else 0
    k = usable if dims is None else min(dims, usable)
    return centred @ axes[:, :k]


def kde_entropy(features, dims: Optional[int] = DEFAULT_DIMS, max_samples: Optional[int] = DEFAULT_MAX_SAMPLES,
                seed: int = 0) -> float:
    """Differential entropy (nats) of the rows of `features` (n, d) by a held-out Gaussian KDE.

    Parameters
    ----------
    features : array (n, d)
    dims : int or None
        PCA axes kept first (None: every axis with non-negligible variance).
    max_samples : int or None
        Use a random subsample of at most this many rows (None: all).
    seed : int
        Seed of the subsample and of the split into two halves.

    Returns
    -------
    float
        NaN when fewer than 4 rows or no axis with variance are left, fewer rows than 2 × (dims + 1),
        or a half whose covariance is singular. States that take few distinct values (a small model
        on a discrete task) give a large negative entropy set by the bandwidth: compare such
        values across context lengths of one model, not with other models.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((4000, 2))
    >>> true = math.log(2 * math.pi * math.e)  # N(0, I) in 2 dimensions
    >>> abs(kde_entropy(x) - true) < 0.1
    True
    """
    from scipy.stats import gaussian_kde

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (n, d), got shape {x.shape}")
    rng = np.random.default_rng(seed)
    if max_samples is not None and len(x) > max_samples:
        x = x[rng.choice(len(x), max_samples, replace=False)]
    if len(x) < 4:
        return math.nan
    projected = pca_project(x, dims)
    d = projected.shape[1]
    if d == 0 or len(x) < 2 * (d + 1):
        return math.nan
    order = rng.permutation(len(projected))
    halves = projected[order[: len(order) // 2]], projected[order[len(order) // 2:]]
    total, count = 0.0, 0
    for fit, scored in (halves, halves[::-1]):
        # scipy wants (d, n); bw_method 'scott' = n^(-1/(d+4)) times the sample covariance
        try:
            density = gaussian_kde(fit.T, bw_method="scott")
        except np.linalg.LinAlgError:  # a half whose points span fewer axes than the whole: no density
            return math.nan
        total -= float(density.logpdf(scored.T).sum())
        count += len(scored)
    return total / count
