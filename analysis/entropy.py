"""Cross-entropy against context length and against the intrinsic entropy of hidden states.

Reads the `ce` and `spectra` tables that `ctxscale measure` stores, and the `feature_eigenvalues`
of Bi-MLP trials of a synthetic sweep. The study's claims (arXiv 2502.01481) checked here:

- CE(l) = C0 + C / l^γ (fitted with `analysis.fit_bayes_risk`);
- CE is linear in the intrinsic entropy measured from hidden states: in the thresholded-PCA
  intrinsic dimension (every threshold), in the sum of log relative eigenvalues (every N) and in
  the Gaussian-KDE entropy (`kde_entropy`); reported as linear fits with R² and Pearson r (the
  study: |r| ≈ 0.99), with the KDE vs sum-of-log-eigenvalue correlation (the study: r ≈ 0.998);
- where the ce rows carry the exact Bayes risk (the parity experiment): trained CE beside it per
  context length, and C0 + C/l^γ fitted to the Bayes risk.

Fitting only; `entropy_report` draws with `analysis.plots` and writes the report section.
Pandas / NumPy only (no Ray, no torch): the spectrum measures come from the pure-NumPy
`ctxscale.measure.spectra`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ctxscale.measure.spectra import (DEFAULT_N_EIGENVALUES, DEFAULT_THRESHOLD, DEFAULT_THRESHOLDS,
                                      measure_columns, spectrum_measures, threshold_column)
from ctxscale.store import load_results

from . import _validate, stats
from .present import data_size, html_figure, html_sections, html_table, html_text, number
from .results import LinearFit

MEASURES = {"intrinsic_dim": "intrinsic dimension (threshold t)", "sum_log_eig": "sum of log relative eigenvalues (first N)",
            "kde_entropy": "KDE entropy (PCA dims)"}
KDE_COLUMNS = ("kde_entropy", "kde_dims")  # ctxscale.measure.kde's estimate and its PCA dimensions


def fit_linear(x, y) -> LinearFit:
    """Ordinary least squares of y on x.

    Parameters
    ----------
    x, y : array-like
        Equal-length data; pairs with a non-finite value are dropped.

    Returns
    -------
    LinearFit
        success False (with NaN numbers) with fewer than 3 points or a constant x; with exactly 3 the
        standard errors rest on one degree of freedom.

    Examples
    --------
    >>> fit = fit_linear([1, 2, 3, 4], [3.0, 5.0, 7.0, 9.0])
    >>> round(fit.slope, 6), round(fit.intercept, 6), round(fit.r2, 6)
    (2.0, 1.0, 1.0)
    """
    xa, ya = _validate.finite_pairs(x, y, "x", "y")
    n, nan = len(xa), math.nan
    if n < 3:
        return LinearFit(nan, nan, nan, nan, nan, nan, n, False, f"needs at least 3 points, got {n}")
    line = stats.least_squares(stats.line_design(xa), ya)
    if line.rank < 2:
        return LinearFit(nan, nan, nan, nan, nan, nan, n, False, f"x is constant ({xa[0]:g})")
    (intercept, slope), (intercept_se, slope_se) = line.coef.tolist(), line.se.tolist()
    r2 = stats.r_squared(ya, line.sse)
    r = math.copysign(math.sqrt(max(r2, 0.0)), slope) if np.isfinite(r2) else nan
    return LinearFit(slope, intercept, slope_se, intercept_se, r, r2, n, True, "")


# --- Measured models ---------------------------------------------------------------------------


def load_measurements(results_dir, sweep: Optional[str] = None, file_times: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stored `ce` and `spectra` tables (empty DataFrames when the sweep has none); `file_times`
    adds each ce row's file time (`stored_at`), which tells a model's most recent configuration."""
    return load_results(results_dir, "ce", sweep, file_times=file_times), load_results(results_dir, "spectra", sweep)


def _series_key(frame: pd.DataFrame) -> pd.Series:
    # one curve per model; models of several sweeps are told apart by the sweep's name
    if "sweep" in frame.columns and frame["sweep"].nunique() > 1:
        return frame["sweep"].astype(str) + "/" + frame["model"].astype(str)
    return frame["model"].astype(str)


def ce_law_fits(ce: pd.DataFrame) -> dict:
    """{model: BayesRiskFit} of CE(l) = C0 + C / l^γ per model (analysis.fit_bayes_risk).

    Examples
    --------
    >>> l = np.array([16, 32, 64, 128, 256])
    >>> fits = ce_law_fits(pd.DataFrame({"model": "m", "context_length": l, "ce": 2.0 + 3.0 / l ** 0.5}))
    >>> round(fits["m"].gamma, 3)
    0.5
    """
    try:
        from .bayes import fit_bayes_risk  # the same fit the training analysis uses
    except ImportError:  # an analysis package without the training fits: CE is still plotted
        return {}
    frame = ce.assign(series=_series_key(ce))
    return {name: fit_bayes_risk(rows["context_length"], rows["ce"], rows.get("config_hash"))
            for name, rows in frame.groupby("series")}


def merged_measurements(ce: pd.DataFrame, spectra: pd.DataFrame) -> pd.DataFrame:
    """One row per model and context length: ce, ce_se and every spectrum-measure column."""
    # a ce row pairs only with the spectrum of the same measurement configuration
    keys = [k for k in ("sweep", "model", "context_length", "config_hash") if k in ce.columns and k in spectra.columns]
    columns = [c for pairs in measure_columns(spectra.columns).values() for _, c in pairs]
    columns += [c for c in KDE_COLUMNS if c in spectra.columns]
    merged = ce[keys + ["ce"] + [c for c in ("ce_se", "bayes_risk", "data_size") if c in ce.columns]].merge(
        spectra[keys + columns + ["eigenvalues"]], on=keys, how="inner")
    merged.insert(0, "series", _series_key(merged))
    return merged.sort_values(["series", "context_length"]).reset_index(drop=True)


def ce_entropy_fits(merged: pd.DataFrame) -> pd.DataFrame:
    """Linear fits of CE on each spectrum measure, per model, across context lengths.

    Returns
    -------
    DataFrame
        series (model), measure ('intrinsic_dim' or 'sum_log_eig'), parameter (threshold or N),
        slope, intercept, slope_se, r, r2, n, success, message; one row per model x parameter.

    Examples
    --------
    >>> rows = pd.DataFrame({"series": "m", "context_length": [8, 16, 32, 64], "ce": [4.0, 3.5, 3.1, 2.9],
    ...                      "intrinsic_dim_0.01": [10, 15, 19, 21], "sum_log_eig_3": [-9.0, -7.0, -5.5, -4.6]})
    >>> ce_entropy_fits(rows)[["measure", "parameter", "n"]].values.tolist()
    [['intrinsic_dim', 0.01, 4], ['sum_log_eig', 3.0, 4]]
    """
    rows = []
    found = measure_columns(merged.columns)
    for series, group in merged.groupby("series"):
        for measure, pairs in found.items():
            for parameter, column in pairs:
                fit = fit_linear(group[column], group["ce"])
                rows.append({"series": series, "measure": measure, "parameter": parameter, **fit.to_dict()})
        if "kde_entropy" in group.columns:  # one estimate per row; its parameter is the PCA dimension
            dims = group["kde_dims"].dropna() if "kde_dims" in group.columns else pd.Series(dtype=float)
            fit = fit_linear(group["kde_entropy"], group["ce"])
            rows.append({"series": series, "measure": "kde_entropy",
                         "parameter": float(dims.iloc[0]) if len(dims) else math.nan, **fit.to_dict()})
    columns = ["series", "measure", "parameter", *[f.name for f in dataclasses.fields(LinearFit)]]
    return pd.DataFrame(rows, columns=columns)


def kde_sumlog_correlation(merged: pd.DataFrame) -> pd.DataFrame:
    """Pearson r of the KDE entropy with the sum of log relative eigenvalues, per model and N, across
    context lengths (the study's Fig. 9: r ≈ 0.998 for its best N).

    Examples
    --------
    >>> rows = pd.DataFrame({"series": "m", "kde_entropy": [1.0, 2.0, 2.4, 4.0], "sum_log_eig_3": [-9.0, -7.0, -6.0, -3.0]})
    >>> table = kde_sumlog_correlation(rows)
    >>> table[["N", "n"]].values.tolist(), round(float(table["r"][0]), 3)
    ([[3.0, 4.0]], 0.999)
    """
    rows = []
    if "kde_entropy" in merged.columns:
        for series, group in merged.groupby("series"):
            for n, column in measure_columns(merged.columns)["sum_log_eig"]:
                fit = fit_linear(group[column], group["kde_entropy"])
                rows.append({"series": series, "N": n, "r": fit.r, "slope": fit.slope, "n": fit.n,
                             "success": fit.success})
    return pd.DataFrame(rows, columns=["series", "N", "r", "slope", "n", "success"])


def bayes_risk_table(merged: pd.DataFrame) -> pd.DataFrame:
    """Trained CE beside the exact Bayes risk per context length (rows of a `ce` table that carries
    `bayes_risk`, e.g. the parity experiment's), per data size where the rows have one: mean and
    spread over models (trained seeds).

    Examples
    --------
    >>> rows = pd.DataFrame({"series": ["a", "b"], "context_length": [17, 17], "ce": [0.466, 0.468],
    ...                      "bayes_risk": [0.4643, 0.4643]})
    >>> bayes_risk_table(rows)[["context_length", "ce", "gap", "relative_gap", "n_models"]].round(4).values.tolist()
    [[17.0, 0.467, 0.0027, 0.0058, 2.0]]
    """
    frame = merged.assign(gap=merged["ce"] - merged["bayes_risk"])
    keys = ["data_size", "context_length"] if "data_size" in frame.columns else ["context_length"]
    table = frame.groupby(keys).agg(
        bayes_risk=("bayes_risk", "mean"), ce=("ce", "mean"), ce_min=("ce", "min"), ce_max=("ce", "max"),
        gap=("gap", "mean"), abs_gap=("gap", lambda g: float(np.abs(g).mean())), n_models=("ce", "size")).reset_index()
    table.insert(table.columns.get_loc("abs_gap") + 1, "relative_gap",
                 table["gap"] / table["bayes_risk"].where(table["bayes_risk"] > 0))
    return table


# --- Bi-MLP features of a synthetic sweep ------------------------------------------------------


def bimlp_spectra(trials: pd.DataFrame, thresholds=DEFAULT_THRESHOLDS, n_values=DEFAULT_N_EIGENVALUES) -> pd.DataFrame:
    """Spectrum measures of the Bi-MLP feature of every trial that stored `feature_eigenvalues`.

    Parameters
    ----------
    trials : DataFrame
        A synthetic sweep's trials; `feature_eigenvalues` is a JSON list (descending) of the PCA
        eigenvalues of the 80-dimensional feature on the validation set.

    Returns
    -------
    DataFrame
        context_length, data_size, seed, best_val_loss, feature_dim, and intrinsic_dim_<t> /
        sum_log_eig_<N> columns (N beyond the feature's dimension: NaN); empty when no trial has one.

    Examples
    --------
    >>> trials = pd.DataFrame({"context_length": [8], "data_size": [100], "seed": [0], "best_val_loss": [0.4],
    ...                        "status": "ok", "feature_eigenvalues": ["[4.0, 1.0, 0.001]"]})
    >>> bimlp_spectra(trials, thresholds=[0.01], n_values=[2])[["intrinsic_dim_0.01", "sum_log_eig_2"]].values.round(4).tolist()
    [[2.0, -1.3863]]
    """
    if "feature_eigenvalues" not in trials.columns:
        return pd.DataFrame()
    rows = []
    ok = trials if "status" not in trials.columns else trials[trials["status"].astype(str) == "ok"]
    for _, trial in ok.iterrows():
        raw = trial["feature_eigenvalues"]
        if not isinstance(raw, str) or raw in ("", "nan", "None"):
            continue
        eig = np.asarray(json.loads(raw), dtype=float)
        if eig.size == 0:
            continue
        rows.append({"context_length": trial["context_length"], "data_size": trial.get("data_size", math.nan),
                     "seed": trial.get("seed", 0), "best_val_loss": trial.get("best_val_loss", math.nan),
                     "feature_dim": int(eig.size), **spectrum_measures(eig, thresholds, n_values)})
    frame = pd.DataFrame(rows)
    return frame.sort_values(["data_size", "context_length", "seed"]).reset_index(drop=True) if len(frame) else frame


def bimlp_dimension(spectra: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Intrinsic dimension at `threshold` per context length (rows) and data size (columns), mean over seeds."""
    column = threshold_column(threshold)
    return spectra.pivot_table(index="context_length", columns="data_size", values=column, aggfunc="mean")


# --- The report section -------------------------------------------------------------------------


def one_configuration_per_model(ce: pd.DataFrame, config_hash: Optional[str] = None) -> tuple[pd.DataFrame, list[str]]:
    """Each model's ce rows of one configuration, and a line per model that had others.

    A measurement's config_hash covers the model itself, so every model has its own; a model
    measured again with another protocol keeps stale rows at the context lengths the new grid
    dropped. Each model keeps `config_hash` where it has it, else its most recent configuration.
    """
    if not _validate.stored_hashes(ce):
        return ce, []
    kept, lines = [], []
    for series, rows in ce.groupby(_series_key(ce), sort=True):
        asked = config_hash if config_hash in _validate.stored_hashes(rows) else None
        choice = _validate.select_configuration(rows, asked)
        kept.append(choice.rows)
        if choice.left_out:
            lines.append(f"{series}: {choice.summary()}")
    return pd.concat(kept, ignore_index=True), lines


def _measured_section(ce, spectra, out: Path, figures: list) -> tuple[list[str], list[tuple[str, str]]]:
    from . import plots  # matplotlib only once something is drawn

    lines, sections = [], []
    laws = ce_law_fits(ce)
    (out / "ce_law.json").write_text(json.dumps({k: v.to_dict() for k, v in laws.items()}, indent=2))
    for name, law in laws.items():
        lines.append(f"{name}: CE vs context length, {law.summary()}")
    figures.append((plots.plot_ce_vs_context(ce.assign(series=_series_key(ce)), laws, out / "ce_vs_context.png"),
                    "Final-token cross-entropy vs context length, with C0 + C/l^γ"))
    if spectra.empty:
        return lines, sections
    merged = merged_measurements(ce, spectra)
    fits = ce_entropy_fits(merged)
    fits.to_csv(out / "ce_entropy_fits.csv", index=False)
    merged.drop(columns=["eigenvalues"]).to_csv(out / "ce_spectra.csv", index=False)
    for series, group in fits[fits["success"]].groupby("series"):
        for measure, sub in group.groupby("measure"):
            if measure == "kde_entropy":  # one estimate per row: its own line below
                continue
            best = sub.loc[sub["r2"].idxmax()]
            label = "t" if measure == "intrinsic_dim" else "N"
            lines.append(f"{series}: CE vs {MEASURES[measure]}: best R² = {number(best['r2'])} (r = {number(best['r'])}) "
                         f"at {label} = {best['parameter']:g}; R² over {label}: "
                         + ", ".join(f"{p:g}: {number(r, 3)}" for p, r in zip(sub["parameter"], sub["r2"])))
    if not fits["success"].any():
        lines.append("CE vs spectra: no linear fit possible (fewer than 3 context lengths, or constant measures)")
    figures.append((plots.plot_ce_vs_measures(merged, fits, out / "ce_vs_entropy.png"),
                    "CE vs intrinsic dimension and vs sum of log relative eigenvalues (default t, best N)"))
    figures.append((plots.plot_correlation_heatmap(fits, out / "ce_entropy_correlation.png"),
                    "Pearson r of CE with each measure, per threshold and per N"))
    kde_lines, kde_sections = _kde_and_bayes(merged, fits, out, figures)
    lines += kde_lines
    sections += kde_sections
    figures.append((plots.plot_spectra(merged, out / "spectra.png"),
                    "PCA spectra of the hidden state (eigenvalue / largest) per context length"))
    wide = fits.pivot_table(index=["measure", "parameter"], columns="series", values="r2").reset_index()
    sections.append(("CE vs intrinsic entropy: R² of the linear fits", html_table(wide)))
    return lines, sections


def _kde_and_bayes(merged, fits, out: Path, figures: list) -> tuple[list[str], list[tuple[str, str]]]:
    """CE vs KDE entropy and KDE vs sum of log eigenvalues (Fig. 2, 9 of the study); CE vs the exact
    Bayes risk and its C0 + C/l^γ fit where the ce rows carry one (the parity experiment)."""
    from . import entropy_plots

    lines, sections = [], []
    if "kde_entropy" in merged.columns and merged["kde_entropy"].notna().any():
        correlation = kde_sumlog_correlation(merged)
        correlation.to_csv(out / "kde_sumlog_correlation.csv", index=False)
        for _, fit in fits[(fits["measure"] == "kde_entropy") & fits["success"]].iterrows():
            line = (f"{fit['series']}: CE vs KDE entropy: slope {number(fit['slope'])} ± {number(fit['slope_se'], 2)} "
                    f"nats per nat, R = {number(fit['r'], 4)} ({fit['n']} context lengths)")
            usable = correlation[(correlation["series"] == fit["series"]) & correlation["success"]]
            if len(usable):
                best = usable.loc[usable["r"].abs().idxmax()]
                line += f"; KDE vs sum of log eigenvalues: r = {number(best['r'], 4)} at N = {best['N']:g}"
            lines.append(line)
        figures.append((entropy_plots.plot_kde(merged, fits, correlation, out / "kde_entropy.png"),
                        "CE vs KDE entropy, and KDE entropy vs sum of log relative eigenvalues (best N)"))
        wide = correlation.pivot_table(index="N", columns="series", values="r").reset_index()
        sections.append(("KDE entropy vs sum of log relative eigenvalues: Pearson r", html_table(wide)))
    if "bayes_risk" in merged.columns and merged["bayes_risk"].notna().any():
        table = bayes_risk_table(merged)
        table.to_csv(out / "ce_vs_bayes_risk.csv", index=False)
        from .bayes import fit_bayes_risk

        risk = table.groupby("context_length")["bayes_risk"].first()
        law = fit_bayes_risk(risk.index, risk.to_numpy())
        (out / "bayes_risk_law.json").write_text(json.dumps(law.to_dict(), indent=2))
        for size, rows in (table.groupby("data_size") if "data_size" in table.columns else [(None, table)]):
            lines.append(f"trained CE vs exact Bayes risk{'' if size is None else f' at D = {data_size(size)}'}: mean "
                         f"|CE − Bayes| = {number(rows['abs_gap'].mean(), 4)} nats over {len(rows)} context lengths, "
                         f"largest relative gap {number(rows['relative_gap'].abs().max(), 3)} (ce_vs_bayes_risk.csv)")
        lines.append("exact Bayes risk vs context length: " + law.summary())
        lines.append(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        figures.append((entropy_plots.plot_bayes(table, law, out / "ce_vs_bayes_risk.png"),
                        "Trained CE and exact Bayes risk vs context length, with C0 + C/l^γ fitted to the Bayes risk"))
        sections.append(("Trained CE vs exact Bayes risk", html_table(table) + html_text(law.summary())))
    return lines, sections


def _bimlp_section(trials, out: Path, figures: list) -> tuple[list[str], list[tuple[str, str]]]:
    from . import plots

    spectra = bimlp_spectra(trials)
    if spectra.empty:
        return [], []
    spectra.to_csv(out / "bimlp_spectra.csv", index=False)
    table = bimlp_dimension(spectra)
    largest = table.columns.max()
    lines = [f"Bi-MLP feature intrinsic dimension (t = {DEFAULT_THRESHOLD:g}) at D = {data_size(largest)}: "
             + ", ".join(f"l={l:g}: {number(v, 3)}" for l, v in table[largest].items())]
    figures.append((plots.plot_bimlp_dimension(spectra, out / "bimlp_intrinsic_dim.png"),
                    "Bi-MLP: intrinsic dimension of the feature vs context length, per data size"))
    shown = table.copy()
    shown.columns = [f"D={data_size(c)}" for c in shown.columns]
    return lines, [(f"Bi-MLP feature: intrinsic dimension (t = {DEFAULT_THRESHOLD:g})", html_table(shown.reset_index()))]


def entropy_report(results_dir, sweep: Optional[str] = None, out_dir=None,
                   config_hash: Optional[str] = None) -> tuple[str, str]:
    """The cross-entropy / intrinsic-entropy part of a sweep's report.

    Parameters
    ----------
    results_dir : path
        A results store (or one sweep's folder).
    sweep : str, optional
        The sweep; by default everything under `results_dir`.
    out_dir : path, optional
        Where CSV / JSON / PNG files go (default `<results_dir>/<sweep>/report`).
    config_hash : str, optional
        The configuration to report: the trials' (Bi-MLP spectra) and each model's measurements
        where they have it; by default the most recent of each.

    Returns
    -------
    (str, str)
        The text lines to print and an HTML fragment (h2 sections, tables, inline PNGs) to put in
        the report page; ("", "") when the sweep has neither measurements nor Bi-MLP spectra.

    Examples
    --------
    >>> text, fragment = entropy_report("results", sweep="measure-local")  # doctest: +SKIP
    """
    ce, spectra = load_measurements(results_dir, sweep, file_times=True)
    ce, config_lines = one_configuration_per_model(ce, config_hash)
    trials = load_results(results_dir, "trials", sweep, file_times=True)
    asked = config_hash if config_hash in _validate.stored_hashes(trials) else None
    trials = _validate.select_configuration(trials, asked).rows
    has_bimlp = "feature_eigenvalues" in trials.columns and trials["feature_eigenvalues"].notna().any()
    if ce.empty and not has_bimlp:
        return "", ""
    out = Path(out_dir) if out_dir is not None else Path(results_dir) / (sweep or "") / "report"
    out.mkdir(parents=True, exist_ok=True)
    lines, sections, figures = config_lines, [], []
    if not ce.empty:
        more_lines, more_sections = _measured_section(ce, spectra, out, figures)
        lines += more_lines
        sections += more_sections
    if has_bimlp:
        more_lines, more_sections = _bimlp_section(trials, out, figures)
        lines += more_lines
        sections += more_sections
    sections.append(("Intrinsic entropy plots", "".join(html_figure(path, alt) for path, alt in figures)))
    return "\n".join(lines), html_sections(sections)
