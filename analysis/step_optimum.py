"""The optimal context length of a synthetic sweep, read off the exact Bayes risk.

In the synthetic experiment the Bayes risk R(l) is known exactly and is a step function: it drops
by ln 2 / T each time a task's farthest bit, max(l_t, a_t), enters the context. What training
adds, the excess E(l, D) = loss − R(l), rises with l (more inputs to learn to ignore from the same
data). Between two steps the loss can therefore only rise, and the optimum is one of the
**candidate lengths**: the smallest grid length and every step inside the grid's span. A
continuous l* between two steps would mean nothing (`analysis.step_candidates`).

The estimator (`step_optimum`):

1. A data size learnt nothing when at every length its loss is within noise of a model that sees
   no bit (ln 2 for the study's tasks): no l*, no interval, left out of the law. Any other data
   size gets an answer, however little it learnt.
2. The excess is modelled jointly over the learnt data sizes, smooth in log l and log D
   (`analysis.step_excess`); cells that collapsed (the model learnt less than half of what the
   context offers) stay out of that fit.
3. l*(D) = argmin over the candidates of R(c) + Ê(c, D). Where training collapsed, the excess is
   at least what the collapsed cells show; a data size with no cell in the smooth fit is read off
   its own cells alone.
4. The interval comes from a bootstrap that refits the whole model. Where the smooth form cannot
   be trusted (a collapse, cells near l* that disagree with it, a data size it does not cover)
   the interval also spans every candidate that an excess rising with l could make optimal;
   where R is known at the grid lengths only, every length at which it may step.
5. The answer's status: 'bracketed' (an l* inside the candidates), 'at_or_below' (l* is the
   smallest length: an upper bound), 'saturated' (l* is the last length where a task can still
   enter the context, as the string length caps it: a lower bound), 'above' (the largest
   candidate, below that cap: a lower bound), or 'not_learnt'.

Smooth sweeps (GPT, or any sweep without the exact Bayes risk) use `optimum.optimal_context_length`
instead; `optimal_context_length` sends synthetic trials here by itself.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import _validate, forms, stats
from .bayes import with_exact_risk
from .answers import Status
from .results import StepOptimum
from .step_candidates import LN2, Candidates, grid_gap_mask, mask_bounds, plausible, step_candidates
from .step_excess import (BootstrapNoise, Cells, ExcessFit, bootstrap_means, bootstrap_noise, fit_excess,
                          fit_joint_excess, make_cells, misfit_p)

MISFIT_P = 0.05  # below this p-value a data size's cells disagree with the smooth excess
SEED_NOISE_DEFAULT = 0.005  # relative seed-to-seed spread assumed when no cell has two seeds
THREE_SIGMA_TAIL = 0.00135  # the one-sided normal tail beyond three standard deviations

OPTIMAL_COLUMNS = [
    "data_size", "l_star", "l_star_low", "l_star_high", "status", "open_below", "open_above", "bracketed", "outside",
    "learnt", "best_loss",
    "grid_l_best", "loss_at_l_star", "n_trials", "n_excluded", "n_seeds", "n_fit_points", "interval_method",
    "boot_unbracketed", "top_candidates", "estimator", "note",
]


class _SizeCells(NamedTuple):
    """One data size's usable trials, its grid lengths, each length's seed losses and R there."""

    trials: pd.DataFrame
    lengths: np.ndarray
    seed_losses: list
    risk: np.ndarray

    @property
    def means(self) -> np.ndarray:
        return np.array([losses.mean() for losses in self.seed_losses])

    def margins(self, seed_sd: float) -> np.ndarray:
        """How far below a level a length's mean loss must lie to be clearly below it: three
        standard errors of the seed mean, and at least 0.001 nats."""
        counts = np.array([len(losses) for losses in self.seed_losses])
        spread = seed_sd if np.isfinite(seed_sd) else SEED_NOISE_DEFAULT
        return np.maximum(3 * spread * self.means / np.sqrt(counts), 1e-3)


def _cells_per_size(ok: pd.DataFrame, sizes) -> dict:
    per_size = {}
    for size in sizes:
        rows = ok[ok["data_size"] == size]
        lengths = np.sort(rows["context_length"].unique())
        at_length = [rows["context_length"] == length for length in lengths]
        per_size[size] = _SizeCells(rows, lengths, [rows.loc[m, "best_val_loss"].to_numpy(float) for m in at_length],
                                    np.array([rows.loc[m, "bayes_risk"].mean() for m in at_length]))
    return per_size


def _empty_row(size, cells: _SizeCells, n_excluded: int) -> dict:
    row = dict.fromkeys(OPTIMAL_COLUMNS, math.nan)
    row.update(data_size=size, status=Status.NO_DATA, open_below=False, open_above=False, bracketed=False, outside="",
               learnt=False,
               n_trials=len(cells.trials), n_excluded=n_excluded,
               n_seeds=max((len(losses) for losses in cells.seed_losses), default=0), n_fit_points=0,
               interval_method="none", top_candidates="", estimator="step", note="")
    return row


def _one_seed_noise(per_size: dict, trivial: float) -> float:
    """The relative seed-to-seed spread of a sweep with one seed per cell, read off the cells whose
    loss lies above that of a model that sees no bit: a trained model is no worse than that but
    for noise, so their deviations are noise alone (half of it: the RMS of a half-normal is its σ).
    Widened by Student's t for the few cells it rests on, at the three-sigma tail the margins use;
    never below the default spread, which is all there is with fewer than two such cells."""
    above = np.array([(mean - trivial) / mean for cells in per_size.values() for mean in cells.means if mean > trivial])
    if len(above) < 2:
        return SEED_NOISE_DEFAULT
    widened = float(np.sqrt(np.mean(above**2))) * stats.t_widening(len(above), THREE_SIGMA_TAIL)
    return max(widened, SEED_NOISE_DEFAULT)


def _screen(row: dict, cells: _SizeCells, candidates: Candidates, seed_sd: float) -> str:
    """Fill what can be said without the fit; say how the data size goes on to be estimated.

    Returns '' (not estimated: no usable trials, not learnt, too few lengths), 'smooth' (some
    length clearly below the Bayes risk of the smallest length: the smooth excess model applies)
    or 'own' (learnt something, but too little for that model: l* from its own cells).
    """
    if len(cells.lengths) == 0:
        row["note"] = "no usable trials"
        return ""
    means, margins = cells.means, cells.margins(seed_sd)
    best = int(np.argmin(means))
    row.update(best_loss=means[best], grid_l_best=cells.lengths[best])
    row["learnt"] = bool(np.any(means < candidates.trivial - margins))
    if not row["learnt"]:
        row["status"] = Status.NOT_LEARNT
        row["note"] = (f"not learnt: the loss ({means.min():.4f} at best) is within noise of a model that "
                       f"sees no bit ({candidates.trivial:.4f}) at every length")
        return ""
    if len(cells.lengths) < 3:
        row["status"] = Status.TOO_FEW
        row["note"] = f"{len(cells.lengths)} context length(s): too few to place an optimum"
        return ""
    floor = candidates.risk_high[0]
    if np.any(means < floor - margins):
        return "smooth"
    row["note"] = (f"learnt little (nowhere below the Bayes risk of the smallest length, {floor:.4f}): l* from its "
                   "own lengths, not the smooth excess")
    return "own"


def _joint_cells(per_size: dict, how: dict, trivial: float, seed_sd: float) -> Cells:
    """The cells of the data sizes to estimate (`how`: size -> 'smooth' / 'own'), in (size, length) order."""
    columns = [[] for _ in range(7)]
    for size, way in how.items():
        cells = per_size[size]
        n = len(cells.lengths)
        new = (cells.lengths, np.full(n, size), cells.means, [len(losses) for losses in cells.seed_losses],
               cells.risk, np.full(n, way == "smooth"), cells.means >= trivial - cells.margins(seed_sd))
        for values, added in zip(columns, new):
            values.extend(added)
    return make_cells(*columns)


class _Model(NamedTuple):
    """The joint excess fit and its bootstrap, shared by every data size."""

    candidates: Candidates
    cells: Cells
    fit: ExcessFit
    noise: BootstrapNoise
    boot_means: np.ndarray  # (n_boot + 1, cells); row 0: the data
    boot_theta: np.ndarray  # (n_boot + 1, terms)


def _bootstrap_model(cells: Cells, candidates: Candidates, seed_pool: np.ndarray, seed_dof: int, tail: float,
                     n_boot: int, rng: np.random.Generator) -> _Model:
    fit = fit_joint_excess(cells)
    noise = bootstrap_noise(cells, fit, seed_pool, seed_dof, tail)
    means = bootstrap_means(cells, noise, fit, n_boot, rng)
    index = fit.fit_index
    boot_theta = (fit_excess(fit.design, means[:, index] - cells.risk[index], fit.weight, fit.theta)
                  if len(index) else np.tile(fit.theta, (n_boot + 1, 1)))
    return _Model(candidates, cells, fit, noise, means, boot_theta)


def _own_excess(model: _Model, order: np.ndarray) -> np.ndarray:
    """(n_boot + 1, candidates) excess of a data size outside the smooth fit, from its own cells:
    the chord in log l between consecutive lengths, flat beyond its first and last length."""
    lengths, cells = model.candidates.lengths, model.cells
    x = np.log(cells.length[order])
    excess = model.boot_means[:, order] - cells.risk[order]
    right = np.clip(np.searchsorted(x, np.log(lengths), side="left"), 1, max(len(x) - 1, 1))
    left = right - 1
    share = np.clip((np.log(lengths) - x[left]) / np.maximum(x[right] - x[left], 1e-12), 0.0, 1.0)
    return excess[:, left] + share * (excess[:, right] - excess[:, left])


def _size_excess(model: _Model, size: float, order: np.ndarray) -> np.ndarray:
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


def _misfit(model: _Model, order: np.ndarray, l_star: float) -> float:
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


def _bounds_region(model: _Model, order: np.ndarray, misfit: bool) -> np.ndarray:
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


def _interval_draws(model: _Model, order: np.ndarray, excess: np.ndarray, boot_l: np.ndarray):
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


def status_of(l_star: float, candidates: Candidates) -> str:
    """Which answer an l* at a candidate length gives (see the module's docstring, point 5)."""
    lengths = candidates.lengths
    if l_star == lengths[0]:
        return Status.AT_OR_BELOW
    if candidates.risk_high[lengths == l_star][0] <= candidates.risk_floor + 1e-12:
        return Status.SATURATED
    return Status.ABOVE if l_star == lengths[-1] else Status.BRACKETED


def top_shares(boot_l: np.ndarray, most: int = 3) -> str:
    """The bootstrap's most frequent l*, with their shares; those that round to 0 % are left out.

    >>> top_shares(np.array([47.0] * 90 + [45.0] * 9 + [43.0]))
    '47: 90%, 45: 9%, 43: 1%'
    >>> top_shares(np.array([47.0] * 999 + [45.0]))
    '47: 100%'
    """
    values, counts = np.unique(boot_l, return_counts=True)
    shares = counts / len(boot_l)
    top = [i for i in np.argsort(-counts)[:most] if round(100 * shares[i]) > 0]
    return ", ".join(f"{values[i]:g}: {shares[i]:.0%}" for i in top)


def collapse_words(lengths: np.ndarray, collapsed: np.ndarray) -> str:
    """Where a data size collapsed, in few words: a run to its largest length as 'from l = x on'.

    >>> collapse_words(np.array([20, 24, 32, 48, 64, 80]), np.array([0, 0, 0, 0, 1, 1], bool))
    'collapsed from l = 64 on (learnt less than half of what the context offers; kept out of the smooth fit)'
    >>> collapse_words(np.array([27, 32, 36]), np.array([1, 0, 1], bool))
    'collapsed at l = 27, 36 (learnt less than half of what the context offers; kept out of the smooth fit)'
    """
    if not collapsed.any():
        return ""
    first = int(np.argmax(collapsed))
    run_to_end = collapsed[first:].all() and len(lengths) - first >= 2
    where = f"from l = {lengths[first]:g} on" if run_to_end else "at l = " + ", ".join(f"{v:g}" for v in lengths[collapsed])
    return f"collapsed {where} (learnt less than half of what the context offers; kept out of the smooth fit)"


def _estimate_size(model: _Model, size: float, row: dict, tail: float) -> np.ndarray:
    """Fill one data size's row; return its bootstrap l* (row 0: the data's)."""
    candidates, cells = model.candidates, model.cells
    here = np.flatnonzero(cells.size == size)
    order = here[np.argsort(cells.length[here])]
    excess = _size_excess(model, size, order)
    total = np.where(candidates.known, candidates.risk_high + excess, np.inf)
    pick = total.argmin(axis=1)
    boot_l = candidates.lengths[pick]
    low_draws, high_draws, method, note = _interval_draws(model, order, excess, boot_l)
    l_star = float(boot_l[0])
    low = min(float(np.quantile(low_draws[1:], tail, method="lower")), l_star)
    high = max(float(np.quantile(high_draws[1:], 1 - tail, method="higher")), l_star)
    status = status_of(l_star, candidates)
    in_fit = bool(cells.fitted[order].any())  # a data size outside the fit says it learnt little instead
    collapsed = collapse_words(cells.length[order], cells.collapsed[order]) if in_fit else ""
    ends = [candidates.lengths[0], candidates.lengths[-1]]
    row.update(status=status, l_star_low=low, l_star_high=high, loss_at_l_star=float(total[0, pick[0]]),
               n_fit_points=int(cells.fitted[here].sum()), interval_method=method,
               boot_unbracketed=float(np.mean(np.isin(boot_l[1:], ends))), top_candidates=top_shares(boot_l[1:]),
               note="; ".join(filter(None, [row["note"], note, collapsed])),
               bracketed=status == Status.BRACKETED,
               outside={Status.AT_OR_BELOW: "below", Status.ABOVE: "above"}.get(status, ""), **open_ends(low, high, candidates))
    if status in (Status.BRACKETED, Status.SATURATED):
        row["l_star"] = l_star
    return boot_l


def open_ends(low: float, high: float, candidates: Candidates) -> dict:
    """Whether the interval's bounds are the span's ends, beyond which l* may lie: below the
    smallest length, or above the largest where R could still fall (not past the string's end)."""
    lengths = candidates.lengths
    can_fall = candidates.risk_low[-1] > candidates.risk_floor + 1e-12
    return {"open_below": bool(low <= lengths[0]), "open_above": bool(high >= lengths[-1] and can_fall)}


def _increase(sizes, boot_l: np.ndarray) -> pd.DataFrame:
    """P(l* does not fall) and P(l* rises) per pair of consecutive estimated data sizes."""
    rows = [{"data_size": sizes[j], "next_data_size": sizes[j + 1],
             "p_not_lower": float(np.mean(boot_l[:, j + 1] >= boot_l[:, j])),
             "p_higher": float(np.mean(boot_l[:, j + 1] > boot_l[:, j]))} for j in range(len(sizes) - 1)]
    return pd.DataFrame(rows, columns=["data_size", "next_data_size", "p_not_lower", "p_higher"])


@_validate.fits_one_configuration
def step_optimum(trials: pd.DataFrame, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> StepOptimum:
    """Optimal context length per data size of a synthetic sweep, from its exact Bayes risk.

    Parameters
    ----------
    trials : DataFrame
        context_length, data_size, best_val_loss, seed, status, and the exact Bayes risk: a
        `tasks` column (JSON [l, a] list) with `string_length`, or a `bayes_risk` column.
    n_boot : int, default 1000
        Bootstrap refits.
    seed : int, default 0
        Seed of the bootstrap.
    confidence : float, default 0.95
        Coverage of the intervals.

    Returns
    -------
    StepOptimum
        `.table` has one row per data size. `status` says which answer it is: 'bracketed' (`l_star`
        with `l_star_low/high`), 'at_or_below' (`l_star_high` bounds l* from above; `outside`
        'below'), 'saturated' (`l_star` is the last length where a task can enter, `l_star_low`
        bounds it from below), 'above' (`l_star_low` bounds l* from below; `outside` 'above'),
        'not_learnt' (no answer), 'too_few' or 'no_data'. `bracketed` is True for 'bracketed'
        only; `learnt` False where the loss is within noise of a model that sees no bit;
        `top_candidates` the bootstrap shares of the most frequent l*. `.increase` has
        P(l*(D_next) >= l*(D)) and P(l*(D_next) > l*(D)) per pair of consecutive estimated sizes.

    Examples
    --------
    A simulated sweep of the study's 50 tasks whose true l* is known:

    >>> from analysis.calibration import simulate_step_sweep
    >>> trials, truth = simulate_step_sweep("own", [20, 24, 32, 48, 64, 80], [50_000, 200_000], n_seeds=3,
    ...                                     noise=0.002, rng=np.random.default_rng(1))
    >>> truth
    {50000.0: 47.0, 200000.0: 58.0}
    >>> fit = step_optimum(trials, n_boot=200)
    >>> fit.table[["data_size", "l_star", "l_star_low", "l_star_high", "status"]].values.tolist()
    [[50000, 47.0, 47.0, 62.0, 'bracketed'], [200000, 58.0, 58.0, 58.0, 'bracketed']]
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    ok, excluded = _validate.split_trials(trials)
    ok = with_exact_risk(ok, "step_optimum")
    tail = (1.0 - confidence) / 2
    sizes = sorted(set(ok["data_size"]) | set(excluded["data_size"]))
    per_size = _cells_per_size(ok, sizes)
    grid = np.sort(ok["context_length"].unique())
    candidates = step_candidates(ok, float(grid.min()), float(grid.max())) if len(grid) else None
    seed_pool, seed_dof = stats.seed_deviations([losses for cells in per_size.values() for losses in cells.seed_losses])
    seed_sd = (float(np.sqrt(np.mean(seed_pool**2))) if seed_pool.size
               else _one_seed_noise(per_size, candidates.trivial if candidates else LN2))
    rows = {size: _empty_row(size, per_size[size], int((excluded["data_size"] == size).sum())) for size in sizes}
    how = {size: _screen(rows[size], per_size[size], candidates, seed_sd) for size in sizes}
    estimated = [size for size in sizes if how[size]]
    shown = tuple(candidates.lengths.astype(int).tolist()) if candidates else ()
    if not estimated:
        table = pd.DataFrame([rows[s] for s in sizes], columns=OPTIMAL_COLUMNS)
        return StepOptimum(table, _increase([], np.empty((0, 0))), shown, (), (), confidence, 0,
                           "no data size learnt anything: no optimum to place")
    cells = _joint_cells(per_size, {size: how[size] for size in estimated}, candidates.trivial, seed_sd)
    model = _bootstrap_model(cells, candidates, seed_pool, seed_dof, tail, n_boot,
                             np.random.default_rng(seed))
    boot_l = np.column_stack([_estimate_size(model, size, rows[size], tail) for size in estimated])
    table = pd.DataFrame([rows[s] for s in sizes], columns=OPTIMAL_COLUMNS)
    return StepOptimum(table, _increase(estimated, boot_l[1:]), shown, model.fit.terms,
                       tuple(float(t) for t in model.fit.theta), confidence, n_boot, boot=boot_l[1:])
