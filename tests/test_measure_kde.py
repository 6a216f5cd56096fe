"""The KDE entropy of hidden states (ctxscale.measure.kde) on Gaussians with known entropy."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ctxscale.measure.kde import kde_entropy, pca_project


@pytest.mark.parametrize("d", [8, 16])
def test_scaling_by_s_adds_d_ln_s_within_10_percent(d):
    # two independent samples of n = 10,000: N(0, I) and N(0, s²I); H differs by exactly d ln s
    rng = np.random.default_rng(d)
    s, n = 2.0, 10_000
    unit = rng.standard_normal((n, d))
    wide = s * rng.standard_normal((n, d))
    difference = kde_entropy(wide, dims=None, max_samples=None) - kde_entropy(unit, dims=None, max_samples=None)
    assert difference == pytest.approx(d * math.log(s), rel=0.10)
    # and the level itself is the Gaussian's (the KDE's smoothing biases it up by a few per cent)
    assert kde_entropy(unit, dims=None, max_samples=None) == pytest.approx(0.5 * d * math.log(2 * math.pi * math.e), rel=0.08)


def test_held_out_scoring_is_not_the_resubstitution_likelihood():
    # a sample with many exact duplicates: scoring a point with its own kernel would report a
    # spuriously low entropy; held out, duplicates across halves still count, but singletons do not
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 3))
    assert kde_entropy(x, dims=None, max_samples=None) == pytest.approx(1.5 * math.log(2 * math.pi * math.e), rel=0.08)


def test_pca_keeps_the_high_variance_axes_and_drops_degenerate_ones():
    rng = np.random.default_rng(1)
    latent = rng.standard_normal((3000, 4)) * np.array([5.0, 3.0, 2.0, 1.0])
    wide = np.hstack([latent, np.zeros((3000, 60))]) @ np.linalg.qr(rng.standard_normal((64, 64)))[0]
    projected = pca_project(wide, None)
    assert projected.shape == (3000, 4)  # the 60 zero-variance axes are gone
    assert np.sort(projected.std(axis=0))[::-1] == pytest.approx([5.0, 3.0, 2.0, 1.0], rel=0.05)
    # the entropy of a rotated, zero-padded state is that of its 4-dimensional content
    assert kde_entropy(wide, dims=None) == pytest.approx(kde_entropy(latent, dims=None), abs=1e-6)
    assert kde_entropy(wide, dims=2) < kde_entropy(wide, dims=4)  # a marginal of fewer axes


def test_too_few_rows_give_nan():
    assert math.isnan(kde_entropy(np.zeros((3, 5))))
    assert math.isnan(kde_entropy(np.ones((50, 5))))  # no variance at all
