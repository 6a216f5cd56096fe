"""What a row of an l* table answers: its status, and the words the summaries print for it.

Both estimators of l* per data size (`analysis.optimum`, `analysis.step_optimum`) write one row
per data size; its `status` says which answer the row gives. `optimum_text` writes that answer
the way `OptimumResult.summary()` prints it.
"""
from __future__ import annotations

import numpy as np

from .present import number


class Status:
    """What a data size's row answers: the `status` column of both estimators' tables."""

    BRACKETED = "bracketed"  # l* inside the lengths tried, with a two-sided interval
    AT_OR_BELOW = "at_or_below"  # l* at the smallest length: an upper bound
    SATURATED = "saturated"  # l* at the last length where a synthetic task can enter: a lower bound
    ABOVE = "above"  # l* at the largest length: a lower bound
    NOT_LEARNT = "not_learnt"  # within noise of a model that learnt nothing, at every length
    TOO_FEW = "too_few"  # fewer than three context lengths
    NO_DATA = "no_data"  # no usable trial
    UPPER_BOUND = (AT_OR_BELOW,)  # one-sided answers: l* <= l_star_high
    LOWER_BOUND = (SATURATED, ABOVE)  # l* >= l_star_low


def row_status(r) -> str:
    """A row's status; tables written before the column existed are read from bracketed / outside."""
    status = r.get("status") if hasattr(r, "get") else None
    if isinstance(status, str) and status:
        return status
    if r.get("n_trials", 1) == 0:
        return Status.NO_DATA
    if not r.get("learnt", True):
        return Status.NOT_LEARNT
    if r.get("bracketed"):
        return Status.BRACKETED
    return {"below": Status.AT_OR_BELOW, "above": Status.ABOVE}.get(r.get("outside"), Status.TOO_FEW)


def _bound(value: float, open_end: bool, side: str) -> str:
    """One end of an interval; 'or below' / 'or above' where it is an end of the lengths searched."""
    return number(value) + (f" or {side}" if open_end else "")


def _edge_text(r, bound: float, side: str) -> str:
    """A one-sided answer: the bound, then the estimate at an end of the lengths searched. The
    estimate is the step estimator's end candidate (the row's other end), else the grid's best
    length; the bound is the interval's, which may lie well inside the lengths a data size tried."""
    other = r["l_star_low" if side == "below" else "l_star_high"]
    edge = other if np.isfinite(other) else r["grid_l_best"]
    words = f"l* {'<=' if side == 'below' else '>='} {number(bound)}: " if np.isfinite(bound) else ""
    end = "shortest" if side == "below" else "longest"
    return words + f"its estimate, {number(edge)}, is the {end} length searched; l* may lie {side}"


def answer_text(r) -> str:
    """What a row answers, in words: l* with its interval, a one-sided bound, or '' where there is
    none (the row's note says why)."""
    status = row_status(r)
    low, high = r["l_star_low"], r["l_star_high"]
    if status == Status.BRACKETED:
        if not np.isfinite(low):
            return f"l* = {number(r['l_star'])} (no interval)"
        return (f"l* = {number(r['l_star'])} [{_bound(low, bool(r.get('open_below', False)), 'below')}, "
                f"{_bound(high, bool(r.get('open_above', False)), 'above')}]")
    if status == Status.AT_OR_BELOW:
        return _edge_text(r, high, "below")
    if status == Status.ABOVE:
        return _edge_text(r, low, "above")
    if status == Status.SATURATED:
        bound = number(low) if np.isfinite(low) else number(r["l_star"])
        return f"l* = {number(r['l_star'])}, saturated: no task enters a longer context, so a lower bound (l* >= {bound})"
    return ""


def optimum_text(r) -> str:
    """One row of either estimator's table as text: the answer its status gives, then the details."""
    excluded = f"  [{r['n_excluded']} excluded]" if r["n_excluded"] else ""
    answer = answer_text(r)
    if not answer:
        return r["note"] + excluded  # the note says why there is no answer
    text = f"{answer}  grid best {number(r['grid_l_best'])}, {r['n_seeds']} seed(s)"
    top = r.get("top_candidates")  # the step estimator's bootstrap shares
    if isinstance(top, str) and top:
        text += f"; bootstrap l* {top}"
    return text + (f"  ({r['note']})" if r["note"] else "") + excluded
