"""Plots of the KDE entropy and of the parity experiment's CE vs exact Bayes risk (the rest of the
entropy section draws with `analysis.plots`, whose helpers these share). matplotlib is imported
only when something is drawn."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .drawing import log_x, new_figure, save_png
from .plots import _scatter_fit
from .present import data_size, number


def plot_kde(merged: pd.DataFrame, fits: pd.DataFrame, correlation: pd.DataFrame, path) -> Path:
    """Left: CE vs KDE entropy with the linear fit. Right: KDE entropy vs the sum of log relative
    eigenvalues at the N where |r| is largest; points labelled with their context length."""
    fig = new_figure(10.0, 4.2)
    left, right = fig.subplots(1, 2)
    kde = fits[fits["measure"] == "kde_entropy"]
    parameter = kde["parameter"].iloc[0] if len(kde) else np.nan
    _scatter_fit(left, merged, fits.assign(parameter=fits["parameter"].fillna(-1)), "kde_entropy",
                 -1 if pd.isna(parameter) else parameter, "kde_entropy")
    left.set_xlabel("KDE entropy of the hidden state (nats" + ("" if pd.isna(parameter) else f", {parameter:g} PCA dims") + ")")
    usable = correlation[correlation["success"]]
    if len(usable):
        n = usable.assign(a=usable["r"].abs()).groupby("N")["a"].mean().idxmax()
        column = f"sum_log_eig_{int(n)}"
        for i, (series, rows) in enumerate(merged.groupby("series")):
            r = usable[(usable["series"] == series) & (usable["N"] == n)]["r"]
            right.plot(rows[column], rows["kde_entropy"], "o", ms=5, color=f"C{i % 10}",
                       label=f"{series}: r = {number(r.iloc[0], 4) if len(r) else 'n/a'}")
        right.set_xlabel(f"sum of log relative eigenvalues, first N = {n:g}")
        right.set_ylabel("KDE entropy (nats)")
        right.legend(fontsize=7)
    fig.suptitle("Cross-entropy vs KDE entropy; KDE vs PCA entropy (labels: context length)", fontsize=10)
    return save_png(fig, path)


def plot_bayes(table: pd.DataFrame, law, path) -> Path:
    """Trained CE (mean, min-max over models) and the exact Bayes risk vs context length, with the
    C0 + C/l^γ fit of the Bayes risk."""
    fig = new_figure()
    ax = fig.add_subplot()
    risk = table.groupby("context_length")["bayes_risk"].first()
    l = risk.index.to_numpy(float)
    ax.plot(l, risk.to_numpy(), "s-", color="k", ms=4, lw=1, label="exact Bayes risk")
    groups = table.groupby("data_size") if "data_size" in table.columns else [(None, table)]
    for i, (size, rows) in enumerate(groups):
        ce = rows["ce"].to_numpy(float)
        ax.errorbar(rows["context_length"], ce, yerr=[ce - rows["ce_min"], rows["ce_max"] - ce], fmt="o", ms=4,
                    capsize=2, color=f"C{(i + 1) % 10}",
                    label="trained CE" + ("" if size is None else f", D = {data_size(size)}") + " (min–max over seeds)")
    if law.success:
        grid = np.geomspace(l.min(), l.max(), 200)
        ax.plot(grid, law.predict(grid), "--", color="C0", lw=1,
                label=f"C0 + C/l^γ: C0 = {number(law.c0, 3)}, γ = {number(law.gamma, 3)}, R² = {number(law.r2, 3)}")
    log_x(ax, l)
    ax.set_xlabel("context length l (bits)")
    ax.set_ylabel("cross-entropy of the answer (nats)")
    ax.set_title("Trained cross-entropy vs exact Bayes risk", fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, path)
