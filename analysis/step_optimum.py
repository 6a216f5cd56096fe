"""The optimal context length of a synthetic sweep, read off the exact Bayes risk.

In the synthetic experiment the Bayes risk R(l) is known exactly and is a step function: it drops
by ln 2 / T each time a task's farthest bit, max(l_t, a_t), enters the context. What training
adds, the excess E(l, D) = loss − R(l), rises with l (more inputs to learn to ignore from the same
data). Between two steps the loss can therefore only rise, and the optimum is one of the
**candidate lengths**: every step of R inside the grid's span, from the one that gives R at the
smallest grid length. A continuous l* between two steps would mean nothing
(`analysis.step_candidates`).

The estimator (`step_optimum`):

1. A data size learnt nothing when at every length its loss is within noise (three standard
   errors of its seed mean) of a model that sees no bit, ln 2 for the study's tasks: no l*, no
   interval, left out of the law. Any other data size gets an answer, however little it learnt.
2. The excess is modelled jointly, smooth in log l and log D (`analysis.step_excess`), over the
   data sizes that beat the Bayes risk of the smallest length somewhere; cells that collapsed
   (the model learnt less than half of what the context offers) stay out of that fit. A data
   size that learnt less is read off its own lengths (`analysis.step_interval`).
3. l*(D) = argmin over the candidates of R(c) + Ê(c, D); where training collapsed, the excess is
   at least what the collapsed cells show.
4. The interval comes from a bootstrap that refits the whole model. Where the smooth form cannot
   be trusted (a collapse, cells near l* that disagree with it, a data size it does not cover)
   the interval also spans every candidate that an excess rising with l and convex in log l could
   make optimal, short of a length where the model learnt nothing; where R is known at the grid
   lengths only, every length at which it may step.
5. The answer's status: 'bracketed' (an l* inside the candidates), 'at_or_below' (l* is the
   smallest candidate: an upper bound), 'saturated' (l* is the last length where a task can still
   enter the context, as the string length caps it: a lower bound), 'above' (the largest
   candidate, below that cap: a lower bound), or 'not_learnt' (`analysis.answers.Status`).

Smooth sweeps (GPT, or any sweep without the exact Bayes risk) use `optimum.optimal_context_length`
instead; `optimal_context_length` sends synthetic trials here by itself.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import _validate, stats
from .bayes import with_exact_risk
from .answers import Status
from .results import StepOptimum
from .step_candidates import LN2, Candidates, step_candidates
from .step_excess import Cells, make_cells
from .step_interval import JointModel, bootstrap_model, interval_draws, size_excess

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
        seed_losses = [rows.loc[here, "best_val_loss"].to_numpy(float) for here in at_length]
        per_size[size] = _SizeCells(rows, lengths, seed_losses, np.array([rows.loc[here, "bayes_risk"].mean()
                                                                          for here in at_length]))
    return per_size


def _empty_row(size, cells: _SizeCells, n_excluded: int) -> dict:
    row = dict.fromkeys(OPTIMAL_COLUMNS, math.nan)
    row.update(data_size=size, status=Status.NO_DATA, open_below=False, open_above=False, bracketed=False, outside="",
               learnt=False,
               n_trials=len(cells.trials), n_excluded=n_excluded,
               n_seeds=max((len(losses) for losses in cells.seed_losses), default=0), n_fit_points=0,
               interval_method="none", top_candidates="", estimator="step", note="")
    return row


def _one_seed_noise(per_size: dict, trivial: float, within: float = math.inf) -> float:
    """The relative seed-to-seed spread of a sweep with one seed per cell, read off the cells whose
    loss lies above that of a model that sees no bit (by less than the share `within`): a trained
    model is no worse than that but for noise, so their deviations are noise alone (half of it: the
    RMS of a half-normal is its σ). Widened by Student's t for the few cells it rests on, at the
    three-sigma tail the margins use; never below the default spread, which is all there is with
    fewer than two such cells."""
    above = np.array([(mean - trivial) / mean for cells in per_size.values() for mean in cells.means
                      if 0 < (mean - trivial) / mean < within])
    if len(above) < 2:
        return SEED_NOISE_DEFAULT
    widened = float(np.sqrt(np.mean(above**2))) * stats.t_widening(len(above), THREE_SIGMA_TAIL)
    return max(widened, SEED_NOISE_DEFAULT)


def learnt_below(trivial: float, null_sd: float) -> float:
    """The loss under which a trial learnt something: clearly below a model that sees no bit, by the
    noise of such models' losses (three of their standard deviations, and at least 0.001 nats)."""
    return trivial - max(3 * null_sd * trivial, 1e-3)


def noise_cells(per_size: dict, trivial: float, null_sd: float) -> list:
    """The cells whose seeds the seed-to-seed noise is pooled from: every cell but those where some
    seeds learnt and others learnt nothing. Such a cell is chaotic training (a seed that never left
    the plateau at ln 2), not noise about its mean; pooled as noise, one such cell sets the spread of
    every cell, and an adaptive search, which adds seeds near l* where training is chaotic, meets it
    often. The cell's mean keeps its failed seeds: they are part of what training at that length gives."""
    level = learnt_below(trivial, null_sd)
    return [losses for cells in per_size.values() for losses in cells.seed_losses
            if not ((losses < level).any() and (losses >= level).any())]


def _screen(row: dict, cells: _SizeCells, candidates: Candidates, seed_sd: float, null_sd: float) -> str:
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
    # learnt: some trial clearly below a model that sees no bit, by the noise of such models'
    # losses; not by the seed-to-seed spread, which is wide where training is chaotic (one seed
    # learns, another stays at ln 2): that is learning something, not noise around nothing
    lowest = min(float(losses.min()) for losses in cells.seed_losses)
    row["learnt"] = bool(lowest < learnt_below(candidates.trivial, null_sd))
    if not row["learnt"]:
        row["status"] = Status.NOT_LEARNT
        row["note"] = (f"not learnt: the loss ({lowest:.4f} at best) is within noise of a model that "
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
    where = f"from l = {lengths[first]:g} on" if run_to_end else "at l = " + ", ".join(f"{length:g}" for length in lengths[collapsed])
    return f"collapsed {where} (learnt less than half of what the context offers; kept out of the smooth fit)"


def outside_words(lengths: np.ndarray, means: np.ndarray, low: float, high: float, l_star: float,
                  candidates: np.ndarray) -> str:
    """A note where a data size's own best length (the lowest mean loss over its seeds) lies
    outside the interval, which the smooth excess fitted across data sizes then decides. A tried
    length counts as its candidate: the step at or below it, whose Bayes risk it shares.

    >>> steps = np.array([50.0, 52.0, 55.0, 58.0, 93.0])
    >>> outside_words(np.array([52.0, 55.0, 58.0]), np.array([0.2561, 0.2632, 0.2715]), 58, 58, 58, steps)
    'its own best length, 52 (0.2561 against 0.2715 at l* = 58), lies outside the interval: the excess fitted across data sizes sets it, and the losses near l* do not reject that fit'
    >>> outside_words(np.array([58.0, 94.0]), np.array([0.2, 0.1]), 93, 93, 93, steps)  # 94 is step 93
    ''
    """
    best = int(np.argmin(means))
    step = candidates[candidates <= lengths[best]]
    if len(step) and low <= step.max() <= high:
        return ""
    at_l_star = means[lengths == l_star]
    against = f" against {at_l_star[0]:.4f} at l* = {l_star:g}" if len(at_l_star) else ""
    return (f"its own best length, {lengths[best]:g} ({means[best]:.4f}{against}), lies outside the interval: "
            "the excess fitted across data sizes sets it, and the losses near l* do not reject that fit")


def _estimate_size(model: JointModel, size: float, row: dict, tail: float) -> np.ndarray:
    """Fill one data size's row; return its bootstrap l* (row 0: the data's)."""
    candidates, cells = model.candidates, model.cells
    here = np.flatnonzero(cells.size == size)
    order = here[np.argsort(cells.length[here])]
    excess = size_excess(model, size, order)
    total = np.where(candidates.known, candidates.risk_high + excess, np.inf)
    pick = total.argmin(axis=1)
    boot_l = candidates.lengths[pick]
    low_draws, high_draws, method, note = interval_draws(model, order, excess, boot_l)
    l_star = float(boot_l[0])
    low = min(float(np.quantile(low_draws[1:], tail, method="lower")), l_star)
    high = max(float(np.quantile(high_draws[1:], 1 - tail, method="higher")), l_star)
    status = status_of(l_star, candidates)
    in_fit = bool(cells.fitted[order].any())  # a data size outside the fit says it learnt little instead
    collapsed = collapse_words(cells.length[order], cells.collapsed[order]) if in_fit else ""
    # only where the smooth fit decided (a misfit already says so, and widens the interval)
    outside = (outside_words(cells.length[order], cells.mean[order], low, high, l_star, candidates.lengths)
               if in_fit and not note else "")
    ends = [candidates.lengths[0], candidates.lengths[-1]]
    row.update(status=status, l_star_low=low, l_star_high=high, loss_at_l_star=float(total[0, pick[0]]),
               n_fit_points=int(cells.fitted[here].sum()), interval_method=method,
               boot_unbracketed=float(np.mean(np.isin(boot_l[1:], ends))), top_candidates=top_shares(boot_l[1:]),
               note="; ".join(filter(None, [row["note"], note, outside, collapsed])),
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
    trivial = candidates.trivial if candidates else LN2
    # the spread of models that learnt nothing: cells just above ln 2 (further above is overfit, not noise)
    null_sd = _one_seed_noise(per_size, trivial, within=0.05)
    seed_pool, seed_dof = stats.seed_deviations(noise_cells(per_size, trivial, null_sd))
    seed_sd = float(np.sqrt(np.mean(seed_pool**2))) if seed_pool.size else _one_seed_noise(per_size, trivial)
    rows = {size: _empty_row(size, per_size[size], int((excluded["data_size"] == size).sum())) for size in sizes}
    how = {size: _screen(rows[size], per_size[size], candidates, seed_sd, null_sd) for size in sizes}
    estimated = [size for size in sizes if how[size]]
    shown = tuple(candidates.lengths.astype(int).tolist()) if candidates is not None else ()
    if not estimated:
        table = pd.DataFrame([rows[size] for size in sizes], columns=OPTIMAL_COLUMNS)
        return StepOptimum(table, _increase([], np.empty((0, 0))), shown, (), (), confidence, 0,
                           "no data size learnt anything: no optimum to place")
    cells = _joint_cells(per_size, {size: how[size] for size in estimated}, candidates.trivial, seed_sd)
    model = bootstrap_model(cells, candidates, seed_pool, seed_dof, tail, n_boot, np.random.default_rng(seed))
    boot_l = np.column_stack([_estimate_size(model, size, rows[size], tail) for size in estimated])
    table = pd.DataFrame([rows[size] for size in sizes], columns=OPTIMAL_COLUMNS)
    return StepOptimum(table, _increase(estimated, boot_l[1:]), shown, model.fit.terms,
                       tuple(float(value) for value in model.fit.theta), confidence, n_boot, boot=boot_l[1:])
