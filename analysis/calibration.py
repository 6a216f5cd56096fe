"""Simulated sweeps with a known optimum, to check that the l* intervals cover what they claim.

Each family writes trials as a sweep would (one row per context length × data size × seed) from a
known loss curve, so the true l*(D) is known exactly:

- step families (synthetic sweeps): the study's exact Bayes risk + an excess E(l, D) rising with l.
  'own' is the step estimator's own form, exp(quadratic in log l + log D terms), drawn so that
  the loss stays below ln 2 wherever the context offers something to learn (where it offers
  nothing the loss is ln 2 in every family); 'power' adds a
  constant floor, which that form lacks; 'logistic' rises as a sigmoid in l whose centre grows
  with D; 'collapse' is a power law until a length l_c(D) from which the model learns nothing
  (loss back to ln 2), as small data sizes do in real sweeps.
- 'smooth' (GPT-like): c0 + c·l^-γ + a·l^κ·D^-α, a continuous U in l.
- `simulate_gpu_like_sweep`: a step family with the seed noise and the chance failures of the
  study's GPU runs, for the adaptive search's tests and `bench/search_offline.py`.

`coverage` runs an estimator over many draws and tabulates coverage, interval width and how
often the point estimate is exact. `bench/calibrate_optimum.py` prints that table; the tests run
a small version of it.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from . import forms

STEP_FAMILIES = ("own", "power", "logistic", "collapse")
LN2 = math.log(2.0)


def study_tasks() -> list[list[int]]:
    """The study's 50 [l, a] tasks (the list ctxscale ships as 'study50')."""
    from importlib import resources

    return json.loads(resources.files("ctxscale.data").joinpath("tasks_study50.json").read_text())


def _excess(family: str, lengths: np.ndarray, size: float, p: dict, risk: np.ndarray) -> np.ndarray:
    # a trained model does no worse than a coin: the loss is capped at ln 2
    return np.minimum(_raw_excess(family, lengths, size, p, risk), np.maximum(LN2 - risk, 0.0))


def _raw_excess(family: str, lengths: np.ndarray, size: float, p: dict, risk: np.ndarray) -> np.ndarray:
    x, y = np.log(lengths / 40.0), np.log(size / 1e5)
    if family == "own":
        theta = np.array([p["a"], p["kappa"], p["curv"], -p["alpha"], p["cross"]])
        return forms.smooth_excess(forms.excess_design(x, y), theta)
    if family == "power":
        return p["floor"] + np.exp(p["a"] + p["kappa"] * x - p["alpha"] * y)
    if family == "logistic":
        centre = p["centre"] * (size / 1e5) ** p["shift"]
        return p["height"] / (1.0 + np.exp(-(lengths - centre) / p["width"]))
    if family == "collapse":
        smooth = np.exp(p["a"] + p["kappa"] * x - p["alpha"] * y)
        cliff = p["cliff"] * (size / 1e5) ** p["shift"]
        return np.where(lengths >= cliff, np.maximum(LN2 - risk, smooth), smooth)
    raise ValueError(f"unknown step family {family!r}; known: {STEP_FAMILIES}")


def _draw_params(family: str, rng: np.random.Generator) -> dict:
    p = {"kappa": rng.uniform(3.0, 6.0), "alpha": rng.uniform(0.4, 1.0), "a": math.log(rng.uniform(0.02, 0.06))}
    if family == "own":
        p.update(kappa=rng.uniform(2.0, 4.0), a=math.log(rng.uniform(0.01, 0.04)), curv=rng.uniform(0.0, 1.0),
                 cross=rng.uniform(-0.3, 0.3))
    elif family == "power":
        p.update(floor=rng.uniform(0.002, 0.01))
    elif family == "logistic":
        p = {"height": rng.uniform(0.1, 0.4), "centre": rng.uniform(45, 70), "width": rng.uniform(3, 8),
             "shift": rng.uniform(0.1, 0.3)}
    elif family == "collapse":
        p.update(cliff=rng.uniform(40, 70), shift=rng.uniform(0.1, 0.3))
    return p


def _draw_family(family: str, lengths: np.ndarray, sizes, risk: np.ndarray, rng: np.random.Generator) -> dict:
    """Parameters of `family`; 'own' is redrawn until it is the estimator's form over `lengths`
    (the ln 2 cap never binds where the context offers something to learn)."""
    learnable = LN2 - risk
    for _ in range(10_000):
        p = _draw_params(family, rng)
        capped = any(((_raw_excess(family, lengths, s, p, risk) > learnable) & (learnable > 0)).any() for s in sizes)
        if family != "own" or not capped:
            return p
    return p


def simulate_step_sweep(family: str, grid, sizes, n_seeds: int, noise: float, rng: np.random.Generator,
                        tasks=None, string_length: int = 100, *, risk_only: bool = False, truth_span=None,
                        dead_sizes=()):
    """(trials, truth): a simulated synthetic sweep and its true l* per data size.

    Every seed's loss is the true loss × (1 + noise · N(0, 1)). The truth is the argmin over all
    integer lengths in `truth_span` (default: the grid's span; the smallest on ties). With
    `risk_only` the trials carry a `bayes_risk` column instead of the task list (a user's own
    frame). Each of `dead_sizes` learnt nothing: its loss is that of a model that sees no bit at
    every length. The truth is NaN wherever the noise-free loss is that at every grid length:
    whatever could be learnt elsewhere, the sweep shows nothing learnt.
    """
    tasks = study_tasks() if tasks is None else tasks
    grid = np.asarray(grid, float)
    lowest, highest = truth_span if truth_span is not None else (grid.min(), grid.max())
    every = np.arange(int(lowest), int(highest) + 1, dtype=float)
    risk_every = forms.synthetic_bayes_risk(tasks, every, string_length)
    p = _draw_family(family, every, sizes, risk_every, rng)
    risk_grid = forms.synthetic_bayes_risk(tasks, grid, string_length)
    trivial = float(forms.synthetic_bayes_risk(tasks, 0, string_length))
    rows, truth = [], {}
    for size in sorted([*sizes, *dead_sizes]):
        if size in dead_sizes:
            truth[float(size)], loss = math.nan, np.full(len(grid), trivial)
        else:
            total = risk_every + _excess(family, every, size, p, risk_every)
            truth[float(size)] = float(every[int(np.argmin(total))])
            loss = risk_grid + _excess(family, grid, size, p, risk_grid)
            if np.all(loss >= trivial - 1e-9):  # learnt nothing at any length of the grid
                truth[float(size)] = math.nan
        for s in range(n_seeds):
            noisy = loss * (1.0 + noise * rng.standard_normal(len(grid)))
            rows += [{"context_length": int(l), "data_size": int(size), "seed": s, "best_val_loss": v,
                      "status": "ok", "tasks": json.dumps(tasks), "string_length": string_length}
                     for l, v in zip(grid, noisy)]
    trials = pd.DataFrame(rows)
    if risk_only:
        risk = forms.synthetic_bayes_risk(tasks, trials["context_length"].to_numpy(float), string_length)
        trials = trials.drop(columns=["tasks", "string_length"]).assign(bayes_risk=risk)
    return trials, truth


def simulate_gpu_like_sweep(family: str, lengths, sizes, rng: np.random.Generator, noise: float = 0.03,
                            chaos: float = 0.3):
    """(trials, truth): a simulated study grid with the noise of the study's GPU runs (one H100,
    synthetic-paper, 3 seeds): a seed's loss is the true loss x (1 + 3 % N(0, 1)) where the model
    learns (the RMS seed spread of those runs' learnt cells), ln 2 within 0.02 % where it learns
    nothing, and past l* within a quarter of the length where training collapses, a seed stays at
    ln 2 with probability `chaos` (those runs: 1 or 2 of 3 seeds there)."""
    exact, truth = simulate_step_sweep(family, lengths, sizes, 3, 0.0, rng)
    dead = exact["best_val_loss"] >= math.log(2) - 1e-3
    first_dead = exact["data_size"].map(exact[dead].groupby("data_size")["context_length"].min()).fillna(np.inf)
    past = exact["context_length"] > exact["data_size"].map(lambda size: truth[float(size)])
    fails = ~dead & past & (exact["context_length"] * 1.25 >= first_dead) & (rng.random(len(exact)) < chaos)
    learnt = exact["best_val_loss"] * (1 + noise * rng.standard_normal(len(exact)))
    flat = math.log(2) * (1 + 0.0002 * rng.standard_normal(len(exact)))
    return exact.assign(best_val_loss=np.where(dead | fails, flat, learnt)), truth


def simulate_smooth_sweep(grid, sizes, n_seeds: int, noise: float, rng: np.random.Generator):
    """(trials, truth) from a continuous U-curve c0 + c·l^-γ + a·l^κ·D^-α (no Bayes-risk column)."""
    c0, c, gamma = 1.5, rng.uniform(2, 4), rng.uniform(0.4, 0.8)
    kappa, alpha = rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.4)
    grid = np.asarray(grid, float)
    # a sets the optimum of the middle size near the grid's geometric centre
    centre = math.exp(np.log(grid).mean())
    mid = float(np.median(sizes))
    a = gamma * c * centre ** (-gamma - kappa) * mid**alpha / kappa
    rows, truth = [], {}
    for size in sizes:
        truth[float(size)] = float(forms.surface_optimum_b0(size, c, gamma, a, kappa, alpha))
        loss = forms.loss_surface(grid, size, c0, c, gamma, a, kappa, alpha, 0.0)
        for s in range(n_seeds):
            noisy = loss * (1.0 + noise * rng.standard_normal(len(grid)))
            rows += [{"context_length": int(l), "data_size": size, "seed": s, "best_val_loss": v, "status": "ok"}
                     for l, v in zip(grid, noisy)]
    return pd.DataFrame(rows), truth


def _covers(row, true: float) -> bool:
    """Whether a row's answer holds the truth: its interval, its one-sided bound, or 'not learnt'
    exactly where nothing was learnt (true NaN)."""
    status = row.get("status", "bracketed" if row["bracketed"] else {"below": "at_or_below"}.get(row["outside"], "above"))
    if not np.isfinite(true) or status == "not_learnt":
        return (not np.isfinite(true)) and status == "not_learnt"
    low, high = row["l_star_low"] - 1e-9, row["l_star_high"] + 1e-9
    # a bound at the end of the span the estimator searched says only that l* may lie beyond it
    low = -math.inf if row.get("open_below", False) else low
    high = math.inf if row.get("open_above", False) else high
    if status == "at_or_below":
        return true <= high
    if status in ("saturated", "above"):
        return true >= low
    return low <= true <= high


def coverage(estimate, family: str, grid, sizes, n_seeds: int, noise: float, reps: int, seed: int = 0,
             n_boot: int = 300, **sweep) -> dict:
    """Coverage of `estimate(trials, n_boot, seed) -> table` over `reps` simulated sweeps.

    Counts the data sizes the estimator answered: an interval or bound, or 'not learnt' (which
    covers only where nothing was learnt); `placed` says how many of all it answered. A
    one-sided answer covers when the truth lies on its side of the bound. Width is in
    context-length units; `exact` is the share of point estimates equal to the truth (step
    families); `statuses` counts the answers. `sweep` goes to `simulate_step_sweep`.
    """
    rng = np.random.default_rng(seed)
    hits, widths, exact, statuses, placed, total = [], [], [], {}, 0, 0
    for rep in range(reps):
        if family == "smooth":
            trials, truth = simulate_smooth_sweep(grid, sizes, n_seeds, noise, rng)
        else:
            trials, truth = simulate_step_sweep(family, grid, sizes, n_seeds, noise, rng, **sweep)
        table = estimate(trials, n_boot, rep)
        for _, r in table.iterrows():
            total += 1
            true = truth[float(r["data_size"])]
            status = r.get("status", "")
            statuses[status] = statuses.get(status, 0) + 1
            low, high = r["l_star_low"], r["l_star_high"]
            if status != "not_learnt" and not (np.isfinite(low) and np.isfinite(high)):
                continue
            placed += 1
            hits.append(_covers(r, true))
            if status == "not_learnt" or not np.isfinite(true):
                continue
            widths.append(high - low)
            point = r["l_star"] if np.isfinite(r["l_star"]) else (low if r.get("outside") == "below" else high)
            exact.append(abs(point - true) < 0.5)
    return {"family": family, "seeds": n_seeds, "noise": noise, "cases": total, "placed": placed,
            "coverage": float(np.mean(hits)) if hits else math.nan,
            "median_width": float(np.median(widths)) if widths else math.nan,
            "exact": float(np.mean(exact)) if exact else math.nan,
            "statuses": ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()) if k)}
