"""The step estimator's model of what training adds to the exact Bayes risk, and its bootstrap.

The excess E(l, D) = loss − R(l) is modelled jointly over the learnt data sizes, smooth in
x = log l and y = log D: E = exp(θ0 + θ1·x + θ2·x² + θ3·y + θ4·x·y) (terms the grid cannot
identify are dropped), fitted in loss space by weighted Levenberg-Marquardt. Cells whose context
offers nothing to learn, and cells that collapsed (the model learnt less than half of what the
context offers), stay out of the fit: no smooth form follows them.

The bootstrap redraws every cell's mean, from the seed-to-seed deviations pooled over cells (2-3
seeds per cell say little alone) or, with one seed, from the fit's residuals, and refits the
model to each redraw.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import forms, stats

LN2 = math.log(2.0)
COLLAPSE_SHARE = 0.5  # a cell whose excess exceeds this share of the learnable loss has collapsed


class Cells(NamedTuple):
    """One entry per (data size, context length) cell of the data sizes to estimate."""

    length: np.ndarray
    size: np.ndarray
    mean: np.ndarray  # mean best loss over the cell's seeds
    n_seeds: np.ndarray
    risk: np.ndarray  # exact Bayes risk
    fitted: np.ndarray  # bool: in the smooth fit
    collapsed: np.ndarray  # bool
    dead: np.ndarray  # bool: learnt nothing (within noise of a model that sees no bit)

    @property
    def excess(self) -> np.ndarray:
        return self.mean - self.risk


def make_cells(length, size, mean, n_seeds, risk, smooth, dead) -> Cells:
    """The cells, each marked as fitted, collapsed or neither; `smooth` marks the cells of the
    data sizes the smooth form is fitted to.

    A cell whose context offers nothing to learn (R = ln 2) says nothing of the smooth excess; one
    whose excess ate most of what it offers has collapsed: neither is fitted.
    """
    length, size, mean, risk = (np.asarray(values, float) for values in (length, size, mean, risk))
    learnable = LN2 - risk
    nothing = learnable <= 1e-9
    collapsed = ~nothing & (mean - risk > COLLAPSE_SHARE * learnable)
    fitted = np.asarray(smooth, bool) & ~(nothing | collapsed)
    return Cells(length, size, mean, np.asarray(n_seeds, int), risk, fitted, collapsed,
                 np.asarray(dead, bool) & ~nothing)


class ExcessFit(NamedTuple):
    """The fitted excess model: `theta` over `terms` of x = log l − x0, y = log D − y0."""

    terms: tuple
    theta: np.ndarray
    x0: float
    y0: float
    fit_index: np.ndarray  # which cells were fitted
    design: np.ndarray  # the fitted cells' design
    weight: np.ndarray  # their weights: relative noise, sd ∝ loss / sqrt(seeds)

    def design_at(self, lengths, size) -> np.ndarray:
        """The design at `lengths` of data size `size`."""
        return forms.excess_design(np.log(lengths) - self.x0, np.log(size) - self.y0, self.terms)


def choose_terms(n_lengths: int, n_sizes: int, n_cells: int) -> tuple[str, ...]:
    """The terms of log E the grid can identify, leaving at least one spare cell for the noise."""
    use = ["1", "x"]
    if n_lengths >= 4:
        use.append("x2")
    if n_sizes >= 2:
        use += ["y", "xy"]
    while len(use) >= n_cells and len(use) > 1:
        use.pop()
    return tuple(use)


def fit_excess(design: np.ndarray, excess: np.ndarray, weight: np.ndarray, start: np.ndarray,
               iterations: int = 40) -> np.ndarray:
    """Weighted least squares of E ≈ exp(design · θ) for each row of `excess` (B, n), batched.

    Levenberg-Marquardt steps from `start` (P,), each row with its own damping; rows are
    bootstrap replicates, so one call refits them all.
    """
    n_rows, n_par = excess.shape[0], design.shape[1]
    theta = np.tile(start, (n_rows, 1))
    damping = np.full(n_rows, 1e-3)

    def weighted_sse(candidate_theta):
        fitted_excess = forms.smooth_excess(design, candidate_theta)
        return (weight * (excess - fitted_excess) ** 2).sum(axis=1), fitted_excess

    current, fitted = weighted_sse(theta)
    identity = np.eye(n_par)
    for _ in range(iterations):
        jacobian = fitted[:, :, None] * design[None]  # (B, n, P)
        weighted_jacobian_t = jacobian.transpose(0, 2, 1) * weight  # (B, P, n)
        normal = weighted_jacobian_t @ jacobian
        gradient = (weighted_jacobian_t @ (excess - fitted)[:, :, None])[:, :, 0]
        diagonal = np.einsum("bii->bi", normal)
        # a vanished excess leaves a zero column: keep the damped system invertible
        scale = diagonal + 1e-6 * diagonal.mean(axis=1, keepdims=True) + 1e-30
        damped = normal + damping[:, None, None] * scale[:, :, None] * identity
        step = (np.linalg.pinv(damped) @ gradient[:, :, None])[:, :, 0]
        trial = theta + step
        new, new_fitted = weighted_sse(trial)
        better = new < current
        theta[better], current[better], fitted[better] = trial[better], new[better], new_fitted[better]
        damping = np.clip(np.where(better, damping / 3, damping * 4), 1e-9, 1e9)
    return theta


def _initial_theta(design: np.ndarray, excess: np.ndarray, weight: np.ndarray) -> np.ndarray:
    # log of the excess, floored: cells learnt to within noise have E ≈ 0 and may read negative
    floor = max(float(np.quantile(np.abs(excess), 0.25)), 1e-5)
    log_excess = np.log(np.maximum(excess, floor))
    root_weight = np.sqrt(np.maximum(excess, floor) ** 2 * weight)
    return stats.least_squares(design * root_weight[:, None], log_excess * root_weight).coef


def fit_joint_excess(cells: Cells) -> ExcessFit:
    """The smooth excess fitted to the cells marked `fitted`."""
    x0, y0 = float(np.log(cells.length).mean()), float(np.log(cells.size).mean())
    fit_index = np.flatnonzero(cells.fitted)
    terms = choose_terms(len(np.unique(cells.length[fit_index])), len(np.unique(cells.size[fit_index])),
                         len(fit_index))
    design = forms.excess_design(np.log(cells.length[fit_index]) - x0, np.log(cells.size[fit_index]) - y0, terms)
    weight = cells.n_seeds[fit_index] / cells.mean[fit_index] ** 2
    observed = cells.excess[fit_index]
    if not len(fit_index):  # no data size learnt enough for the smooth form: nothing to fit
        return ExcessFit(terms, np.zeros(len(terms)), x0, y0, fit_index, design, weight)
    theta = fit_excess(design, observed[None], weight, _initial_theta(design, observed, weight))[0]
    return ExcessFit(terms, theta, x0, y0, fit_index, design, weight)


class BootstrapNoise(NamedTuple):
    """What the bootstrap redraws: relative deviations `pool` (already widened for their degrees
    of freedom), `method` 'seeds' or 'residuals', and every cell's standardised residual `z`
    (NaN for cells outside the fit), for the check that the smooth form fits near l*."""

    method: str
    pool: np.ndarray
    z: np.ndarray
    fitted_loss: np.ndarray  # R + Ê at the fitted cells


def bootstrap_noise(cells: Cells, fit: ExcessFit, seed_pool: np.ndarray, seed_dof: int, tail: float) -> BootstrapNoise:
    """Seeds where the cells have several, else the fit's relative residuals."""
    index = fit.fit_index
    fitted_loss = cells.risk[index] + forms.smooth_excess(fit.design, fit.theta)
    residual = (cells.mean[index] - fitted_loss) / fitted_loss * np.sqrt(cells.n_seeds[index])
    residual_dof = len(index) - len(fit.terms)
    dof_scale = math.sqrt(len(index) / max(residual_dof, 1))
    if seed_pool.size and seed_dof >= 2:
        method, pool, dof = "seeds", seed_pool, seed_dof
    elif len(index):
        method, pool, dof = "residuals", residual * dof_scale, residual_dof
    else:  # one seed each and no smooth fit: no noise to redraw, the bounds alone make the interval
        return BootstrapNoise("none", np.zeros(1), np.full(len(cells.length), np.nan), fitted_loss)
    pool = pool * (stats.t_widening(dof, tail) if dof > 0 else 1.0)
    if method == "seeds":
        noise_sd = float(np.sqrt(np.mean(pool**2)))
    else:
        # a robust scale: a few cells the form cannot follow (a jump between two grid lengths)
        # would otherwise inflate the noise until they no longer stand out
        noise_sd = 1.4826 * float(np.median(np.abs(residual))) * dof_scale
    z = np.full(len(cells.length), np.nan)
    z[index] = residual / max(noise_sd, 1e-12)
    return BootstrapNoise(method, pool, z, fitted_loss)


def bootstrap_means(cells: Cells, noise: BootstrapNoise, fit: ExcessFit, n_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(n_boot + 1, cells) redrawn cell means; row 0 holds the data themselves.

    Seeds are redrawn from the pool; with residuals, one-seed fitted cells vary around their
    fitted value.
    """
    base = cells.mean.copy()
    if noise.method == "residuals":
        base[fit.fit_index] = noise.fitted_loss
    most = int(cells.n_seeds.max())
    draws = noise.pool[rng.integers(0, len(noise.pool), (n_boot, len(base), most))]
    present = np.arange(most)[None, None, :] < cells.n_seeds[None, :, None]
    redrawn = base * (1.0 + (draws * present).sum(axis=2) / cells.n_seeds)
    return np.vstack([cells.mean[None], redrawn])


def misfit_p(z: np.ndarray, used_share: float) -> float:
    """p-value of a chi-square test that standardised residuals `z` are noise alone; the degrees
    of freedom are the cells less their share of the fitted parameters."""
    from scipy.stats import chi2

    if len(z) == 0 or not np.all(np.isfinite(z)):
        return 1.0
    return float(chi2.sf(float((z**2).sum()), max(len(z) * (1.0 - used_share), 0.5)))
