"""One data size of the step estimator: its excess over the candidates, and the draws its
interval is read from (`analysis.step_optimum` puts the data sizes together).

The joint excess model (`analysis.step_excess`) and its bootstrap are shared by every data size.
A data size in that fit takes the smooth excess, raised where its training collapsed; one outside
it (it learnt little) is read off its own lengths. Where the smooth form cannot be trusted the
interval widens to every candidate the data cannot rule out (`analysis.step_candidates`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import forms
from .step_candidates import Candidates, grid_gap_mask, mask_bounds, plausible
from .step_excess import (BootstrapNoise, Cells, ExcessFit, bootstrap_means, bootstrap_noise, fit_excess,
                          fit_joint_excess, misfit_p)

MISFIT_P = 0.05  # below this p-value a data size's cells disagree with the smooth excess


class JointModel(NamedTuple):
    """The joint excess fit and its bootstrap, shared by every data size."""

    candidates: Candidates
    cells: Cells
    fit: ExcessFit
    noise: BootstrapNoise
    boot_means: np.ndarray  # (n_boot + 1, cells); row 0: the data
    boot_theta: np.ndarray  # (n_boot + 1, terms)


def bootstrap_model(cells: Cells, candidates: Candidates, seed_pool: np.ndarray, seed_dof: int, tail: float,
                    n_boot: int, rng: np.random.Generator) -> JointModel:
    """The joint excess fit of `cells`, their bootstrap redraws and a refit to each."""
    fit = fit_joint_excess(cells)
    noise = bootstrap_noise(cells, fit, seed_pool, seed_dof, tail)
    means = bootstrap_means(cells, noise, fit, n_boot, rng)
    index = fit.fit_index
    boot_theta = (fit_excess(fit.design, means[:, index] - cells.risk[index], fit.weight, fit.theta)
                  if len(index) else np.tile(fit.theta, (n_boot + 1, 1)))
    return JointModel(candidates, cells, fit, noise, means, boot_theta)


def _own_excess(model: JointModel, order: np.ndarray) -> np.ndarray:
    """(n_boot + 1, candidates) excess of a data size outside the smooth fit, from its own cells:
    the chord in log l between consecutive lengths; before its first length the excess stays flat,
    and past its last length the loss does. Either way an untried length never beats the nearest
    tried one: a flat excess past the last length would credit it with every task that enters
    there, which a data size that learnt little there has shown it does not learn."""
    lengths, cells = model.candidates.lengths, model.cells
    x = np.log(cells.length[order])
    excess = model.boot_means[:, order] - cells.risk[order]
    right = np.clip(np.searchsorted(x, np.log(lengths), side="left"), 1, max(len(x) - 1, 1))
    left = right - 1
    share = np.clip((np.log(lengths) - x[left]) / np.maximum(x[right] - x[left], 1e-12), 0.0, 1.0)
    chord = excess[:, left] + share * (excess[:, right] - excess[:, left])
    past = lengths > cells.length[order[-1]]
    last_loss = model.boot_means[:, order[-1]][:, None]
    chord[:, past] = np.maximum(chord[:, past], last_loss - model.candidates.risk_high[past])
    return chord


def size_excess(model: JointModel, size: float, order: np.ndarray) -> np.ndarray:
    """(n_boot + 1, candidates) excess of one data size: the smooth model, raised where training
    collapsed; a data size with no cell in the smooth fit is read off its own cells alone."""
    lengths, cells = model.candidates.lengths, model.cells
    if not cells.fitted[order].any():
        return _own_excess(model, order)
    excess = forms.smooth_excess(model.fit.design_at(lengths, size), model.boot_theta)
    for position, cell in enumerate(order):
        if not cells.collapsed[cell]:
            continue
        # the excess rises with l: from a collapsed cell on it is at least what that cell shows,
        # whatever the smooth form (fitted without it) would extrapolate; in the gap before it
        # the point estimate takes the rise as spread over the gap (the chord in log l), not
        # as starting at its far end, so l* does not run to the collapse's edge by default
        cell_excess = (model.boot_means[:, cell] - cells.risk[cell])[:, None]
        from_here = lengths >= cells.length[cell]
        excess[:, from_here] = np.maximum(excess[:, from_here], cell_excess)
        if position == 0:
            continue
        previous = order[position - 1]
        inside = (lengths > cells.length[previous]) & (lengths < cells.length[cell])
        share = np.log(lengths[inside] / cells.length[previous]) / np.log(cells.length[cell] / cells.length[previous])
        previous_excess = (model.boot_means[:, previous] - cells.risk[previous])[:, None]
        excess[:, inside] = np.maximum(excess[:, inside], previous_excess + share * (cell_excess - previous_excess))
    return excess


def _misfit(model: JointModel, order: np.ndarray, l_star: float) -> float:
    """p-value that the fitted cells on either side of l* (two grid lengths each way) are noise
    about the smooth excess; 1 where none of them is fitted."""
    cells = model.cells
    below = np.flatnonzero(cells.length[order] <= l_star)
    last_below = below[-1] if len(below) else -1
    near = order[max(0, last_below - 1):last_below + 3]
    near = near[cells.fitted[near]]
    if not len(near):
        return 1.0
    return misfit_p(model.noise.z[near], len(model.fit.terms) / len(model.fit.fit_index))


def p_words(p_value: float) -> str:
    """A p-value as a reader needs it.

    >>> p_words(0.0123), p_words(1.9e-238)
    ('p = 0.012', 'p < 0.001')
    """
    return f"p = {p_value:.2g}" if p_value >= 0.001 else "p < 0.001"


def _bounds_region(model: JointModel, order: np.ndarray, misfit: bool) -> np.ndarray:
    """The candidates the bounds may add.

    Where the cells disagree with the smooth form, or the data size is outside it (it learnt
    little), every candidate. Where training collapsed after fitted cells, those between the last
    cell before the first collapse and that collapse (the grid cannot say where it began). Never
    a length at or beyond one, past the grid's best, where the model learnt nothing: with more
    inputs and the same data it learns nothing there either.
    """
    lengths, cells = model.candidates.lengths, model.cells
    first = int(np.argmax(cells.collapsed[order]))
    if misfit or not cells.fitted[order[:first]].any():
        allowed = np.ones(len(lengths), bool)
    else:
        before = cells.length[order][:first]
        start = lengths[lengths <= before.max()].max()  # same R as that length
        allowed = (lengths >= start) & (lengths < cells.length[order][first])
    best = int(np.argmin(cells.mean[order]))
    dead = order[best:][cells.dead[order[best:]]]
    if len(dead):
        allowed &= lengths < cells.length[dead[0]]
    return allowed


def interval_draws(model: JointModel, order: np.ndarray, excess: np.ndarray, boot_l: np.ndarray):
    """(low, high, method, note): per bootstrap draw, the lowest and highest l* the interval must
    hold: the draw's own l*, widened to the bounds where the smooth form cannot be trusted."""
    candidates, cells = model.candidates, model.cells
    low, high, method, note = boot_l, boot_l, model.noise.method, ""
    p_value = _misfit(model, order, boot_l[0])
    misfit = p_value < MISFIT_P
    if cells.collapsed[order].any() or misfit or not cells.fitted[order].any():
        mask = plausible(np.log(cells.length[order]), model.boot_means[:, order] - cells.risk[order],
                         np.log(candidates.lengths), candidates.risk_low, candidates.risk_high)
        mask &= _bounds_region(model, order, misfit)
        low, high = mask_bounds(mask, candidates.lengths, boot_l)
        method += "+bounds"
        if misfit:
            note = f"the cells near l* disagree with the smooth excess ({p_words(p_value)}): interval from the bounds"
    if not candidates.known.all():
        gap_low, gap_high = mask_bounds(grid_gap_mask(excess, candidates), candidates.lengths, boot_l)
        low, high = np.minimum(low, gap_low), np.maximum(high, gap_high)
        method += "+grid gaps"
    return low, high, method, note
