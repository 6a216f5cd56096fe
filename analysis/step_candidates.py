"""Where a synthetic sweep's optimum can lie: the candidate lengths, and what the data cannot rule out.

The exact Bayes risk R(l) of the synthetic task is a step function, so l* is one of the lengths
where it steps (`Candidates`). A task list gives R at every length. A frame with only a
`bayes_risk` column gives R at the grid's lengths alone: between two of them R may step anywhere,
so every integer length in between is a candidate whose risk is only known to lie between the
risks of the grid lengths on either side (`risk_low`, `risk_high`).

`plausible` marks the candidates that an excess rising with l could make optimal, given the excess
at the grid lengths; the step estimator widens its interval to them where its smooth excess cannot
be trusted, and, where R is only known on the grid, always.
"""
from __future__ import annotations

import json
import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import forms

LN2 = math.log(2.0)


class Candidates(NamedTuple):
    """The lengths l* can take inside the grid's span, and the Bayes risk there.

    `risk_low` / `risk_high` bound R at each length (equal where R is known); `known` marks the
    lengths where R is known exactly (the point estimate picks among them); `trivial` is the loss
    of a model that sees no bit (ln 2 for every task that is not constant); `risk_floor` is the
    lowest R any length reaches (nothing beyond the string can be learnt), below which no longer
    context helps.
    """

    lengths: np.ndarray
    risk_low: np.ndarray
    risk_high: np.ndarray
    known: np.ndarray
    trivial: float
    risk_floor: float


def _task_list(ok: pd.DataFrame):
    """(tasks (T, 2), string length) when the trials carry a task list, else None."""
    if "tasks" not in ok.columns or str(ok["tasks"].iloc[0]) in ("", "None", "nan"):
        return None
    tasks = np.asarray(json.loads(str(ok["tasks"].iloc[0])), dtype=int).reshape(-1, 2)
    length = int(ok["string_length"].iloc[0]) if "string_length" in ok.columns else 100
    return tasks, length


def step_candidates(ok: pd.DataFrame, lowest: float, highest: float) -> Candidates:
    """The candidates in the span [lowest, highest]: with a task list every step of R, from the
    one that gives R(lowest); with only a `bayes_risk` column every integer length, R bounded by
    the grid's."""
    task_list = _task_list(ok)
    if task_list is None:
        return _grid_candidates(ok, lowest, highest)
    tasks, string_length = task_list
    reach = tasks.max(axis=1)
    steps = reach[(reach <= min(highest, string_length)) & (tasks[:, 0] != tasks[:, 1])]
    # the smallest candidate: the step at or below the smallest grid length, which has the same R
    # and an excess no larger (the grid's smallest length itself when R does not step below it)
    first = steps[steps <= lowest].max() if (steps <= lowest).any() else lowest
    lengths = np.unique(np.concatenate([[first], steps[steps > lowest]])).astype(float)
    risk = np.asarray(forms.synthetic_bayes_risk(tasks, lengths, string_length), dtype=float)
    trivial, floor = forms.synthetic_bayes_risk(tasks, np.array([0.0, float(string_length)]), string_length)
    return Candidates(lengths, risk, risk, np.ones(len(lengths), bool), float(trivial), float(floor))


def _grid_candidates(ok: pd.DataFrame, lowest: float, highest: float) -> Candidates:
    """Every integer length of the span; R known at the grid lengths, bounded between them.

    R falls with l, so between grid lengths g_i < c < g_(i+1) it lies in [R(g_(i+1)), R(g_i)].
    """
    table = ok.groupby("context_length")["bayes_risk"].mean()
    grid, grid_risk = table.index.to_numpy(float), table.to_numpy(float)
    lengths = np.union1d(np.arange(math.ceil(lowest), math.floor(highest) + 1, dtype=float), grid)
    at_or_below = np.searchsorted(grid, lengths, side="right") - 1
    at_or_above = np.searchsorted(grid, lengths, side="left")
    # beyond the string no task can be learnt: a grid that reaches it shows the lowest R there is
    string_length = float(ok["string_length"].iloc[0]) if "string_length" in ok.columns else math.inf
    floor = float(grid_risk[-1]) if grid[-1] >= string_length else 0.0
    return Candidates(lengths, grid_risk[at_or_above], grid_risk[at_or_below], np.isin(lengths, grid),
                      LN2, floor)


def plausible(grid_x: np.ndarray, grid_excess: np.ndarray, cand_x: np.ndarray, risk_low: np.ndarray,
              risk_high: np.ndarray) -> np.ndarray:
    """(B, candidates) mask: the candidates that an excess rising with l and convex in log l could
    make optimal, given the excess at the grid lengths (B, n) of one data size.

    Between grid lengths x_i < x_(i+1) such an excess lies below the chord and above both E(x_i)
    and the left segment's line carried on. (The right segment's line is not used: after a
    collapse the excess saturates, which is not convex.) A candidate is plausible when its lowest
    possible loss (R at its lowest, the excess at its lowest) is no higher than the lowest loss
    some candidate surely reaches.
    """
    n = grid_excess.shape[1]
    left = np.clip(np.searchsorted(grid_x, cand_x, side="right") - 1, 0, n - 1)  # grid length at or below
    right = np.minimum(left + 1, n - 1)
    span = np.where(right > left, grid_x[right] - grid_x[left], 1.0)
    position = np.where(right > left, (cand_x - grid_x[left]) / span, 0.0)
    excess_left, excess_right = grid_excess[:, left], grid_excess[:, right]
    upper = excess_left + position * (excess_right - excess_left)
    previous = np.maximum(left - 1, 0)
    run = np.where(left > previous, grid_x[left] - grid_x[previous], 1.0)
    slope = np.where(left > previous, (excess_left - grid_excess[:, previous]) / run, 0.0)
    lower = excess_left + np.maximum(slope, 0.0) * (cand_x - grid_x[left])
    # below the first grid length (the step that gives its R): no more than there, and no less
    # than the first segment's line carried back
    before = cand_x < grid_x[0]
    if before.any() and n > 1:
        first_slope = np.maximum((grid_excess[:, 1] - grid_excess[:, 0]) / (grid_x[1] - grid_x[0]), 0.0)[:, None]
        upper = np.where(before, grid_excess[:, :1], upper)
        lower = np.where(before, grid_excess[:, :1] + first_slope * (cand_x - grid_x[0]), lower)
    lower = np.minimum(lower, np.maximum(upper, excess_left))  # noise can cross the two; keep lower <= upper
    best_upper = (risk_high + upper).min(axis=1, keepdims=True)
    return risk_low + lower <= best_upper + 1e-12


def grid_gap_mask(excess: np.ndarray, candidates: Candidates) -> np.ndarray:
    """(B, candidates) mask where R is known on the grid only: the lengths whose lowest possible
    loss, R at its lowest plus the modelled excess, is no higher than the best grid length's loss.

    The Bayes risk may step anywhere between two grid lengths, so the optimum may lie anywhere
    from just above the grid length before the best one to just below the one after it.
    """
    known_best = np.where(candidates.known, candidates.risk_high + excess, np.inf).min(axis=1, keepdims=True)
    return candidates.risk_low + excess <= known_best + 1e-12


def mask_bounds(mask: np.ndarray, lengths: np.ndarray, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest and largest plausible length of each row of `mask`, never excluding `point`."""
    some = mask.any(axis=1)
    first = np.where(some, mask.argmax(axis=1), 0)
    last = np.where(some, len(lengths) - 1 - mask[:, ::-1].argmax(axis=1), 0)
    low = np.where(some, np.minimum(lengths[first], point), point)
    high = np.where(some, np.maximum(lengths[last], point), point)
    return low, high
