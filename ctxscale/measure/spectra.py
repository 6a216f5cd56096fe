"""PCA spectra of hidden states and the intrinsic-entropy measures the study derives from them.

Pure NumPy (no torch, no Ray), so `analysis` can recompute the measures from stored eigenvalues.
Notation: lambda_1 >= lambda_2 >= ... the PCA eigenvalues (variances along the principal axes) of
n feature vectors of dimension d; at most min(n - 1, d) of them can be non-zero.

- intrinsic dimension at threshold t: #{i : lambda_i / lambda_1 > t}
- sum of log relative eigenvalues over the first N: S_N = sum_{i <= N} ln(lambda_i / lambda_1)

Both follow "Intrinsic Entropy of Context Length Scaling in LLMs" (arXiv 2502.01481, v4): the
study reports CE linear in either measure as the context length grows.
"""
from __future__ import annotations

import math

import numpy as np

# The study scans thresholds 0.002 .. 0.25 (default 0.0035) and N from 3 to 2,000.
DEFAULT_THRESHOLDS = (0.002, 0.0035, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
DEFAULT_N_EIGENVALUES = (3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
DEFAULT_THRESHOLD = 0.0035

ID_PREFIX = "intrinsic_dim_"
SUMLOG_PREFIX = "sum_log_eig_"


def pca_eigenvalues(features) -> np.ndarray:
    """PCA eigenvalues of the rows of `features` (n, d), descending, float64, min(n, d) of them.

    From the d × d covariance when n > d, else from the n × n Gram matrix of the centred rows (the
    same non-zero eigenvalues): one matrix product and a symmetric eigensolver, several times
    faster than an SVD of the data at the study's size (tens of thousands of 4,096-dim states).
    Round-off below zero is clipped to zero.

    >>> x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    >>> pca_eigenvalues(x).round(6).tolist()
    [2.666667, 0.666667]
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be (n >= 2, d), got shape {x.shape}")
    centred = x - x.mean(axis=0)
    gram = centred.T @ centred if x.shape[0] > x.shape[1] else centred @ centred.T
    eig = np.linalg.eigvalsh(gram)[::-1] / (len(x) - 1)
    return np.clip(eig, 0.0, None)


def _relative(eigenvalues) -> np.ndarray:
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    if lam.size == 0 or not lam[0] > 0:
        return np.zeros(0)
    return lam / lam[0]


def intrinsic_dimension(eigenvalues, threshold: float) -> int:
    """Number of eigenvalues whose ratio to the largest exceeds `threshold`.

    >>> intrinsic_dimension([4.0, 1.0, 0.01, 0.0], 0.1)
    2
    """
    return int((_relative(eigenvalues) > threshold).sum())


def usable_count(eigenvalues, n_samples: int | None = None) -> int:
    """How many eigenvalues carry information: at most n - 1 (centring costs one) and above the
    round-off floor of an SVD in float64 (relative 1e-12)."""
    rel = _relative(eigenvalues)
    count = int((rel > 1e-12).sum())
    return min(count, n_samples - 1) if n_samples is not None else count


def sum_log_relative(eigenvalues, n: int, n_samples: int | None = None) -> float:
    """S_N = sum of ln(lambda_i / lambda_1) over the first `n` eigenvalues (<= 0).

    NaN when fewer than `n` eigenvalues are usable (see `usable_count`): a numerically zero
    eigenvalue would make the sum -inf, and it says nothing about the representation.

    >>> round(sum_log_relative([4.0, 2.0, 1.0], 3), 6) == round(math.log(0.5) + math.log(0.25), 6)
    True
    >>> sum_log_relative([4.0, 2.0, 1.0], 5)
    nan
    """
    rel = _relative(eigenvalues)
    if n < 1 or n > usable_count(rel, n_samples):
        return math.nan
    return float(np.log(rel[:n]).sum())


def spectrum_measures(eigenvalues, thresholds=DEFAULT_THRESHOLDS, n_values=DEFAULT_N_EIGENVALUES,
                      n_samples: int | None = None) -> dict:
    """The measures as flat columns: `intrinsic_dim_<t>` per threshold, `sum_log_eig_<N>` per N.

    >>> spectrum_measures([4.0, 1.0, 0.01], thresholds=[0.1], n_values=[2])
    {'intrinsic_dim_0.1': 2, 'sum_log_eig_2': -1.3862943611198906}
    """
    out: dict = {}
    for t in thresholds:
        out[threshold_column(t)] = intrinsic_dimension(eigenvalues, t)
    for n in n_values:
        out[sumlog_column(n)] = sum_log_relative(eigenvalues, int(n), n_samples)
    return out


def threshold_column(threshold: float) -> str:
    return f"{ID_PREFIX}{threshold:g}"


def sumlog_column(n: int) -> str:
    return f"{SUMLOG_PREFIX}{int(n)}"


def measure_columns(columns) -> dict[str, list[tuple[float, str]]]:
    """The spectrum-measure columns of a table, parsed: {"intrinsic_dim": [(t, column), ...],
    "sum_log_eig": [(N, column), ...]}, each sorted by its parameter."""
    found: dict[str, list[tuple[float, str]]] = {"intrinsic_dim": [], "sum_log_eig": []}
    for column in columns:
        for kind, prefix in (("intrinsic_dim", ID_PREFIX), ("sum_log_eig", SUMLOG_PREFIX)):
            if str(column).startswith(prefix):
                try:
                    found[kind].append((float(str(column)[len(prefix):]), str(column)))
                except ValueError:
                    pass
    return {kind: sorted(pairs) for kind, pairs in found.items()}
