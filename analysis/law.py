"""The law l*(D) = k · D^β, fitted to the bracketed optima and checked against the one-sided ones.

A data size whose optimum is bracketed gives a point with an interval; one whose optimum is at or
below the smallest length tried gives an upper bound, and one that is saturated (synthetic: the
string length caps it) or above the largest length a lower bound. The line is fitted to the
points; each bound is then checked against the line's prediction at its data size, so a law that
contradicts what the sweep showed says so.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import _validate, stats
from .answers import Status, row_status
from .results import OptimalLawFit, OptimumResult, failed_law


def _bound_checks(table: pd.DataFrame) -> list[dict]:
    """One entry per one-sided answer: data size, status, side ('<=' or '>=') and bound."""
    checks = []
    for _, row in table.iterrows():
        status = row_status(row)
        if status in Status.UPPER_BOUND:
            side, bound = "<=", row.get("l_star_high", math.nan)
        elif status in Status.LOWER_BOUND:
            side, bound = ">=", row.get("l_star_low", math.nan)
        else:
            continue
        checks.append({"data_size": float(row["data_size"]), "status": status, "side": side,
                       "bound": float(bound) if np.isfinite(bound) else math.nan})
    return checks


def _judge(checks: list[dict], law: OptimalLawFit) -> tuple:
    """The checks with the law's prediction, its band, and whether the band reaches each bound
    (None: no verdict). A band that reaches the bound respects it: the law and the answer agree
    within the law's own uncertainty."""
    judged = []
    z = stats.z_quantile(law.confidence)
    for check in checks:
        predicted = low = high = math.nan
        if law.success:
            predicted = float(law.predict(check["data_size"]))
            low, high = (float(v[0]) for v in law.band([check["data_size"]], z))
        verdict = None
        if np.isfinite(predicted) and np.isfinite(check["bound"]):
            verdict = bool(low <= check["bound"] if check["side"] == "<=" else high >= check["bound"])
        judged.append({**check, "predicted": predicted, "predicted_low": low, "predicted_high": high,
                       "respected": verdict})
    return tuple(judged)


def _bracketed(table: pd.DataFrame) -> pd.DataFrame:
    if "status" in table.columns:
        table = table[table["status"].astype(str) == Status.BRACKETED]
    elif "bracketed" in table.columns:
        table = table[table["bracketed"].astype(bool)]
    return table[np.isfinite(table["l_star"].astype(float)) & (table["l_star"].astype(float) > 0)]


@_validate.fits_one_configuration
def fit_optimal_context_law(optimal, n_boot: int = 2000, seed: int = 0,
                            confidence: float = 0.95) -> OptimalLawFit:
    """Fit l* = k · D^β in log-log to the bracketed optima, with a bootstrap interval, and check
    the one-sided answers against it.

    Each bootstrap fit redraws every l* from its own interval (normal in log l*, the interval's
    half-width in log taken as z·σ) and, with four or more points, also resamples the points,
    so the interval carries both the per-point uncertainty and the scatter about the line.

    Parameters
    ----------
    optimal : OptimalContextLength, StepOptimum or DataFrame
        What `optimal_context_length` returned, or its table. Rows whose `status` is 'bracketed'
        (tables without that column: `bracketed` True) with an l_star are fitted; 'at_or_below',
        'saturated' and 'above' rows are checked (`.checks`); the others are skipped.
    n_boot : int, default 2000
        Bootstrap fits.
    seed : int, default 0
        Seed of the bootstrap.
    confidence : float, default 0.95
        Coverage of the intervals.

    Returns
    -------
    OptimalLawFit
        success False with a message when fewer than two bracketed optima are available.
        `.checks` has, per one-sided answer, its bound, the law's prediction and whether the
        prediction respects the bound; `summary()` lists every point and its role.

    Examples
    --------
    >>> opt = pd.DataFrame({"data_size": [1e4, 1e5, 1e6, 1e7], "l_star": [10.0, 20.0, 40.0, np.nan],
    ...                     "l_star_low": [9.0, 18.0, 36.0, 70.0], "l_star_high": [11.0, 22.0, 44.0, np.nan],
    ...                     "status": ["bracketed"] * 3 + ["saturated"]})
    >>> law = fit_optimal_context_law(opt)
    >>> round(law.exponent, 3), law.checks[0]["respected"]
    (0.301, True)
    """
    table = optimal.table if isinstance(optimal, OptimumResult) else optimal
    missing = [c for c in ("data_size", "l_star") if c not in table.columns]
    if missing:
        raise ValueError(f"optimal table lacks column(s) {missing}")
    law = _fit_line(_bracketed(table), n_boot, seed, confidence)
    checks = _judge(_bound_checks(table), law)
    broken = sum(check["respected"] is False for check in checks)
    if broken:
        law = law.replace(message="; ".join(filter(None, [law.message, f"the law contradicts {broken} one-sided "
                                                          "answer(s) of the sweep (see the points)"])))
    return law.replace(checks=checks)


def _fit_line(use: pd.DataFrame, n_boot: int, seed: int, confidence: float) -> OptimalLawFit:
    """The bootstrap line fit of log l* on log D."""
    sizes = use["data_size"].to_numpy(float)
    l_star = use["l_star"].to_numpy(float)
    n = len(use)
    if n < 2 or len(np.unique(sizes)) < 2:
        return failed_law(f"needs at least 2 bracketed optima at different data sizes, got {n}", n, sizes, l_star,
                          confidence)
    z = stats.z_quantile(confidence)
    sigma = np.zeros(n)  # each log l*'s own uncertainty, from its interval
    if {"l_star_low", "l_star_high"} <= set(use.columns):
        width = np.log(use["l_star_high"].to_numpy(float)) - np.log(use["l_star_low"].to_numpy(float))
        sigma = np.where(np.isfinite(width), width / (2 * z), 0.0)
    log_size, log_l = np.log(sizes), np.log(l_star)
    line = stats.least_squares(stats.line_design(log_size), log_l)
    intercept, slope = (float(v) for v in line.coef)

    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, (n_boot, n)) if n >= 4 else np.tile(np.arange(n), (n_boot, 1))
    jitter = sigma[picks] * rng.standard_normal((n_boot, n))
    boot = stats.least_squares(stats.line_design(log_size[picks]), log_l[picks] + jitter)
    good = boot.rank == 2  # a resample with one distinct D has no slope
    boot_intercept, boot_slope = boot.coef[good].T
    tail = (1.0 - confidence) / 2
    slope_low, slope_high = np.quantile(boot_slope, [tail, 1 - tail])
    coefficient_low, coefficient_high = np.exp(np.quantile(boot_intercept, [tail, 1 - tail]))
    cov = np.cov(np.vstack([boot_intercept, boot_slope]))
    notes = []
    if n < 4:
        notes.append(f"{n} points: interval from the per-point uncertainty only (too few to resample points)")
    if not sigma.any():
        notes.append("the optima carry no intervals: the law's interval ignores their uncertainty")
    return OptimalLawFit(
        coefficient=math.exp(intercept), exponent=slope, exponent_low=float(slope_low),
        exponent_high=float(slope_high), coefficient_low=float(coefficient_low),
        coefficient_high=float(coefficient_high), exponent_se=float(line.se[1]), r2=stats.r_squared(log_l, line.sse),
        n=n, success=True, message="; ".join(notes), confidence=confidence, n_boot=int(good.sum()),
        data_size=tuple(sizes.tolist()), l_star=tuple(l_star.tolist()),
        cov_log=(float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])),
    )
