"""The history table (one row per evaluation of a trial) read trial by trial: where each trial sits
on the grid, where its best evaluation was, which trials look stopped on a plateau, and which ran
into their step or epoch cap.

Early stopping ends a trial once its validation loss has not improved for `patience`
evaluations. A language model often sits on a plateau and then falls again, so a trial stopped
on one reports a loss its length would have beaten with more steps, and that loss then decides
l*. `plateau_stops` finds the trials that show it: their best evaluation came far earlier than a
neighbour's at the same data size, they stopped before that neighbour found its best, and their
loss is worse.
"""
from __future__ import annotations

import pandas as pd

from .present import data_size, number

COORDINATES = ["context_length", "data_size", "seed"]


def progress_column(history: pd.DataFrame) -> str:
    """'step' where the history counts optimiser steps (GPT), else 'epoch' (synthetic, parity)."""
    return "step" if "step" in history and history["step"].notna().any() else "epoch"


def with_coordinates(history: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """`history` with context_length, data_size and seed on every row: from the history itself where
    it carries them, else from the trial's row in `trials`, else from the trial id (a history read
    while the sweep runs has rows of trials whose trials row is not stored yet). Rows that none of
    them places are dropped."""
    from ctxscale.identity import coordinates_of  # the one parser of trial ids

    if set(COORDINATES) <= set(history.columns) and history[COORDINATES].notna().all().all():
        return history
    known = trials.drop_duplicates("trial_id").set_index("trial_id") if "trial_id" in trials else pd.DataFrame()
    placed = {}
    for trial_id in history["trial_id"].unique():
        if trial_id in known.index and set(COORDINATES) <= set(known.columns):
            placed[trial_id] = known.loc[trial_id, COORDINATES].to_dict()
        else:
            placed[trial_id] = coordinates_of(trial_id) or {}
    coordinates = pd.DataFrame.from_dict(placed, orient="index").reindex(columns=COORDINATES)
    return history.drop(columns=[c for c in COORDINATES if c in history]).join(
        coordinates, on="trial_id").dropna(subset=COORDINATES)


def best_evaluations(history: pd.DataFrame, metric: str = "val_loss") -> pd.DataFrame:
    """One row per trial: its coordinates, the step (or epoch) and value of its lowest `metric`
    (`best_at`, `best`), and its last evaluation (`last_at`, `last`); `history` must carry the coordinates
    (`with_coordinates`). Also `bayes_risk` where the history has it."""
    at = progress_column(history)
    rows = history.dropna(subset=[metric, at])
    best = rows.loc[rows.groupby("trial_id")[metric].idxmin()].set_index("trial_id")
    last = rows.loc[rows.groupby("trial_id")[at].idxmax()].set_index("trial_id")
    table = best[COORDINATES].assign(best_at=best[at], best=best[metric], last_at=last[at], last=last[metric])
    if "bayes_risk" in rows:  # a trial's Bayes risk may sit on one of its rows only
        table["bayes_risk"] = rows.groupby("trial_id")["bayes_risk"].first()
    return table.reset_index()


def plateau_stops(history: pd.DataFrame, metric: str = "val_loss", far: float = 1.5,
                  bayes_margin: float = 0.01, flat: float = 0.02) -> pd.DataFrame:
    """The trials that look stopped on a plateau, one row each, with the neighbour that shows it.

    A trial is listed when a neighbour at the same data size (the same or the next context length
    of the grid, any seed) found its best evaluation at least `far` times later, after the trial
    had already stopped, with a lower `metric`, and the trial ended flat: its last evaluation within
    `flat` (relative) of its best. One whose loss had turned up was overfitting, which early
    stopping is for. A trial within `bayes_margin` of its Bayes risk (where the history carries
    `bayes_risk`) had nothing left to learn and is never listed.

    Parameters
    ----------
    history : DataFrame
        trial_id, step (or epoch), `metric`, context_length, data_size and seed (see
        `with_coordinates`); optionally bayes_risk.

    Returns
    -------
    DataFrame
        trial_id, context_length, data_size, seed, best_at, best, last_at (the trial's best and
        last evaluation), and neighbour, neighbour_length, neighbour_best_at, neighbour_best.

    Examples
    --------
    >>> history = pd.DataFrame({
    ...     "trial_id": ["a"] * 3 + ["b"] * 4, "context_length": [512] * 3 + [1024] * 4,
    ...     "data_size": 5_000_000, "seed": 0, "step": [1000, 1600, 2000, 1000, 2000, 2750, 3000],
    ...     "val_loss": [4.2, 3.93, 3.95, 4.05, 3.9, 3.49, 3.5]})
    >>> plateau_stops(history)[["trial_id", "best_at", "last_at", "neighbour", "neighbour_best_at"]]
      trial_id  best_at  last_at neighbour  neighbour_best_at
    0        a     1600     2000         b               2750
    """
    best = best_evaluations(history, metric)
    best["rank"] = best.groupby("data_size")["context_length"].rank(method="dense")
    pairs = best.merge(best, on="data_size", suffixes=("", "_n"))
    pairs = pairs[(pairs["trial_id"] != pairs["trial_id_n"]) & ((pairs["rank"] - pairs["rank_n"]).abs() <= 1)
                  & (pairs["best_at_n"] >= far * pairs["best_at"]) & (pairs["last_at"] < pairs["best_at_n"])
                  & (pairs["best_n"] < pairs["best"]) & (pairs["last"] - pairs["best"] <= flat * pairs["best"].abs())]
    if "bayes_risk" in pairs:  # NaN risk (not known): the trial stays a candidate
        pairs = pairs[~(pairs["best"] - pairs["bayes_risk"] < bayes_margin)]
    pairs = pairs.sort_values("best_n").drop_duplicates("trial_id")  # the clearest neighbour of each
    pairs = pairs.rename(columns={"trial_id_n": "neighbour", "context_length_n": "neighbour_length",
                                  "best_at_n": "neighbour_best_at", "best_n": "neighbour_best"})
    columns = COORDINATES + ["best_at", "best", "last_at", "neighbour", "neighbour_length", "neighbour_best_at",
                             "neighbour_best"]
    return pairs.sort_values(["data_size", "context_length", "seed"])[["trial_id"] + columns].reset_index(drop=True)


CAPS = {"step": "config.training.max_steps", "epoch": "config.training.max_epochs"}


def cap_name(unit: str) -> str:
    """The spec key of a progress unit's cap: 'max_steps' for 'step', 'max_epochs' for 'epoch'."""
    return CAPS[unit].rsplit(".", 1)[-1]


def cap_stops(history: pd.DataFrame, trials: pd.DataFrame, metric: str = "val_loss") -> pd.DataFrame:
    """The trials that ran into their step (or epoch) cap before early stopping ended them, one row
    each: their patience had not run out, so more training may lower their loss.

    `history` carries the coordinates (`with_coordinates`); `trials` the flat spec columns
    (`config.training.max_steps` or `max_epochs`). Returns trial_id, the coordinates, best_at,
    best, last_at and cap (empty where the trials carry no cap).

    Examples
    --------
    >>> history = pd.DataFrame({"trial_id": ["a"] * 3 + ["b"] * 3, "context_length": [1024] * 3 + [4096] * 3,
    ...     "data_size": 5_000_000, "seed": 0, "step": [3000, 3500, 4000] * 2,
    ...     "val_loss": [3.6, 3.55, 3.56, 3.5, 3.42, 3.38]})
    >>> trials = pd.DataFrame({"trial_id": ["a", "b"], "config.training.max_steps": [4000, 4000]})
    >>> cap_stops(history, trials)[["trial_id", "best_at", "last_at", "cap"]]
      trial_id  best_at  last_at  cap
    0        a     3500     4000  4000
    1        b     4000     4000  4000
    """
    key = CAPS[progress_column(history)]
    columns = ["trial_id"] + COORDINATES + ["best_at", "best", "last_at", "cap"]
    if key not in trials or "trial_id" not in trials:
        return pd.DataFrame(columns=columns)
    best = best_evaluations(history, metric)
    best["cap"] = best["trial_id"].map(trials.drop_duplicates("trial_id").set_index("trial_id")[key])
    capped = best[best["last_at"] >= best["cap"]]
    return capped.sort_values(["data_size", "context_length", "seed"])[columns].reset_index(drop=True)


def cap_lines(capped: pd.DataFrame, unit: str = "step") -> list[str]:
    """`cap_stops`' rows as the lines `analyze` prints, one per trial, under a heading."""
    if capped.empty:
        return []
    lines = [f"ran into the cap: {len(capped)} trial(s) reached training.{cap_name(unit)} before early stopping ended them "
             "(more training may lower their loss):"]
    for _, r in capped.iterrows():
        lines.append(f"  {r['trial_id']}: best {number(r['best'])} at {unit} {r['best_at']:,.0f} of "
                     f"{r['cap']:,.0f}")
    return lines


def plateau_lines(stops: pd.DataFrame, unit: str = "step") -> list[str]:
    """`plateau_stops`' rows as the lines `analyze` prints, one per trial, under a heading."""
    if stops.empty:
        return []
    lines = [f"stopped on a plateau? {len(stops)} trial(s) whose best {unit} is far earlier than a neighbour's at "
             "the same D while their loss is worse (more training may lower it; see learning_curves.png):"]
    for _, r in stops.iterrows():
        lines.append(f"  {r['trial_id']}: best {number(r['best'])} at {unit} {r['best_at']:,.0f}, stopped at "
                     f"{r['last_at']:,.0f}; l = {r['neighbour_length']:,.0f} at D = {data_size(r['data_size'])} "
                     f"reached {number(r['neighbour_best'])} at {unit} {r['neighbour_best_at']:,.0f}")
    return lines
