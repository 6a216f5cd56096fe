"""PNG plots of the cross-entropy / intrinsic-entropy analysis (analysis.entropy).

As in analysis.plots: figures are `matplotlib.figure.Figure` printed by the Agg canvas, never
pyplot, so a report needs no display and leaves a notebook's backend alone.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ctxscale.measure.spectra import DEFAULT_THRESHOLD, measure_columns, threshold_column


def _figure(width=7.0, height=4.5) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _log_x(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _length_colours(lengths) -> dict:
    ordered = sorted({float(v) for v in lengths})
    span = max(len(ordered) - 1, 1)
    return {v: colormaps["viridis"](0.9 * i / span) for i, v in enumerate(ordered)}


def inline_png(path, alt: str) -> str:
    """An <figure> with the PNG embedded, so the report page stays one self-contained file."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def plot_ce_vs_context(ce: pd.DataFrame, laws: dict, path) -> Path:
    """CE vs context length (log x) per model, ± its standard error, with the fitted C0 + C/l^γ dashed."""
    fig = _figure()
    ax = fig.add_subplot()
    for i, (series, rows) in enumerate(ce.sort_values("context_length").groupby("series")):
        colour = f"C{i % 10}"
        err = rows["ce_se"].fillna(0) if "ce_se" in rows.columns else None
        ax.errorbar(rows["context_length"], rows["ce"], yerr=err, marker="o", ms=4, lw=1.2, capsize=2,
                    color=colour, label=series)
        law = laws.get(series)
        if law is not None and law.success:
            grid = np.geomspace(rows["context_length"].min(), rows["context_length"].max(), 200)
            ax.plot(grid, law.predict(grid), "--", color=colour, lw=1,
                    label=f"C0 + C/l^γ: C0 = {law.c0:.3g}, γ = {law.gamma:.3g}, R² = {law.r2:.3f}")
    _log_x(ax)
    ax.set_xlabel("context length l (tokens)")
    ax.set_ylabel("final-token cross-entropy (nats)")
    ax.set_title("Cross-entropy vs context length", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _scatter_fit(ax, merged: pd.DataFrame, fits: pd.DataFrame, measure: str, parameter: float, column: str) -> None:
    for i, (series, rows) in enumerate(merged.groupby("series")):
        colour = f"C{i % 10}"
        ax.plot(rows[column], rows["ce"], "o", ms=5, color=colour, label=series)
        fit = fits[(fits["series"] == series) & (fits["measure"] == measure) & (fits["parameter"] == parameter)]
        if len(fit) and bool(fit["success"].iloc[0]):
            f = fit.iloc[0]
            x = np.linspace(rows[column].min(), rows[column].max(), 50)
            ax.plot(x, f["intercept"] + f["slope"] * x, "-", color=colour, lw=1,
                    label=f"linear fit R² = {f['r2']:.3f}")
        for _, r in rows.iterrows():
            ax.annotate(f"{r['context_length']:g}", (r[column], r["ce"]), fontsize=6, alpha=0.6,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_ylabel("cross-entropy (nats)")
    ax.legend(fontsize=7)


def plot_ce_vs_measures(merged: pd.DataFrame, fits: pd.DataFrame, path) -> Path:
    """CE vs intrinsic dimension (the default threshold, else the nearest stored one) and vs the sum of
    log relative eigenvalues (the N with the best R²); points are labelled with their context length."""
    found = measure_columns(merged.columns)
    fig = _figure(10.0, 4.2)
    left, right = fig.subplots(1, 2)
    if found["intrinsic_dim"]:
        t, column = min(found["intrinsic_dim"], key=lambda pair: abs(np.log(pair[0] / DEFAULT_THRESHOLD)))
        _scatter_fit(left, merged, fits, "intrinsic_dim", t, column)
        left.set_xlabel(f"intrinsic dimension (eigenvalue / largest > {t:g})")
    usable = fits[(fits["measure"] == "sum_log_eig") & fits["success"]]
    if len(usable):
        n = usable.groupby("parameter")["r2"].mean().idxmax()
        column = dict((p, c) for p, c in found["sum_log_eig"])[n]
        _scatter_fit(right, merged, fits, "sum_log_eig", n, column)
        right.set_xlabel(f"sum of log relative eigenvalues, first N = {n:g}")
    fig.suptitle("Cross-entropy vs intrinsic entropy of the hidden state (labels: context length)", fontsize=10)
    return _save(fig, path)


def plot_correlation_heatmap(fits: pd.DataFrame, path) -> Path:
    """Pearson r of CE with the measure: rows models, columns thresholds (left) and N (right)."""
    fig = _figure(10.0, 1.8 + 0.45 * max(fits["series"].nunique(), 1))
    axes = fig.subplots(1, 2)
    image = None
    for ax, measure, label in zip(axes, ("intrinsic_dim", "sum_log_eig"), ("threshold t", "N")):
        table = fits[fits["measure"] == measure].pivot_table(index="series", columns="parameter", values="r",
                                                            dropna=False)
        if table.empty:
            ax.set_axis_off()
            continue
        image = ax.imshow(table.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(table.shape[1]), [f"{c:g}" for c in table.columns], fontsize=7, rotation=45)
        ax.set_yticks(range(table.shape[0]), table.index, fontsize=7)
        for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6)
        ax.set_xlabel(label)
        ax.set_title(f"r(CE, {measure})", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8)
    return _save(fig, path)


def plot_spectra(merged: pd.DataFrame, path, max_models: int = 4) -> Path:
    """Eigenvalue / largest vs rank (log-log), one line per context length, one panel per model
    (at most `max_models`), and the intrinsic dimension vs context length for every threshold."""
    models = list(merged["series"].unique())[:max_models]
    fig = _figure(4.2 * (len(models) + 1), 4.0)
    axes = np.atleast_1d(fig.subplots(1, len(models) + 1))
    palette = _length_colours(merged["context_length"])
    for ax, series in zip(axes, models):
        for _, row in merged[merged["series"] == series].iterrows():
            eig = np.asarray(json.loads(row["eigenvalues"]), dtype=float)
            rel = eig[eig > 0] / eig[0] if eig.size and eig[0] > 0 else eig[:0]
            ax.loglog(np.arange(1, rel.size + 1), rel, color=palette[float(row["context_length"])], lw=1,
                      label=f"l = {row['context_length']:g}")
        ax.axhline(DEFAULT_THRESHOLD, color="black", lw=0.6, ls=":")
        ax.set_xlabel("rank i")
        ax.set_ylabel("λ_i / λ_1")
        ax.set_title(str(series), fontsize=9)
        ax.legend(fontsize=6, ncols=2)
    ax = axes[-1]
    thresholds = measure_columns(merged.columns)["intrinsic_dim"]
    for i, (t, column) in enumerate(thresholds):
        for series in models:
            rows = merged[merged["series"] == series]
            ax.plot(rows["context_length"], rows[column], "o-", ms=3, lw=1,
                    color=colormaps["plasma"](0.85 * i / max(len(thresholds) - 1, 1)),
                    label=f"t = {t:g}" if series == models[0] else None)
    _log_x(ax)
    ax.set_xlabel("context length l")
    ax.set_ylabel("intrinsic dimension")
    ax.legend(fontsize=6)
    fig.suptitle("PCA spectra of the hidden state that predicts the final token", fontsize=10)
    return _save(fig, path)


def plot_bimlp_dimension(spectra: pd.DataFrame, path) -> Path:
    """Bi-MLP: intrinsic dimension of the 80-dim feature vs context length, per data size (mean ± sd
    over seeds), at the default threshold."""
    column = threshold_column(DEFAULT_THRESHOLD)
    stats = spectra.groupby(["data_size", "context_length"])[column].agg(["mean", "std"]).reset_index()
    fig = _figure()
    ax = fig.add_subplot()
    sizes = sorted(stats["data_size"].unique())
    for i, size in enumerate(sizes):
        rows = stats[stats["data_size"] == size]
        ax.errorbar(rows["context_length"], rows["mean"], yerr=rows["std"].fillna(0), marker="o", ms=4, capsize=2,
                    color=colormaps["viridis"](0.9 * i / max(len(sizes) - 1, 1)), label=f"D = {size:,.0f}")
    _log_x(ax)
    ax.set_xlabel("context length l (bits)")
    ax.set_ylabel(f"intrinsic dimension (t = {DEFAULT_THRESHOLD:g})")
    ax.set_title("Bi-MLP feature: intrinsic dimension vs context length", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)
