"""Spectra: PCA eigenvalues, intrinsic dimension and sum of log relative eigenvalues on known features."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ctxscale.measure.spectra import (intrinsic_dimension, measure_columns, pca_eigenvalues, spectrum_measures,
                                      sum_log_relative, usable_count)


def _features(variances, n=4000, d=32, seed=0):
    """n samples in d dimensions whose covariance has exactly `variances` along random orthogonal axes."""
    rng = np.random.default_rng(seed)
    axes, _ = np.linalg.qr(rng.standard_normal((d, len(variances))))  # (d, k) orthonormal columns
    z = rng.standard_normal((n, len(variances)))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T))).T  # exactly white
    return z * np.sqrt(variances) @ axes.T + 5.0  # an offset the centring must remove


def test_known_rank_gives_that_intrinsic_dimension():
    variances = [1.0, 0.5, 0.2, 0.05, 0.01]
    eig = pca_eigenvalues(_features(variances))
    assert eig[:5] == pytest.approx(variances, rel=1e-9)
    assert np.all(eig[5:] < 1e-12)
    assert intrinsic_dimension(eig, 0.002) == 5  # everything above round-off, nothing more
    assert intrinsic_dimension(eig, 0.0035) == 5
    assert intrinsic_dimension(eig, 0.03) == 4
    assert intrinsic_dimension(eig, 0.1) == 3
    assert intrinsic_dimension(eig, 0.25) == 2
    assert usable_count(eig, 4000) == 5


def test_eigenvalues_equal_the_covariance_eigenvalues():
    x = np.random.default_rng(1).standard_normal((50, 8)) @ np.diag(np.arange(1, 9))
    expected = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    assert pca_eigenvalues(x) == pytest.approx(expected, rel=1e-10)
    # fewer samples than dimensions: n - 1 non-zero eigenvalues, the same as the covariance's
    few = x[:5]
    assert pca_eigenvalues(few)[:4] == pytest.approx(np.sort(np.linalg.eigvalsh(np.cov(few.T)))[::-1][:4], rel=1e-8)
    assert usable_count(pca_eigenvalues(few), 5) == 4


def test_sum_of_log_relative_eigenvalues():
    eig = pca_eigenvalues(_features([1.0, 0.5, 0.2, 0.05]))
    assert sum_log_relative(eig, 1) == pytest.approx(0.0, abs=1e-12)
    assert sum_log_relative(eig, 3) == pytest.approx(math.log(0.5) + math.log(0.2), rel=1e-9)
    assert sum_log_relative(eig, 4) == pytest.approx(math.log(0.5 * 0.2 * 0.05), rel=1e-9)
    assert math.isnan(sum_log_relative(eig, 5))  # the fifth eigenvalue is zero: no information, not -inf


def test_measure_columns_round_trip():
    row = spectrum_measures([4.0, 1.0, 0.5], thresholds=[0.0035, 0.2], n_values=[2, 3, 2000])
    assert row == {"intrinsic_dim_0.0035": 3, "intrinsic_dim_0.2": 2, "sum_log_eig_2": pytest.approx(math.log(0.25)),
                   "sum_log_eig_3": pytest.approx(math.log(0.25 * 0.125)), "sum_log_eig_2000": pytest.approx(math.nan, nan_ok=True)}
    parsed = measure_columns(list(row) + ["ce", "model"])
    assert [t for t, _ in parsed["intrinsic_dim"]] == [0.0035, 0.2]
    assert [n for n, _ in parsed["sum_log_eig"]] == [2, 3, 2000]


def test_degenerate_inputs():
    with pytest.raises(ValueError, match="n >= 2"):
        pca_eigenvalues(np.ones((1, 4)))
    assert intrinsic_dimension(np.zeros(4), 0.01) == 0  # constant features: no direction at all
    assert math.isnan(sum_log_relative(np.zeros(4), 2))
