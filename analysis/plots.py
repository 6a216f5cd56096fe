"""The figures of the analysis, as PNG files (the KDE and parity ones are in `analysis.entropy_plots`).
Nothing imports matplotlib until something is drawn (`import analysis` stays free of it); canvases,
colours and axes come from `analysis.drawing`, numbers in labels from `analysis.present`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ctxscale.measure.spectra import DEFAULT_THRESHOLD, measure_columns, threshold_column

from . import _validate
from .answers import Status
from .drawing import colours, distinct_colours, log_axis, log_x, new_figure, panel_grid, panel_shape, save_png
from .present import data_size, number


def _over_grid(risk_curve: pd.DataFrame, lengths) -> pd.DataFrame:
    """The Bayes-risk curve over the lengths the sweep trained (beyond them it only stretches the
    axis), a step's end kept where the grid ends between two of its points."""
    lengths = pd.Series(lengths, dtype=float)
    curve = risk_curve.sort_values("context_length")
    inside = curve[curve["context_length"].between(lengths.min(), lengths.max())]
    before = curve[curve["context_length"] <= lengths.min()].tail(1).assign(context_length=lengths.min())
    after = inside.tail(1).assign(context_length=lengths.max())
    return pd.concat([before, inside, after]).drop_duplicates("context_length")


# --- The sweep: loss curves, optima, the law, the surface fit, the synthetic task ------------------


def plot_loss_curves(trials: pd.DataFrame, optimal: pd.DataFrame, path, surface=None, risk_curve=None) -> Path:
    """Loss vs context length (log x) per data size: seed means ± sd, the surface fit dashed,
    l* marked with its interval, and for synthetic sweeps the exact Bayes risk in black."""
    ok, _ = _validate.split_trials(trials)
    stats = ok.groupby(["data_size", "context_length"])["best_val_loss"].agg(["mean", "std"]).reset_index()
    palette = colours(stats["data_size"].unique())
    fig = new_figure()
    ax = fig.add_subplot()
    for size, sub in stats.groupby("data_size"):
        colour = palette[float(size)]
        ax.errorbar(sub["context_length"], sub["mean"], yerr=sub["std"].fillna(0), color=colour, marker="o",
                    ms=4, lw=1.2, capsize=2, label=f"D = {data_size(size)}")
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
        risk_curve = _over_grid(risk_curve, stats["context_length"])
        ax.step(risk_curve["context_length"], risk_curve["bayes_risk"], where="post", color="black", lw=1.5,
                label="exact Bayes risk")
    log_x(ax, stats["context_length"])
    ax.set_xlabel("context length l")
    ax.set_ylabel("best validation loss (nats)")
    ax.set_title("Loss vs context length (★ = l*, bar = 95 % interval, dashed = surface fit)", fontsize=10)
    ax.legend(fontsize=8, ncols=2)
    return save_png(fig, path)


_METRIC_LABELS = {"val_loss": "validation loss (nats)", "train_loss": "training loss (nats)"}


LEGEND_ROWS_PER_PANEL_ROW = 16  # legend entries a column holds beside one row of panels


def plot_learning_curves(history: pd.DataFrame, trials: pd.DataFrame, path, metric: str = "val_loss") -> Path:
    """Each grid point's `metric` per evaluation (x: step where the history has steps, else epoch):
    one panel per data size on shared axes, one colour per context length, one line per seed.

    For a loss, a dot marks each trial's best evaluation (the one its stored loss comes from), a
    dotted line in the length's colour its Bayes risk where the trials know it (synthetic), a
    cross the end of a finished trial that `history.plateau_stops` finds stopped on a plateau, and a grey
    dashed line the step (or epoch) cap in a panel where a trial ran into it. Reads a
    history that is still being written: points whose trials row is not stored yet are placed
    by their id.
    """
    from .history import cap_name, cap_stops, plateau_stops, progress_column, with_coordinates

    if metric not in history:
        raise ValueError(f"history has no column {metric!r} (it has {', '.join(history.columns)})")
    frame = with_coordinates(history, trials)
    x = progress_column(frame)
    sizes = sorted(frame["data_size"].unique())
    palette = distinct_colours(frame["context_length"].unique())
    is_loss = metric.endswith("loss")
    # only finished trials stopped: one without a stored row is still running, or was interrupted
    finished = set(trials.get("trial_id", []))
    stopped = set(plateau_stops(frame)["trial_id"]) & finished if metric == "val_loss" else set()
    capped = cap_stops(frame, trials) if metric == "val_loss" else pd.DataFrame(columns=["data_size", "cap"])
    rows, columns = panel_shape(len(sizes))
    legend_columns = -(-(len(palette) + 4) // (LEGEND_ROWS_PER_PANEL_ROW * rows))
    fig = new_figure(3.6 * columns + 1.1 * legend_columns + 0.3, 3.2 * rows + 0.6)
    grid, axes = panel_grid(fig, rows, columns, len(sizes), sharex=True, sharey=True)
    for ax, size in zip(axes, sizes):
        at_size = frame[frame["data_size"] == size]
        for (trial_id, length), curve in at_size.groupby(["trial_id", "context_length"]):
            _draw_learning_curve(ax, curve.sort_values(x), x, metric, palette[float(length)],
                                 mark_best=is_loss, stopped=trial_id in stopped)
        if is_loss and "bayes_risk" in at_size:
            for length, risk in at_size.groupby("context_length")["bayes_risk"].first().dropna().items():
                ax.axhline(risk, color=palette[float(length)], ls=":", lw=1)
        for cap in capped.loc[capped["data_size"] == size, "cap"].unique():
            ax.axvline(cap, color="grey", ls="--", lw=1)
        ax.set_title(f"D = {data_size(size)}", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10], integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))  # 17,884 steps, not 17884
        ax.tick_params(labelbottom=True)  # every panel's x axis numbered, also above an empty slot
    for ax in axes[max(0, len(sizes) - columns):]:
        ax.set_xlabel(x)
    for ax in grid[:, 0]:
        ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
    handles = [Line2D([], [], color=colour, lw=1.5, label=f"l = {length:g}") for length, colour in palette.items()]
    if is_loss:
        handles.append(Line2D([], [], ls="none", marker="o", mfc="white", mec="black", label="best evaluation"))
    if is_loss and "bayes_risk" in frame and frame["bayes_risk"].notna().any():
        handles.append(Line2D([], [], color="black", ls=":", lw=1, label="Bayes risk of l"))
    if stopped:
        handles.append(Line2D([], [], ls="none", marker="x", color="black", label="stopped on a plateau?"))
    if len(capped):
        handles.append(Line2D([], [], color="grey", ls="--", lw=1, label=f"{cap_name(x)}: ran into it"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, ncols=legend_columns)
    fig.suptitle(f"Learning curves ({frame['trial_id'].nunique()} points, {len(frame)} evaluations)", fontsize=10)
    return save_png(fig, path)


def _draw_learning_curve(ax, curve: pd.DataFrame, x: str, metric: str, colour, mark_best: bool, stopped: bool):
    ax.plot(curve[x], curve[metric], color=colour, lw=1.1, marker=".", ms=3)
    if mark_best and curve[metric].notna().any():
        best = curve.loc[curve[metric].idxmin()]
        ax.plot(best[x], best[metric], "o", ms=6, mfc=colour, mec="black", mew=0.8, zorder=3)
    if stopped:
        ax.plot(curve[x].iloc[-1], curve[metric].iloc[-1], "x", ms=8, mew=1.5, color="black", zorder=3)


def plot_optimal_law(optimal: pd.DataFrame, law, path, surface=None) -> Path:
    """l* vs D on log-log axes with the fitted law and its band; one-sided answers (`status`
    at_or_below, above, saturated) as triangles at their bound; the surface fit's optima as open squares."""
    fig = new_figure(6.5, 4.5)
    ax = fig.add_subplot()
    inside = optimal[optimal["bracketed"].astype(bool)]
    if len(inside):
        low = (inside["l_star"] - inside["l_star_low"]).fillna(0).clip(lower=0)
        high = (inside["l_star_high"] - inside["l_star"]).fillna(0).clip(lower=0)
        ax.errorbar(inside["data_size"], inside["l_star"], yerr=[low, high], fmt="o", color="C0", capsize=3,
                    label="l* per data size (95 %)")
    # one-sided answers at their bound: an upper bound points down, a lower bound up
    for status, bound, marker, label in (("at_or_below", "l_star_high", "v", "l* at the shortest length searched (upper bound)"),
                                         ("above", "l_star_low", "^", "l* at the longest length searched (lower bound)"),
                                         ("saturated", "l_star_low", "^", "saturated: no task reaches further (lower bound)")):
        out = optimal[optimal["status"] == status] if "status" in optimal else optimal.iloc[:0]
        if len(out):
            ax.plot(out["data_size"], out[bound], marker, color="C1" if status == "saturated" else "C3", ls="none",
                    label=label)
    if surface is not None and surface.success:
        frame = surface.optima_frame()
        # not where the data size learnt nothing: an optimum the form implies there is not one the data show
        learnt = optimal["data_size"] if "status" not in optimal else \
            optimal.loc[optimal["status"] != Status.NOT_LEARNT, "data_size"]
        frame = frame[frame["bracketed"] & frame["data_size"].isin(learnt)]
        if len(frame):
            ax.plot(frame["data_size"], frame["l_star"], "s", mfc="none", color="C2", label="surface-fit optimum")
    if law is not None and law.success:
        d = np.geomspace(min(law.data_size) / 1.5, max(law.data_size) * 1.5, 100)
        lo, hi = law.band(d)
        ax.plot(d, law.predict(d), color="C0", lw=1.2,
                label=f"l* = {number(law.coefficient, 3)}·D^{number(law.exponent, 3)} "
                      f"(β ∈ [{number(law.exponent_low, 3)}, {number(law.exponent_high, 3)}])")
        ax.fill_between(d, lo, hi, color="C0", alpha=0.15, lw=0)
    log_axis(ax, "x", optimal["data_size"], label=data_size)
    drawn = [line.get_ydata() for line in ax.get_lines()] + [optimal["l_star_low"], optimal["l_star_high"]]
    log_axis(ax, "y", np.concatenate([np.asarray(v, dtype=float) for v in drawn]), ticks_at_values=False)
    ax.set_xlabel("data size D")
    ax.set_ylabel("optimal context length l*")
    ax.set_title("Optimal context length vs data size", fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # a sweep with no optimum to draw has nothing to label
        ax.legend(fontsize=8)
    return save_png(fig, path)


def plot_surface_residuals(residuals: pd.DataFrame, path) -> Path:
    """Residuals log(loss) - log(fitted) of the surface fit vs context length and vs data size."""
    fig = new_figure(9.0, 3.8)
    left, right = fig.subplots(1, 2, sharey=True)
    palette = colours(residuals["data_size"].unique()) if len(residuals) else {}
    for size, sub in residuals.groupby("data_size"):
        left.plot(sub["context_length"], sub["log_residual"], "o", ms=3.5, color=palette[float(size)],
                  label=f"D = {data_size(size)}")
    right.plot(residuals["data_size"], residuals["log_residual"], "o", ms=3.5, color="0.3")
    for ax, label, column, format_tick in ((left, "context length l", "context_length", lambda v: f"{v:g}"),
                                           (right, "data size D", "data_size", data_size)):
        ax.axhline(0, color="black", lw=0.8)
        log_axis(ax, "x", residuals[column], label=format_tick)
        ax.set_xlabel(label)
    left.set_ylabel("log loss − log fitted")
    left.legend(fontsize=7, ncols=2)
    fig.suptitle("Surface-fit residuals", fontsize=10)
    return save_png(fig, path)


def plot_synthetic_gap(gap: pd.DataFrame, risk_curve: pd.DataFrame, path) -> Path:
    """Synthetic sweeps: trained best loss against the exact Bayes risk (left) and the gap
    between them (right), per data size."""
    fig = new_figure(10.0, 4.0)
    left, right = fig.subplots(1, 2, sharex=True)
    palette = colours(gap["data_size"].unique())
    risk_curve = _over_grid(risk_curve, gap["context_length"])
    left.step(risk_curve["context_length"], risk_curve["bayes_risk"], where="post", color="black", lw=1.5,
              label="exact Bayes risk")
    for size, sub in gap.groupby("data_size"):
        colour = palette[float(size)]
        left.plot(sub["context_length"], sub["best_loss"], "o-", ms=4, lw=1, color=colour, label=f"D = {data_size(size)}")
        right.plot(sub["context_length"], sub["gap"], "o-", ms=4, lw=1, color=colour)
    right.axhline(0, color="black", lw=0.8)
    left.set_ylabel("loss (nats)")
    right.set_ylabel("best loss − Bayes risk (nats)")
    for ax in (left, right):
        log_x(ax, gap["context_length"])
        ax.set_xlabel("context length l")
    left.legend(fontsize=7)
    fig.suptitle("Synthetic task: trained loss vs exact Bayes risk", fontsize=10)
    return save_png(fig, path)


def plot_task_excess(table: pd.DataFrame, path) -> Path:
    """Task x context length, one panel per data size; colour = loss - the task's Bayes loss.

    The colour scale runs from 0 (learnt down to its Bayes loss) to ln 2 (no better than a coin);
    a dot marks the cells whose task cannot be predicted at that context length (Bayes loss ln 2),
    so the boundary the Bayes risk steps along is visible. Each panel has the lengths its data size
    tried; a cell with no loss (a failed trial) is grey.
    """
    sizes = sorted(table["data_size"].unique())
    tasks = table.drop_duplicates("task").sort_values("task")
    labels = [f"{l},{a}" for l, a in zip(tasks["l"], tasks["a"])]
    n_tasks = len(tasks)
    # each panel shows the lengths its data size tried (an adaptive search tries different ones)
    tried = {size: sorted(table.loc[table["data_size"] == size, "context_length"].unique()) for size in sizes}
    rows, columns = panel_shape(len(sizes))
    panel_width = max(2.2, 0.14 * max(len(lengths) for lengths in tried.values()))
    fig = new_figure(1.6 + panel_width * columns, rows * max(3.0, 1.4 + 0.12 * n_tasks))
    grid, axes = panel_grid(fig, rows, columns, len(sizes), sharey=True)
    cmap = colormaps["magma_r"].with_extremes(bad="0.85")
    image = None
    for ax, size in zip(axes, sizes):
        sub, lengths = table[table["data_size"] == size], tried[size]
        excess = sub.pivot(index="task", columns="context_length", values="excess").reindex(
            index=tasks["task"], columns=lengths)
        image = ax.imshow(excess.to_numpy(float), aspect="auto", cmap=cmap, vmin=0.0, vmax=math.log(2),
                          interpolation="nearest", origin="upper")
        hidden = sub.pivot(index="task", columns="context_length", values="bayes_loss").reindex(
            index=tasks["task"], columns=lengths).to_numpy(float) > 0
        hidden_rows, hidden_cols = np.nonzero(hidden)
        ax.plot(hidden_cols, hidden_rows, ".", ms=1.5, color="0.55")
        ax.set_xticks(range(len(lengths)), [f"{c:g}" for c in lengths], fontsize=6, rotation=90)
        ax.set_title(f"D = {data_size(size)}", fontsize=9)
        ax.set_xlabel("context length l", fontsize=8)
    for ax in grid[:, 0]:
        ax.set_yticks(range(n_tasks), labels, fontsize=max(3.5, min(7.0, 300 / max(n_tasks, 1))))
        ax.set_ylabel("task (l, a), in the task list's order", fontsize=8)
    bar = fig.colorbar(image, ax=list(axes), extend="both", shrink=0.8)
    bar.set_label("task loss − its Bayes loss (nats); dot: task not predictable at l", fontsize=7)
    fig.suptitle("Which tasks each cell learnt", fontsize=10)
    return save_png(fig, path)


# --- Measured models and Bi-MLP features: cross-entropy against intrinsic entropy ----------------


def plot_ce_vs_context(ce: pd.DataFrame, laws: dict, path) -> Path:
    """CE vs context length (log x) per model, ± its standard error, with the fitted C0 + C/l^γ dashed."""
    fig = new_figure()
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
                    label=f"C0 + C/l^γ: C0 = {number(law.c0, 3)}, γ = {number(law.gamma, 3)}, R² = {number(law.r2, 3)}")
    log_x(ax, ce["context_length"])
    ax.set_xlabel("context length l (tokens)")
    ax.set_ylabel("final-token cross-entropy (nats)")
    ax.set_title("Cross-entropy vs context length", fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def _scatter_fit(ax, merged: pd.DataFrame, fits: pd.DataFrame, measure: str, parameter: float, column: str) -> None:
    for i, (series, rows) in enumerate(merged.groupby("series")):
        colour = f"C{i % 10}"
        ax.plot(rows[column], rows["ce"], "o", ms=5, color=colour, label=series)
        fit = fits[(fits["series"] == series) & (fits["measure"] == measure) & (fits["parameter"] == parameter)]
        if len(fit) and bool(fit["success"].iloc[0]):
            f = fit.iloc[0]
            x = np.linspace(rows[column].min(), rows[column].max(), 50)
            ax.plot(x, f["intercept"] + f["slope"] * x, "-", color=colour, lw=1,
                    label=f"linear fit R² = {number(f['r2'], 3)}")
        for _, r in rows.iterrows():
            ax.annotate(f"{r['context_length']:g}", (r[column], r["ce"]), fontsize=6, alpha=0.6,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_ylabel("cross-entropy (nats)")
    ax.legend(fontsize=7)


def plot_ce_vs_measures(merged: pd.DataFrame, fits: pd.DataFrame, path) -> Path:
    """CE vs intrinsic dimension (the default threshold, else the nearest stored one) and vs the sum of
    log relative eigenvalues (the N with the best R²); points are labelled with their context length."""
    found = measure_columns(merged.columns)
    fig = new_figure(10.0, 4.2)
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
    return save_png(fig, path)


def plot_correlation_heatmap(fits: pd.DataFrame, path) -> Path:
    """Pearson r of CE with the measure: rows models, columns thresholds (left) and N (right)."""
    fig = new_figure(10.0, 1.8 + 0.45 * max(fits["series"].nunique(), 1))
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
    return save_png(fig, path)


def plot_spectra(merged: pd.DataFrame, path, max_models: int = 4) -> Path:
    """Eigenvalue / largest vs rank (log-log), one line per context length, one panel per model
    (at most `max_models`), and the intrinsic dimension vs context length for every threshold."""
    models = list(merged["series"].unique())[:max_models]
    fig = new_figure(4.2 * (len(models) + 1), 4.0)
    axes = np.atleast_1d(fig.subplots(1, len(models) + 1))
    palette = colours(merged["context_length"])
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
    threshold_colours = colours([t for t, _ in thresholds], "plasma", 0.85)
    for t, column in thresholds:
        for series in models:
            rows = merged[merged["series"] == series]
            ax.plot(rows["context_length"], rows[column], "o-", ms=3, lw=1, color=threshold_colours[t],
                    label=f"t = {t:g}" if series == models[0] else None)
    log_x(ax, merged["context_length"])
    ax.set_xlabel("context length l")
    ax.set_ylabel("intrinsic dimension")
    ax.legend(fontsize=6)
    fig.suptitle("PCA spectra of the hidden state that predicts the final token", fontsize=10)
    return save_png(fig, path)


def plot_bimlp_dimension(spectra: pd.DataFrame, path) -> Path:
    """Bi-MLP: intrinsic dimension of the 80-dim feature vs context length, per data size (mean ± sd
    over seeds), at the default threshold."""
    column = threshold_column(DEFAULT_THRESHOLD)
    stats = spectra.groupby(["data_size", "context_length"])[column].agg(["mean", "std"]).reset_index()
    fig = new_figure()
    ax = fig.add_subplot()
    palette = colours(stats["data_size"])
    for size, rows in stats.groupby("data_size"):
        ax.errorbar(rows["context_length"], rows["mean"], yerr=rows["std"].fillna(0), marker="o", ms=4, capsize=2,
                    color=palette[float(size)], label=f"D = {data_size(size)}")
    log_x(ax, stats["context_length"])
    ax.set_xlabel("context length l (bits)")
    ax.set_ylabel(f"intrinsic dimension (t = {DEFAULT_THRESHOLD:g})")
    ax.set_title("Bi-MLP feature: intrinsic dimension vs context length", fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, path)
