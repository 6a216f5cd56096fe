"""Cross-entropy against context length and against the intrinsic entropy of hidden states.

Reads the `ce` and `spectra` tables that `ctxscale measure` stores, and the `feature_eigenvalues`
of Bi-MLP trials of a synthetic sweep. The study's claims (../shared/notes/paper.md) checked here:

- CE(l) = C0 + C / l^γ (fitted with `analysis.fit_bayes_risk`);
- CE is linear in the intrinsic entropy measured from hidden states: in the thresholded-PCA
  intrinsic dimension (every threshold) and in the sum of log relative eigenvalues (every N);
  reported as linear fits with R² and Pearson r (the study: |r| ≈ 0.99).

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
from .present import data_size, html_figure, html_sections, html_table, number
from .results import LinearFit

MEASURES = {"intrinsic_dim": "intrinsic dimension (threshold t)", "sum_log_eig": "sum of log relative eigenvalues (first N)"}


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
    merged = ce[keys + ["ce"] + (["ce_se"] if "ce_se" in ce.columns else [])].merge(
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
    columns = ["series", "measure", "parameter", *[f.name for f in dataclasses.fields(LinearFit)]]
    return pd.DataFrame(rows, columns=columns)


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
    figures.append((plots.plot_spectra(merged, out / "spectra.png"),
                    "PCA spectra of the hidden state (eigenvalue / largest) per context length"))
    wide = fits.pivot_table(index=["measure", "parameter"], columns="series", values="r2").reset_index()
    sections.append(("CE vs intrinsic entropy: R² of the linear fits", html_table(wide)))
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
