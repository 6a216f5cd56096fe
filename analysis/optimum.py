"""The optimal context length per data size, and the law l*(D) = k · D^β fitted to those optima.

The grid argmin of a U-shaped loss curve is only a grid point. The continuous estimate here is
the local minimum of a polynomial in log l fitted to the mean losses of the grid points nearest
the grid minimum (up to `window` of them): a cubic when there are five or more, else a
quadratic. The cubic follows the U's asymmetry (a steep Bayes-risk side, a slow approximation
side), which a quadratic over five points turns into a bias of 1-7 % in l* on grids with
spacing √2-2 (measured on the paper's surface form). The estimate is kept between the grid
minimum's two neighbours: a unimodal curve whose grid minimum is at l_i has its minimum in
(l_{i-1}, l_{i+1}). The whole estimator (argmin, window, vertex) is re-run on bootstrap curves,
so the interval also covers doubt about which grid point is lowest.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import _validate, stats
from .bayes import is_synthetic
from .law import fit_optimal_context_law  # noqa: F401  (the law's home before analysis.law)
from .answers import Status
from .results import OptimalContextLength, OptimumResult
from .step_optimum import step_optimum

OPTIMAL_COLUMNS = [
    "data_size", "l_star", "l_star_low", "l_star_high", "status", "open_below", "open_above", "bracketed", "outside",
    "best_loss", "grid_l_best",
    "loss_at_l_star", "n_trials", "n_excluded", "n_seeds", "n_fit_points", "interval_method",
    "boot_unbracketed", "estimator", "note",
]


def _window(k: int, n: int, window: int) -> tuple[int, int]:
    """Index range [lo, hi) of the at most `window` grid points centred on the grid minimum k."""
    return max(0, k - window // 2), min(n, k + window // 2 + 1)


def _poly_coefficients(offset: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Least-squares (c3, c2, c1, c0) of each row of `curves` over `offset`; c3 = 0 below 5 points."""
    degree = 3 if len(offset) >= 5 else 2
    coef = stats.least_squares(np.vander(offset, degree + 1), curves).coef
    return coef if degree == 3 else np.column_stack([np.zeros(len(coef)), coef])


def _vertices(x: np.ndarray, curves: np.ndarray, window: int):
    """Continuous minimum of each row of `curves` (B, n) over log context lengths `x` (n,).

    Returns (x_star, loss_at, side): side -1 / +1 where the row's argmin is the first / last grid
    point (x_star is then that end), 0 inside.
    """
    n_rows, n = curves.shape
    argmin = np.argmin(curves, axis=1)
    side = np.where(argmin == 0, -1, np.where(argmin == n - 1, 1, 0))
    x_star = x[argmin].astype(float)
    loss_at = curves[np.arange(n_rows), argmin].astype(float)
    for centre in np.unique(argmin[side == 0]):
        rows = argmin == centre
        first, stop = _window(centre, n, window)
        c3, c2, c1, c0 = _poly_coefficients(x[first:stop] - x[centre], curves[rows, first:stop]).T
        # The local minimum of c3·t³ + c2·t² + c1·t + c0 is t = -c1 / (c2 + sqrt(c2² - 3·c3·c1)), the
        # root of the derivative where the second derivative is positive; written this way it
        # stays exact as c3 → 0 (then -c1 / 2c2). No real root, or no minimum: keep the grid point.
        discriminant = c2**2 - 3 * c3 * c1
        denominator = c2 + np.sqrt(np.maximum(discriminant, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            offset = np.where((discriminant >= 0) & (denominator > 0), -c1 / denominator, 0.0)
        offset = np.clip(offset, x[centre - 1] - x[centre], x[centre + 1] - x[centre])
        x_star[rows] = x[centre] + offset
        loss_at[rows] = ((c3 * offset + c2) * offset + c1) * offset + c0
    return x_star, loss_at, side


def _window_fit(x: np.ndarray, means: np.ndarray, window: int):
    """(lo, hi, fitted values) of the window polynomial around the grid minimum of `means`."""
    k = int(np.argmin(means))
    lo, hi = _window(k, len(x), window)
    offset = x[lo:hi] - x[k]
    coef = _poly_coefficients(offset, means[None, lo:hi])[0]
    return lo, hi, np.polyval(coef, offset)


def _window_residuals(x: np.ndarray, means: np.ndarray, window: int) -> tuple[np.ndarray, int]:
    """Relative residuals of the window fit, scaled for the coefficients it used, and their dof."""
    k = int(np.argmin(means))
    if k == 0 or k == len(x) - 1:
        return np.empty(0), 0
    lo, hi, fitted = _window_fit(x, means, window)
    n_coef = 4 if hi - lo >= 5 else 3
    if hi - lo <= n_coef:
        return np.empty(0), 0  # the polynomial goes through every point: no noise estimate
    dof = hi - lo - n_coef
    return (means[lo:hi] - fitted) / fitted * math.sqrt((hi - lo) / dof), dof


def _bootstrap_curves(cells, means, x, window, mode, pool, n_boot, rng):
    """(n_boot, n) bootstrap curves: every grid point's seeds redrawn from the pooled seed
    deviations ('seeds'), or the window's fitted values plus pooled residuals ('residuals').

    Pooling gives a noise estimate with many degrees of freedom; redrawing each grid point's own
    2-3 seeds would not (a 95 % interval then covers ~80 %).
    """
    if mode == "seeds":
        columns = []
        for losses in cells:
            draws = pool[rng.integers(0, len(pool), (n_boot, len(losses)))]
            columns.append(losses.mean() * (1.0 + draws.mean(axis=1)))
        return np.column_stack(columns)
    curves = np.tile(means, (n_boot, 1))
    first, stop, fitted = _window_fit(x, means, window)
    draws = pool[rng.integers(0, len(pool), (n_boot, stop - first))]
    curves[:, first:stop] = fitted * (1.0 + draws)
    return curves


class _SmoothSize(NamedTuple):
    """One data size: its usable trials, grid lengths (and their logs), seed losses and means."""

    trials: pd.DataFrame
    lengths: np.ndarray
    x: np.ndarray
    seed_losses: list
    means: np.ndarray


def _smooth_size(rows: pd.DataFrame) -> _SmoothSize:
    lengths = np.sort(rows["context_length"].unique())
    seed_losses = [rows.loc[rows["context_length"] == length, "best_val_loss"].to_numpy(float) for length in lengths]
    return _SmoothSize(rows, lengths, np.log(lengths), seed_losses, np.array([losses.mean() for losses in seed_losses]))


class _Settings(NamedTuple):
    """What every data size's bootstrap shares."""

    window: int
    n_boot: int
    tail: float
    residuals: np.ndarray  # relative residuals of the window fits, pooled over data sizes
    residual_dof: int
    rng: np.random.Generator  # for the bracketed data sizes
    end_rng: np.random.Generator  # for those at a grid end (so the others' intervals do not depend on them)


def _settings(sizes, window: int, n_boot: int, seed: int, tail: float) -> _Settings:
    pooled = [_window_residuals(size.x, size.means, window) for size in sizes if len(size.lengths) >= 3]
    residuals = np.concatenate([r for r, _ in pooled]) if pooled else np.empty(0)
    return _Settings(window, n_boot, tail, residuals, sum(dof for _, dof in pooled), np.random.default_rng(seed),
                     np.random.default_rng([seed, 1]))


def _noise_for(seed_losses: list, first: int, stop: int, settings: _Settings):
    """(mode, widened noise) of the bootstrap over the window [first, stop), or None without one."""
    seed_noise, seed_dof = stats.seed_deviations(seed_losses)
    if all(len(losses) >= 2 for losses in seed_losses[first:stop]) and seed_dof:
        return "seeds", seed_noise * stats.t_widening(seed_dof, settings.tail)
    if settings.residuals.size:
        return "residuals", settings.residuals * stats.t_widening(settings.residual_dof, settings.tail)
    return None


def _size_row(size, data: _SmoothSize, n_excluded: int, settings: _Settings):
    """(row, bootstrap log l* or None) of one data size."""
    row = dict.fromkeys(OPTIMAL_COLUMNS, math.nan)
    row.update(data_size=size, status=Status.NO_DATA, open_below=False, open_above=False, bracketed=False, outside="",
               n_trials=len(data.trials), n_excluded=n_excluded,
               n_seeds=max((len(losses) for losses in data.seed_losses), default=0), n_fit_points=0,
               interval_method="none", estimator="smooth", note="")
    if len(data.lengths) == 0:
        row["note"] = "no usable trials"
        return row, None
    best = int(np.argmin(data.means))
    row.update(best_loss=data.means[best], grid_l_best=data.lengths[best])
    if len(data.lengths) < 3:
        row.update(status=Status.TOO_FEW, note=f"{len(data.lengths)} context length(s): too few to bracket an optimum",
                   outside="" if len(data.lengths) == 1 else ("below" if best == 0 else "above"))
        return row, None
    if best in (0, len(data.lengths) - 1):
        return row, _grid_end(row, data, best, settings)
    return row, _bracketed(row, data, best, settings)


def _grid_end(row: dict, data: _SmoothSize, best: int, settings: _Settings):
    """Fill a row whose grid minimum is at an end: a one-sided answer. A unimodal curve whose grid
    minimum is at an end has its minimum before that end's neighbour, a bound that the bootstrap
    widens where its minimum moves further. Returns the bootstrap log l* (for the increase
    probabilities: how often the minimum leaves this end), or None without noise."""
    below = best == 0
    row.update(outside="below" if below else "above", status=Status.AT_OR_BELOW if below else Status.ABOVE,
               **{"open_below" if below else "open_above": True})
    bound = float(data.lengths[1] if below else data.lengths[-2])
    found = _noise_for(data.seed_losses, *_window(best, len(data.lengths), settings.window), settings)
    boot_x = None
    if found:
        curves = _bootstrap_curves(data.seed_losses, data.means, data.x, settings.window, *found, settings.n_boot,
                                   settings.end_rng)
        boot_x = _vertices(data.x, curves, settings.window)[0]
        bound = (max(bound, math.exp(np.quantile(boot_x, 1 - settings.tail))) if below
                 else min(bound, math.exp(np.quantile(boot_x, settings.tail))))
    row["l_star_high" if below else "l_star_low"] = bound
    return boot_x


def _bracketed(row: dict, data: _SmoothSize, best: int, settings: _Settings):
    """Fill a row whose grid minimum is inside the grid: the window polynomial's vertex and its
    bootstrap interval. Returns the bootstrap log l*, or None without noise (no interval)."""
    first, stop = _window(best, len(data.lengths), settings.window)
    x_star, loss_at, _ = _vertices(data.x, data.means[None, :], settings.window)
    row.update(status=Status.BRACKETED, bracketed=True, l_star=math.exp(x_star[0]), loss_at_l_star=loss_at[0],
               n_fit_points=stop - first)
    found = _noise_for(data.seed_losses, first, stop, settings)
    if found is None:
        row["note"] = "one seed and windows without spare points: no noise estimate, no interval"
        return None
    curves = _bootstrap_curves(data.seed_losses, data.means, data.x, settings.window, *found, settings.n_boot,
                               settings.rng)
    boot_x, _, side = _vertices(data.x, curves, settings.window)
    low, high = np.quantile(boot_x, [settings.tail, 1 - settings.tail])
    row.update(l_star_low=math.exp(low), l_star_high=math.exp(high), interval_method=found[0],
               open_below=bool(low <= data.x[0]), open_above=bool(high >= data.x[-1]),
               boot_unbracketed=float(np.mean(side != 0)))
    return boot_x


def _increase_table(sizes, boots: dict) -> pd.DataFrame:
    """P(l* does not fall) and P(l* rises) per pair of consecutive data sizes with bootstrap l*."""
    increase = [{"data_size": a, "next_data_size": b, "p_not_lower": float(np.mean(boots[b] >= boots[a])),
                 "p_higher": float(np.mean(boots[b] > boots[a]))}
                for a, b in zip(sizes, sizes[1:]) if a in boots and b in boots]
    return pd.DataFrame(increase, columns=["data_size", "next_data_size", "p_not_lower", "p_higher"])


@_validate.fits_one_configuration
def optimal_context_length(trials: pd.DataFrame, n_boot: int = 1000, seed: int = 0, window: int = 5,
                           confidence: float = 0.95) -> OptimumResult:
    """Optimal context length l* for every data size, with a bootstrap interval.

    Which estimator runs: trials that carry the exact Bayes risk (a synthetic sweep's `tasks` or
    `bayes_risk` column) go to `analysis.step_optimum.step_optimum`, whose l* is one of the lengths
    where that risk steps; it returns a `StepOptimum` (its table has the columns below plus
    `learnt` and `top_candidates`, and `.increase`). All other trials (GPT sweeps, measured
    curves) get the smooth estimator described here. Raises ValueError when the trials mix several
    configurations (`config_hash`); the table carries the one `config_hash` when the trials do.

    Parameters
    ----------
    trials : DataFrame
        Columns context_length, data_size, best_val_loss, and optionally seed and status. Only
        status 'ok' rows with a finite loss are used; the others are counted in `n_excluded`.
    n_boot : int, default 1000
        Bootstrap curves per data size.
    seed : int, default 0
        Seed of the bootstrap.
    window : int, default 5
        Grid points (at most) around the grid minimum that the polynomial in log l is fitted to
        (a cubic from five points, else a quadratic).
    confidence : float, default 0.95
        Coverage of the interval.

    Returns
    -------
    OptimalContextLength (or StepOptimum, see above)
        `.table` has one row per data size, columns OPTIMAL_COLUMNS: `l_star` with `l_star_low/high`;
        `bracketed` False when the grid minimum sits at an end of the grid, and then `l_star` is
        NaN and `outside` says 'below' or 'above'; `best_loss` and `grid_l_best` at the grid
        minimum (seed means); `interval_method` 'seeds' (every grid point in the window has
        several seeds: bootstrap of the seed-to-seed deviations), 'residuals' (relative
        residuals of the window fits, pooled over data sizes) or 'none' (no noise estimate: interval NaN);
        `boot_unbracketed` the share of bootstrap curves whose minimum moved to a grid end
        (counted at that end); `estimator` 'smooth'. `summary()` says it line by line.

    Examples
    --------
    >>> grid = [8, 16, 32, 64, 128]
    >>> trials = pd.DataFrame({"context_length": grid * 2, "data_size": 1000,
    ...                        "seed": [0] * 5 + [1] * 5,
    ...                        "best_val_loss": [(np.log(l) - np.log(30)) ** 2 + 1 for l in grid] * 2})
    >>> result = optimal_context_length(trials, n_boot=100)
    >>> row = result.table.iloc[0]
    >>> bool(row.bracketed), round(float(row.l_star), 1)
    (True, 30.0)
    >>> print(result.summary())  # doctest: +ELLIPSIS
    optimal context length per data size (95 % interval; smooth estimator: ...)
      [low, high]: the 95 % interval of l* (...)...
      D =        1,000: l* = 30 [30, 30]  grid best 32, 2 seed(s)
    """
    if window < 3:
        raise ValueError(f"window must be at least 3 grid points, got {window}")
    if is_synthetic(trials):
        return step_optimum(trials, n_boot=n_boot, seed=seed, confidence=confidence)
    ok, excluded = _validate.split_trials(trials)
    sizes = sorted(set(ok["data_size"]) | set(excluded["data_size"]))
    per_size = {size: _smooth_size(ok[ok["data_size"] == size]) for size in sizes}
    settings = _settings(per_size.values(), window, n_boot, seed, (1.0 - confidence) / 2)
    rows, boots = [], {}  # boots: bootstrap log l* per data size, a grid end where the curve's minimum is there
    for size in sizes:
        row, boot_x = _size_row(size, per_size[size], int((excluded["data_size"] == size).sum()), settings)
        rows.append(row)
        if boot_x is not None:
            boots[size] = boot_x
    return OptimalContextLength(pd.DataFrame(rows, columns=OPTIMAL_COLUMNS), confidence, n_boot, window,
                                increase=_increase_table(sizes, boots))
