"""PNG plots of the analysis. The only module that imports matplotlib.

Figures are built as `matplotlib.figure.Figure` and printed by the Agg canvas directly, never
through pyplot, so making a report neither needs a display nor changes the backend of a notebook
that imports this module.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from . import _validate


def _figure(width=7.0, height=4.5):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _size_colours(sizes):
    """One colour per data size, spread over viridis on a log scale."""
    ordered = sorted({float(s) for s in sizes})
    logs = np.log(ordered)
    span = logs[-1] - logs[0] if logs[-1] > logs[0] else 1.0
    return {s: colormaps["viridis"](0.9 * (x - logs[0]) / span) for s, x in zip(ordered, logs)}


def _fmt_size(size) -> str:
    return f"{size:,.0f}" if size < 1e8 else f"{size:.3g}"


def _log_x(ax, values):
    """Log x axis with plain numbers; a grid spanning under ~1.5 decades also labels minor ticks
    (else a 16..64 grid shows no number at all)."""
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    values = np.asarray(values, dtype=float)
    if len(values) and values.max() / values.min() < 30:
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if round(v / 10 ** np.floor(np.log10(v))) in (2, 3, 5) else ""))


def plot_loss_curves(trials: pd.DataFrame, optimal: pd.DataFrame, path, surface=None, risk_curve=None) -> Path:
    """Loss vs context length (log x) per data size: seed means ± sd, the surface fit dashed,
    l* marked with its interval, and for synthetic sweeps the exact Bayes risk in black."""
    ok, _ = _validate.split_trials(trials)
    stats = ok.groupby(["data_size", "context_length"])["best_val_loss"].agg(["mean", "std"]).reset_index()
    palette = _size_colours(stats["data_size"].unique())
    fig = _figure()
    ax = fig.add_subplot()
    for size, sub in stats.groupby("data_size"):
        colour = palette[float(size)]
        ax.errorbar(sub["context_length"], sub["mean"], yerr=sub["std"].fillna(0), color=colour, marker="o",
                    ms=4, lw=1.2, capsize=2, label=f"D = {_fmt_size(size)}")
        if surface is not None and surface.success:
            grid = np.geomspace(sub["context_length"].min(), sub["context_length"].max(), 200)
            ax.plot(grid, surface.predict(grid, size), "--", color=colour, lw=1, alpha=0.8)
        row = optimal[optimal["data_size"] == size]
        if len(row) and bool(row["bracketed"].iloc[0]):
            r = row.iloc[0]
            y = r["loss_at_l_star"] if np.isfinite(r["loss_at_l_star"]) else r["best_loss"]
            ax.plot([r["l_star"]], [y], marker="*", ms=13, color=colour, mec="black", mew=0.6, zorder=5)
            if np.isfinite(r["l_star_low"]):
                ax.hlines(y, r["l_star_low"], r["l_star_high"], color=colour, lw=3, alpha=0.6, zorder=4)
    if risk_curve is not None and len(risk_curve):
        ax.step(risk_curve["context_length"], risk_curve["bayes_risk"], where="post", color="black", lw=1.5,
                label="exact Bayes risk")
    _log_x(ax, stats["context_length"])
    ax.set_xlabel("context length l")
    ax.set_ylabel("best validation loss (nats)")
    ax.set_title("Loss vs context length (★ = l*, bar = 95 % interval, dashed = surface fit)", fontsize=10)
    ax.legend(fontsize=8, ncols=2)
    _save(fig, path)
    return Path(path)


def plot_optimal_law(optimal: pd.DataFrame, law, path, surface=None) -> Path:
    """l* vs D on log-log axes with the fitted law and its band; optima outside the grid are
    drawn as triangles at the grid end they pass; the surface fit's optima as open squares."""
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot()
    inside = optimal[optimal["bracketed"].astype(bool)]
    if len(inside):
        low = (inside["l_star"] - inside["l_star_low"]).fillna(0).clip(lower=0)
        high = (inside["l_star_high"] - inside["l_star"]).fillna(0).clip(lower=0)
        ax.errorbar(inside["data_size"], inside["l_star"], yerr=[low, high], fmt="o", color="C0", capsize=3,
                    label="l* per data size (95 %)")
    for side, marker in (("below", "v"), ("above", "^")):
        out = optimal[optimal["outside"] == side]
        if len(out):
            ax.plot(out["data_size"], out["grid_l_best"], marker, color="C3", ls="none",
                    label=f"optimum {side} the grid")
    if surface is not None and surface.success:
        frame = surface.optima_frame()
        frame = frame[frame["bracketed"]]
        if len(frame):
            ax.plot(frame["data_size"], frame["l_star"], "s", mfc="none", color="C2", label="surface-fit optimum")
    if law is not None and law.success:
        d = np.geomspace(min(law.data_size) / 1.5, max(law.data_size) * 1.5, 100)
        lo, hi = law.band(d)
        ax.plot(d, law.predict(d), color="C0", lw=1.2,
                label=f"l* = {law.coefficient:.3g}·D^{law.exponent:.3f} "
                      f"(β ∈ [{law.exponent_low:.3f}, {law.exponent_high:.3f}])")
        ax.fill_between(d, lo, hi, color="C0", alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("data size D")
    ax.set_ylabel("optimal context length l*")
    ax.set_title("Optimal context length vs data size", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
    return Path(path)


def plot_surface_residuals(residuals: pd.DataFrame, path) -> Path:
    """Residuals log(loss) - log(fitted) of the surface fit vs context length and vs data size."""
    fig = _figure(9.0, 3.8)
    left, right = fig.subplots(1, 2, sharey=True)
    palette = _size_colours(residuals["data_size"].unique()) if len(residuals) else {}
    for size, sub in residuals.groupby("data_size"):
        left.plot(sub["context_length"], sub["log_residual"], "o", ms=3.5, color=palette[float(size)],
                  label=f"D = {_fmt_size(size)}")
    right.plot(residuals["data_size"], residuals["log_residual"], "o", ms=3.5, color="0.3")
    for ax, label, column in ((left, "context length l", "context_length"), (right, "data size D", "data_size")):
        ax.axhline(0, color="black", lw=0.8)
        _log_x(ax, residuals[column])
        ax.set_xlabel(label)
    left.set_ylabel("log loss − log fitted")
    left.legend(fontsize=7, ncols=2)
    fig.suptitle("Surface-fit residuals", fontsize=10)
    _save(fig, path)
    return Path(path)


def plot_synthetic_gap(gap: pd.DataFrame, risk_curve: pd.DataFrame, path) -> Path:
    """Synthetic sweeps: trained best loss against the exact Bayes risk (left) and the gap
    between them (right), per data size."""
    fig = _figure(10.0, 4.0)
    left, right = fig.subplots(1, 2)
    palette = _size_colours(gap["data_size"].unique())
    left.step(risk_curve["context_length"], risk_curve["bayes_risk"], where="post", color="black", lw=1.5,
              label="exact Bayes risk")
    for size, sub in gap.groupby("data_size"):
        colour = palette[float(size)]
        left.plot(sub["context_length"], sub["best_loss"], "o-", ms=4, lw=1, color=colour, label=f"D = {_fmt_size(size)}")
        right.plot(sub["context_length"], sub["gap"], "o-", ms=4, lw=1, color=colour)
    right.axhline(0, color="black", lw=0.8)
    left.set_ylabel("loss (nats)")
    right.set_ylabel("best loss − Bayes risk (nats)")
    for ax in (left, right):
        _log_x(ax, gap["context_length"])
        ax.set_xlabel("context length l")
    left.legend(fontsize=7)
    fig.suptitle("Synthetic task: trained loss vs exact Bayes risk", fontsize=10)
    _save(fig, path)
    return Path(path)
