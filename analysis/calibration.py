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


def simulate_step_sweep(family: str, grid, sizes, n_seeds: int, noise: float, rng: np.random.Generator,
                        tasks=None, string_length: int = 100):
    """(trials, truth): a simulated synthetic sweep and its true l* per data size.

    Every seed's loss is the true loss × (1 + noise · N(0, 1)). The truth is the argmin over all
    integer lengths in the grid's span (the smallest on ties).
    """
    tasks = study_tasks() if tasks is None else tasks
    grid = np.asarray(grid, float)
    every = np.arange(int(grid.min()), int(grid.max()) + 1, dtype=float)
    risk_every = forms.synthetic_bayes_risk(tasks, every, string_length)
    for _ in range(10_000):
        p = _draw_params(family, rng)
        # 'own' must be the estimator's form over the whole span: redraw where the ln 2 cap binds
        learnable = LN2 - risk_every
        capped = any(((_raw_excess(family, every, s, p, risk_every) > learnable) & (learnable > 0)).any() for s in sizes)
        if family != "own" or not capped:
            break
    risk_grid = forms.synthetic_bayes_risk(tasks, grid, string_length)
    rows, truth = [], {}
    for size in sizes:
        total = risk_every + _excess(family, every, size, p, risk_every)
        truth[float(size)] = float(every[int(np.argmin(total))])
        loss = risk_grid + _excess(family, grid, size, p, risk_grid)
        for s in range(n_seeds):
            noisy = loss * (1.0 + noise * rng.standard_normal(len(grid)))
            rows += [{"context_length": int(l), "data_size": int(size), "seed": s, "best_val_loss": v,
                      "status": "ok", "tasks": json.dumps(tasks), "string_length": string_length}
                     for l, v in zip(grid, noisy)]
    return pd.DataFrame(rows), truth


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


def coverage(estimate, family: str, grid, sizes, n_seeds: int, noise: float, reps: int, seed: int = 0,
             n_boot: int = 300) -> dict:
    """Coverage of `estimate(trials, n_boot, seed) -> table` over `reps` simulated sweeps.

    Counts only data sizes the estimator placed an interval for; `placed` says how many of all
    it did. Width is in context-length units; `exact` is the share of point estimates equal to
    the truth (step families).
    """
    rng = np.random.default_rng(seed)
    hits, widths, exact, placed, total = [], [], [], 0, 0
    for rep in range(reps):
        if family == "smooth":
            trials, truth = simulate_smooth_sweep(grid, sizes, n_seeds, noise, rng)
        else:
            trials, truth = simulate_step_sweep(family, grid, sizes, n_seeds, noise, rng)
        table = estimate(trials, n_boot, rep)
        for _, r in table.iterrows():
            total += 1
            true = truth[float(r["data_size"])]
            low, high = r["l_star_low"], r["l_star_high"]
            if not (np.isfinite(low) and np.isfinite(high)):
                continue
            placed += 1
            hits.append(low - 1e-9 <= true <= high + 1e-9)
            widths.append(high - low)
            point = r["l_star"] if np.isfinite(r["l_star"]) else (low if r.get("outside") == "below" else high)
            exact.append(abs(point - true) < 0.5)
    return {"family": family, "seeds": n_seeds, "noise": noise, "cases": total, "placed": placed,
            "coverage": float(np.mean(hits)) if hits else math.nan,
            "median_width": float(np.median(widths)) if widths else math.nan,
            "exact": float(np.mean(exact)) if exact else math.nan}
