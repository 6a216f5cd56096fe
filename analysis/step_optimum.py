"""The optimal context length of a synthetic sweep, read off the exact Bayes risk.

In the synthetic experiment the Bayes risk R(l) is known exactly and is a step function: it drops
by ln 2 / T each time a task's farthest bit, max(l_t, a_t), enters the context. What training
adds, the excess E(l, D) = loss − R(l), rises with l (more inputs to learn to ignore from the same
data). Between two steps the loss can therefore only rise, and the optimum is one of the
**candidate lengths**: the smallest grid length and every step inside the grid's span. A
continuous l* between two steps would mean nothing.

The estimator (`step_optimum`):

1. A data size whose loss is nowhere better than the Bayes risk of the smallest context length
   learnt nothing: no l*, no interval, left out of the law.
2. The excess is modelled jointly over the learnt data sizes, smooth in x = log l and y = log D:
   E = exp(θ0 + θ1·x + θ2·x² + θ3·y + θ4·x·y) (terms the grid cannot identify are dropped),
   fitted in loss space by weighted Gauss-Newton. Cells that collapsed (the model learnt less
   than half of what the context offers) stay out of this fit: no smooth form follows them.
3. l*(D) = argmin over the candidates of R(c) + Ê(c, D).
4. The interval comes from a bootstrap that refits the whole model: seeds are redrawn within
   each cell (from the seed-to-seed deviations pooled over cells, as 2-3 seeds per cell say
   little alone), residuals where there is one seed. Each bootstrap curve also yields the set of
   candidates that any excess rising with l and convex in log l could make optimal (`_plausible`);
   the interval spans both, so it holds when the smooth form is wrong, and when training
   collapsed between two grid lengths it runs from the last learnt one to just below the first
   collapsed one, which is all the grid can say.

Smooth sweeps (GPT, or any sweep without the exact Bayes risk) use `optimum.optimal_context_length`
instead; `optimal_context_length` sends synthetic trials here by itself.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from . import _validate, forms, stats
from .bayes import with_exact_risk
from .results import StepOptimum

LN2 = math.log(2.0)
MISFIT_P = 0.05  # below this p-value a data size's cells disagree with the smooth excess
COLLAPSE_SHARE = 0.5  # a cell whose excess exceeds this share of the learnable loss has collapsed

OPTIMAL_COLUMNS = [
    "data_size", "l_star", "l_star_low", "l_star_high", "bracketed", "outside", "learnt", "best_loss",
    "grid_l_best", "loss_at_l_star", "n_trials", "n_excluded", "n_seeds", "n_fit_points", "interval_method",
    "boot_unbracketed", "top_candidates", "estimator", "note",
]


# --------------------------------------------------------------------------------------------------
# the excess model: log E linear in a few terms of x = log l and y = log D (forms.smooth_excess)


def _choose_terms(n_lengths: int, n_sizes: int, n_cells: int) -> tuple[str, ...]:
    use = ["1", "x"]
    if n_lengths >= 4:
        use.append("x2")
    if n_sizes >= 2:
        use += ["y", "xy"]
    while len(use) >= n_cells and len(use) > 1:  # keep at least one spare cell for the noise
        use.pop()
    return tuple(use)


def _fit_excess(design: np.ndarray, excess: np.ndarray, weight: np.ndarray, start: np.ndarray,
                iterations: int = 40) -> np.ndarray:
    """Weighted least squares of E ≈ exp(design · θ) for each row of `excess` (B, n), batched.

    Levenberg-Marquardt steps from `start` (P,), each row with its own damping; rows are
    bootstrap replicates, so one call refits them all.
    """
    n_rows, n_par = excess.shape[0], design.shape[1]
    theta = np.tile(start, (n_rows, 1))
    damping = np.full(n_rows, 1e-3)

    def sse(th):
        fitted = forms.smooth_excess(design, th)
        return (weight * (excess - fitted) ** 2).sum(axis=1), fitted

    current, fitted = sse(theta)
    eye = np.eye(n_par)
    for _ in range(iterations):
        jac = fitted[:, :, None] * design[None]  # (B, n, P)
        jtw = jac.transpose(0, 2, 1) * weight  # (B, P, n)
        normal = jtw @ jac
        grad = (jtw @ (excess - fitted)[:, :, None])[:, :, 0]
        diag = np.einsum("bii->bi", normal)
        scale = diag + 1e-6 * diag.mean(axis=1, keepdims=True) + 1e-30  # a vanished excess leaves a zero column
        step = (np.linalg.pinv(normal + damping[:, None, None] * scale[:, :, None] * eye) @ grad[:, :, None])[:, :, 0]
        trial = theta + step
        new, new_fitted = sse(trial)
        better = new < current
        theta[better], current[better], fitted[better] = trial[better], new[better], new_fitted[better]
        damping = np.clip(np.where(better, damping / 3, damping * 4), 1e-9, 1e9)
    return theta


def _initial_theta(design: np.ndarray, excess: np.ndarray, weight: np.ndarray) -> np.ndarray:
    # log of the excess, floored: cells learnt to within noise have E ≈ 0 and may read negative
    floor = max(float(np.quantile(np.abs(excess), 0.25)), 1e-5)
    log_e = np.log(np.maximum(excess, floor))
    w = np.sqrt(np.maximum(excess, floor) ** 2 * weight)
    return stats.least_squares(design * w[:, None], log_e * w).coef


# --------------------------------------------------------------------------------------------------
# what any rising, convex-in-log-l excess allows


def _plausible(grid_x: np.ndarray, grid_excess: np.ndarray, cand_x: np.ndarray, cand_risk: np.ndarray,
               ) -> np.ndarray:
    """(B, candidates) mask: the candidates that an excess rising with l and convex in log l could
    make optimal, given the excess at the grid lengths (B, n) of one data size.

    Between grid lengths x_i < x_{i+1} such an excess lies below the chord and above both E(x_i)
    and the left segment's line carried on. (The right segment's line is not used: after a
    collapse the excess saturates, which is not convex.) A candidate is plausible when its lowest
    possible loss is no higher than the lowest loss some candidate surely reaches.
    """
    n = grid_excess.shape[1]
    gap = np.clip(np.searchsorted(grid_x, cand_x, side="right") - 1, 0, n - 1)  # grid length at or below
    nxt = np.minimum(gap + 1, n - 1)
    span = np.where(nxt > gap, grid_x[nxt] - grid_x[gap], 1.0)
    t = np.where(nxt > gap, (cand_x - grid_x[gap]) / span, 0.0)
    e_lo, e_hi = grid_excess[:, gap], grid_excess[:, nxt]
    upper = e_lo + t * (e_hi - e_lo)
    prev = np.maximum(gap - 1, 0)
    run = np.where(gap > prev, grid_x[gap] - grid_x[prev], 1.0)
    slope_prev = np.where(gap > prev, (grid_excess[:, gap] - grid_excess[:, prev]) / run, 0.0)
    lower = e_lo + np.maximum(slope_prev, 0.0) * (cand_x - grid_x[gap])
    lower = np.minimum(lower, np.maximum(upper, e_lo))  # noise can cross the two; keep lower <= upper
    best_upper = (cand_risk + upper).min(axis=1, keepdims=True)
    return cand_risk + lower <= best_upper + 1e-12


# --------------------------------------------------------------------------------------------------
# the estimator


def _candidates(ok: pd.DataFrame, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidate lengths in [lo, hi] (the smallest grid length and every step of R) and R there."""
    if "tasks" in ok.columns and str(ok["tasks"].iloc[0]) not in ("", "None", "nan"):
        tasks = np.asarray(json.loads(str(ok["tasks"].iloc[0])), dtype=int).reshape(-1, 2)
        length = int(ok["string_length"].iloc[0]) if "string_length" in ok.columns else 100
        reach = tasks.max(axis=1)
        steps = reach[(reach > lo) & (reach <= min(hi, length)) & (tasks[:, 0] != tasks[:, 1])]
        lengths = np.unique(np.concatenate([[lo], steps])).astype(float)
        return lengths, np.asarray(forms.synthetic_bayes_risk(tasks, lengths, length), dtype=float)
    # only a bayes_risk column: the grid lengths are all the steps we know of
    table = ok.groupby("context_length")["bayes_risk"].mean()
    return table.index.to_numpy(float), table.to_numpy(float)


def _misfit_p(z: np.ndarray, used_share: float) -> float:
    """p-value of a chi-square test that standardised residuals `z` are noise alone; the degrees
    of freedom are the cells less their share of the fitted parameters."""
    from scipy.stats import chi2

    if len(z) == 0 or not np.all(np.isfinite(z)):
        return 1.0
    return float(chi2.sf(float((z**2).sum()), max(len(z) * (1.0 - used_share), 0.5)))


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
        `.table` has one row per data size: `l_star` (a candidate length) with `l_star_low/high`;
        `learnt` False (and no l*) where the loss is nowhere below the Bayes risk of the smallest
        context length; `bracketed` False where l* is the smallest or largest candidate of the
        grid's span (`outside` 'below' / 'above': the optimum may lie beyond); `top_candidates`
        the bootstrap share of the most frequent l*. `.increase` has P(l*(D_next) >= l*(D)) and
        P(l*(D_next) > l*(D)) per pair of consecutive learnt data sizes.

    Examples
    --------
    A simulated sweep of the study's 50 tasks whose true l* is known:

    >>> from analysis.calibration import simulate_step_sweep
    >>> trials, truth = simulate_step_sweep("own", [20, 24, 32, 48, 64, 80], [50_000, 200_000], n_seeds=3,
    ...                                     noise=0.002, rng=np.random.default_rng(1))
    >>> truth
    {50000.0: 47.0, 200000.0: 58.0}
    >>> fit = step_optimum(trials, n_boot=200)
    >>> fit.table[["data_size", "l_star", "l_star_low", "l_star_high"]].values.tolist()
    [[50000.0, 47.0, 47.0, 62.0], [200000.0, 58.0, 58.0, 58.0]]
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    ok, excluded = _validate.split_trials(trials)
    ok = with_exact_risk(ok, "step_optimum")
    rng = np.random.default_rng(seed)
    tail = (1.0 - confidence) / 2
    sizes = sorted(set(ok["data_size"]) | set(excluded["data_size"]))
    grid_all = np.sort(ok["context_length"].unique())
    cand, cand_risk = _candidates(ok, float(grid_all.min()), float(grid_all.max())) if len(grid_all) else (np.empty(0), np.empty(0))

    # cells: one per (D, l), every usable seed
    per_size = {}
    all_cells = []
    for size in sizes:
        sub = ok[ok["data_size"] == size]
        grid = np.sort(sub["context_length"].unique())
        cells = [sub.loc[sub["context_length"] == l, "best_val_loss"].to_numpy(float) for l in grid]
        risk = np.array([sub.loc[sub["context_length"] == l, "bayes_risk"].mean() for l in grid])
        per_size[size] = (sub, grid, cells, risk)
        all_cells += cells
    seed_pool, seed_dof = stats.seed_deviations(all_cells)
    seed_sd = float(np.sqrt(np.mean(seed_pool**2))) if seed_pool.size else math.nan

    rows, learnt_sizes = {}, []
    for size in sizes:
        sub, grid, cells, risk = per_size[size]
        row = dict.fromkeys(OPTIMAL_COLUMNS, math.nan)
        row.update(data_size=size, bracketed=False, outside="", learnt=False, n_trials=len(sub),
                   n_excluded=int((excluded["data_size"] == size).sum()), n_seeds=max((len(c) for c in cells), default=0),
                   n_fit_points=0, interval_method="none", top_candidates="", estimator="step", note="")
        rows[size] = row
        if len(grid) == 0:
            row["note"] = "no usable trials"
            continue
        means = np.array([c.mean() for c in cells])
        k = int(np.argmin(means))
        row.update(best_loss=means[k], grid_l_best=grid[k])
        # learnt: some cell clearly below the Bayes risk of the smallest context length
        floor = float(np.interp(grid_all.min(), cand, cand_risk)) if len(cand) else risk[0]
        counts = np.array([len(c) for c in cells])
        noise = (seed_sd if np.isfinite(seed_sd) else 0.005) * means / np.sqrt(counts)
        if not np.any(means < floor - np.maximum(3 * noise, 1e-3)):
            row["note"] = (f"not learnt: the loss ({means.min():.4f} at best) is nowhere below the Bayes risk of "
                           f"the smallest context length ({floor:.4f})")
            continue
        if len(grid) < 3:
            row["note"] = f"{len(grid)} context length(s): too few to place an optimum"
            continue
        row["learnt"] = True
        learnt_sizes.append(size)

    if not learnt_sizes:
        table = pd.DataFrame([rows[s] for s in sizes], columns=OPTIMAL_COLUMNS)
        return StepOptimum(table, _empty_increase(), tuple(cand.astype(int).tolist()), (), (), confidence, 0,
                           "no data size learnt anything: no optimum to place")

    # the joint excess fit over the learnt sizes' cells that did not collapse
    cell_l, cell_d, cell_mean, cell_n, cell_risk, cell_fit, cell_collapsed = [], [], [], [], [], [], []
    for size in learnt_sizes:
        _, grid, cells, risk = per_size[size]
        for l, c, r in zip(grid, cells, risk):
            excess = c.mean() - r
            # a cell whose context offers nothing to learn (R = ln 2) says nothing of the smooth
            # excess; one whose excess ate most of what it offers has collapsed: neither is fitted
            nothing = LN2 - r <= 1e-9
            collapsed = not nothing and excess > COLLAPSE_SHARE * (LN2 - r)
            cell_l.append(l); cell_d.append(size); cell_mean.append(c.mean()); cell_n.append(len(c))
            cell_risk.append(r); cell_fit.append(not (nothing or collapsed)); cell_collapsed.append(collapsed)
    cell_l, cell_d = np.array(cell_l, float), np.array(cell_d, float)
    cell_mean, cell_n, cell_risk = np.array(cell_mean), np.array(cell_n), np.array(cell_risk)
    cell_fit, cell_collapsed = np.array(cell_fit), np.array(cell_collapsed)
    x0, y0 = np.log(cell_l).mean(), np.log(cell_d).mean()
    fx, fy = np.log(cell_l) - x0, np.log(cell_d) - y0
    fit_idx = np.flatnonzero(cell_fit)
    terms = _choose_terms(len(np.unique(cell_l[fit_idx])), len(np.unique(cell_d[fit_idx])), len(fit_idx))
    design = forms.excess_design(fx[fit_idx], fy[fit_idx], terms)
    weight = cell_n[fit_idx] / cell_mean[fit_idx] ** 2  # relative noise: sd ∝ loss / sqrt(seeds)
    excess_obs = cell_mean[fit_idx] - cell_risk[fit_idx]
    theta = _fit_excess(design, excess_obs[None], weight, _initial_theta(design, excess_obs, weight))[0]

    # noise for the bootstrap: seeds where every cell has several, else the fit's residuals
    fitted_loss = cell_risk[fit_idx] + forms.smooth_excess(design, theta)
    resid_rel = (cell_mean[fit_idx] - fitted_loss) / fitted_loss * np.sqrt(cell_n[fit_idx])
    if seed_pool.size and seed_dof >= 2:
        method, pool, dof = "seeds", seed_pool, seed_dof
    else:
        dof = len(fit_idx) - len(terms)
        method, pool = "residuals", resid_rel * math.sqrt(len(fit_idx) / max(dof, 1))
    pool = pool * (stats.t_widening(dof, tail) if dof > 0 else 1.0)
    # standardised residuals of every cell, for the check that the smooth form fits near l*
    if method == "seeds":
        noise_sd = float(np.sqrt(np.mean(pool**2)))
    else:
        # a robust scale: a few cells the form cannot follow (a jump between two grid lengths)
        # would otherwise inflate the noise until they no longer stand out
        noise_sd = 1.4826 * float(np.median(np.abs(resid_rel))) * math.sqrt(len(fit_idx) / max(dof, 1))
    z_cell = np.full(len(cell_l), np.nan)
    z_cell[fit_idx] = resid_rel / max(noise_sd, 1e-12)

    # bootstrap cell means: seeds redrawn from the pool; one-seed fit cells around their fitted value
    base = cell_mean.copy()
    if method == "residuals":
        base[fit_idx] = fitted_loss
    draws = pool[rng.integers(0, len(pool), (n_boot, len(base), int(cell_n.max())))]
    mask = np.arange(int(cell_n.max()))[None, None, :] < cell_n[None, :, None]
    boot_means = base * (1.0 + (draws * mask).sum(axis=2) / cell_n)
    boot_means = np.vstack([cell_mean[None], boot_means])  # row 0: the data themselves
    boot_theta = _fit_excess(design, boot_means[:, fit_idx] - cell_risk[fit_idx], weight, theta)

    cx = np.log(cand) - x0
    sizes_arr = np.array(learnt_sizes, float)
    boot_l = np.empty((n_boot + 1, len(learnt_sizes)))
    for j, size in enumerate(learnt_sizes):
        excess = forms.smooth_excess(forms.excess_design(cx, np.log(size) - y0, terms), boot_theta)  # (B+1, candidates)
        here = np.flatnonzero(cell_d == size)
        order = here[np.argsort(cell_l[here])]
        for k, i in enumerate(order):
            if not cell_collapsed[i]:
                continue
            # the excess rises with l: from a collapsed cell on it is at least what that cell shows,
            # whatever the smooth form (fitted without it) would extrapolate; in the gap before it
            # the point estimate takes the rise as spread over the gap (the chord in log l), not
            # as starting at its far end, so l* does not run to the collapse's edge by default
            e_i = (boot_means[:, i] - cell_risk[i])[:, None]
            excess[:, cand >= cell_l[i]] = np.maximum(excess[:, cand >= cell_l[i]], e_i)
            if k > 0:
                prev = order[k - 1]
                inside = (cand > cell_l[prev]) & (cand < cell_l[i])
                share = np.log(cand[inside] / cell_l[prev]) / np.log(cell_l[i] / cell_l[prev])
                e_prev = (boot_means[:, prev] - cell_risk[prev])[:, None]
                excess[:, inside] = np.maximum(excess[:, inside], e_prev + share * (e_i - e_prev))
        total = cand_risk[None] + excess
        pick = total.argmin(axis=1)
        boot_l[:, j] = cand[pick]
        low_b, high_b, method_here = boot_l[:, j], boot_l[:, j], method
        row = rows[size]
        collapsed = cell_collapsed[order]
        # the smooth form is trusted where it fits: the two grid lengths on either side of l*
        below = np.flatnonzero(cell_l[order] <= boot_l[0, j])
        near = order[max(0, (below[-1] if len(below) else -1) - 1):(below[-1] if len(below) else -1) + 3]
        near = near[cell_fit[near]]
        misfit_p = _misfit_p(z_cell[near], len(terms) / len(fit_idx))
        misfit = misfit_p < MISFIT_P
        if collapsed.any() or misfit:
            # where the smooth form cannot be trusted, add every candidate the data cannot rule out:
            # all of them when the data size's cells disagree with it, else those between the last
            # cell before the first collapse and that collapse (the grid cannot say where it began)
            allowed = np.ones(len(cand), bool)
            if not misfit:
                first_collapse = cell_l[order][np.argmax(collapsed)]
                before = cell_l[order][:np.argmax(collapsed)]
                start = cand[cand <= before.max()].max() if len(before) else cand[0]  # same R as that length
                allowed = (cand >= start) & (cand < first_collapse)
            mask = _plausible(np.log(cell_l[order]), boot_means[:, order] - cell_risk[order], np.log(cand),
                              cand_risk) & allowed
            some = mask.any(axis=1)
            first = np.where(some, mask.argmax(axis=1), 0)
            last = np.where(some, len(cand) - 1 - mask[:, ::-1].argmax(axis=1), 0)
            low_b = np.where(some, np.minimum(cand[first], boot_l[:, j]), boot_l[:, j])
            high_b = np.where(some, np.maximum(cand[last], boot_l[:, j]), boot_l[:, j])
            method_here = method + "+bounds"
            if misfit:
                row["note"] = f"the cells near l* disagree with the smooth excess (p = {misfit_p:.2g}): interval from the bounds"
        l_star = float(boot_l[0, j])
        low, high = float(np.quantile(low_b[1:], tail, method="lower")), float(np.quantile(high_b[1:], 1 - tail, method="higher"))
        low, high = min(low, l_star), max(high, l_star)
        values, counts = np.unique(boot_l[1:, j], return_counts=True)
        top = np.argsort(-counts)[:3]
        at_end = l_star in (cand[0], cand[-1])
        row.update(l_star_low=low, l_star_high=high, loss_at_l_star=float(total[0, pick[0]]),
                   n_fit_points=int(np.sum(cell_fit[here])), interval_method=method_here,
                   boot_unbracketed=float(np.mean(np.isin(boot_l[1:, j], [cand[0], cand[-1]]))),
                   top_candidates=", ".join(f"{values[i]:g}: {counts[i] / n_boot:.0%}" for i in top))
        if at_end:
            edge = "l* is the grid's " + ("smallest" if l_star == cand[0] else "largest") + " candidate: the optimum may lie beyond the grid"
            row.update(outside="below" if l_star == cand[0] else "above", note="; ".join(filter(None, [row["note"], edge])))
        else:
            row.update(bracketed=True, l_star=l_star)
        if collapsed.any():
            lengths = ", ".join(f"{v:g}" for v in cell_l[order][collapsed])
            row["note"] = (row["note"] + "; " if row["note"] else "") + f"collapsed at l = {lengths} (kept out of the smooth fit)"

    increase = []
    for j in range(len(learnt_sizes) - 1):
        a, b = boot_l[1:, j], boot_l[1:, j + 1]
        increase.append({"data_size": sizes_arr[j], "next_data_size": sizes_arr[j + 1],
                         "p_not_lower": float(np.mean(b >= a)), "p_higher": float(np.mean(b > a))})
    table = pd.DataFrame([rows[s] for s in sizes], columns=OPTIMAL_COLUMNS)
    return StepOptimum(table, pd.DataFrame(increase, columns=_empty_increase().columns), tuple(cand.astype(int).tolist()),
                       terms, tuple(float(t) for t in theta), confidence, n_boot, boot=boot_l[1:])


def _empty_increase() -> pd.DataFrame:
    return pd.DataFrame(columns=["data_size", "next_data_size", "p_not_lower", "p_higher"])
