"""The report of a sweep: tables, plots, one self-contained HTML page, and the text the CLI prints.

`run_report` is what `ctxscale analyze RESULTS_DIR [--sweep NAME] [--out REPORT_DIR]` calls.
Fitting lives in optimum / step_optimum / surface / bayes / entropy, drawing in plots, number
and HTML formats in present; this module only puts them together and writes files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from ctxscale.store import load_results, sweep_folders

from . import _validate
from .bayes import gap_summary, is_synthetic, synthetic_gap, synthetic_risk_curve
from .entropy import entropy_report
from .history import cap_lines, cap_stops, plateau_lines, plateau_stops, progress_column, with_coordinates
from .optimum import fit_optimal_context_law, optimal_context_length
from .present import data_size, html_figure, html_sections, html_table, number, write_html_page
from .results import OptimalLawFit, OptimumResult, SurfaceFit
from .surface import (disagreement_text, fit_loss_surface, optima_beside_l_star, parameter_limits, parameter_text,
                      surface_residuals)
from .tasks import has_task_losses, task_loss_table


# `ctxscale analyze`'s bootstrap of the per-data-size optima; the adaptive search reads l* the same way
ANALYZE_N_BOOT, ANALYZE_SEED = 1000, 0


def write_entropy_report(out_dir, name: str, text: str, fragment: str) -> str:
    """The report of a sweep that has measurements only (e.g. `ctxscale measure`)."""
    report_path = Path(out_dir) / "report.html"
    text = f"sweep {name}:\n{text}\nreport: {report_path}"
    write_html_page(report_path, f"ctxscale report: {name}", text, fragment)
    return text


@dataclass(frozen=True)
class SweepAnalysis:
    """Every fit of one sweep, made once; the report's files, text and page are written from it."""

    name: str
    trials: pd.DataFrame
    excluded: pd.DataFrame
    optimal: OptimumResult
    law: OptimalLawFit
    surface: SurfaceFit
    comparison: pd.DataFrame  # l* per data size beside the surface's optimum
    gap: Optional[pd.DataFrame]  # synthetic sweeps: best loss − exact Bayes risk per cell
    risk_curve: Optional[pd.DataFrame]
    tasks: Optional[pd.DataFrame]  # synthetic sweeps with per-task losses: tasks.task_loss_table
    history: pd.DataFrame  # evaluations placed on the grid (empty where none are stored)
    plateau: pd.DataFrame  # history.plateau_stops: trials that look stopped on a plateau
    capped: pd.DataFrame  # history.cap_stops: trials that ran into max_steps / max_epochs


def analyse_sweep(trials: pd.DataFrame, name: str = "sweep", n_boot: int = ANALYZE_N_BOOT, surface_boot: int = 100,
                  seed: int = ANALYZE_SEED, history: Optional[pd.DataFrame] = None) -> SweepAnalysis:
    """Fit l* per data size (synthetic sweeps: the step estimator, from the exact Bayes risk;
    others the smooth one), the law, the surface, and read the history. Raises ValueError when no
    trial is usable."""
    ok, excluded = _validate.split_trials(trials)
    if ok.empty:
        raise ValueError(f"sweep {name!r}: no usable trials ({len(trials)} stored, all failed, diverged or without a loss)")
    optimal = optimal_context_length(trials, n_boot=n_boot, seed=seed)
    surface = fit_loss_surface(trials, n_boot=surface_boot, seed=seed)
    synthetic = is_synthetic(trials)
    placed = _placed_history(history, trials)
    return SweepAnalysis(
        name=name, trials=trials, excluded=excluded, optimal=optimal, law=fit_optimal_context_law(optimal, seed=seed),
        surface=surface, comparison=optima_beside_l_star(surface, optimal.table),
        gap=synthetic_gap(trials) if synthetic else None,
        risk_curve=synthetic_risk_curve(trials) if synthetic else None,
        tasks=task_loss_table(trials) if synthetic and has_task_losses(trials) else None,
        history=placed, plateau=plateau_stops(placed) if len(placed) else pd.DataFrame(),
        capped=cap_stops(placed, trials) if len(placed) else pd.DataFrame())


def _placed_history(history: Optional[pd.DataFrame], trials: pd.DataFrame) -> pd.DataFrame:
    """The evaluations that carry a validation loss, placed on the grid (empty where there are none)."""
    if history is None or history.empty or "val_loss" not in history or "trial_id" not in history:
        return pd.DataFrame()
    placed = with_coordinates(history, trials)
    return placed if placed[progress_column(placed)].notna().any() else pd.DataFrame()


def write_report(trials: pd.DataFrame, out_dir, name: str = "sweep", n_boot: int = ANALYZE_N_BOOT,
                 surface_boot: int = 100, seed: int = ANALYZE_SEED, extra: tuple[str, str] = ("", ""),
                 history: Optional[pd.DataFrame] = None) -> str:
    """Analyse one sweep's trials table, write its report into `out_dir`, return the summary text.

    Writes report.html (self-contained), optimal_context_length.csv, law.json, surface_fit.json,
    surface_optima.csv, optimum_increase.csv, the PNG plots (learning_curves.png from `history`,
    the sweep's history table, when given), and for synthetic sweeps synthetic_gap.csv (and
    task_excess.csv when the trials carry per-task losses). `extra` is (text, HTML sections) to
    add, e.g. `entropy_report`'s. Raises ValueError when no trial is usable.
    """
    sweep = analyse_sweep(trials, name, n_boot, surface_boot, seed, history)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_tables(sweep, out)
    report_path = out / "report.html"
    text = "\n".join(summary_lines(sweep) + ([extra[0]] if extra[0] else []) + [f"report: {report_path}"])
    sections = _page_sections(sweep, out)
    write_html_page(report_path, f"ctxscale report: {name}", text, html_sections(sections) + extra[1])
    return text


def _write_tables(sweep: SweepAnalysis, out: Path) -> None:
    sweep.optimal.table.to_csv(out / "optimal_context_length.csv", index=False)
    sweep.optimal.increase.to_csv(out / "optimum_increase.csv", index=False)
    (out / "law.json").write_text(json.dumps({"sweep": sweep.name, **sweep.law.to_dict()}, indent=2))
    (out / "surface_fit.json").write_text(json.dumps({"sweep": sweep.name, **sweep.surface.to_dict()}, indent=2))
    sweep.comparison.to_csv(out / "surface_optima.csv", index=False)
    if sweep.gap is not None:
        sweep.gap.to_csv(out / "synthetic_gap.csv", index=False)
    if sweep.tasks is not None:
        sweep.tasks.to_csv(out / "task_excess.csv", index=False)


def summary_lines(sweep: SweepAnalysis) -> list[str]:
    """The text `analyze` prints for one sweep (without the report's path)."""
    ok_count = len(sweep.trials) - len(sweep.excluded)
    counts = ", ".join(f"{k} {v}" for k, v in _validate.exclusion_counts(sweep.excluded).items())
    lines = [f"sweep {sweep.name}: {len(sweep.trials)} trials, {ok_count} used, {len(sweep.excluded)} excluded"
             + (f" ({counts})" if counts else "")]
    lines += sweep.optimal.summary().splitlines()
    lines.append(sweep.law.summary())
    lines += _surface_lines(sweep.surface, sweep.comparison)
    if sweep.gap is not None and len(sweep.gap):
        lines.append(gap_summary(sweep.gap))
    if len(sweep.plateau):
        lines += plateau_lines(sweep.plateau, progress_column(sweep.history))
    if len(sweep.capped):
        lines += cap_lines(sweep.capped, progress_column(sweep.history))
    return lines


def _surface_lines(surface: SurfaceFit, comparison: pd.DataFrame) -> list[str]:
    if not surface.success:
        return [surface.summary()]
    implied = "; ".join(f"D = {data_size(r['data_size'])}: " + (
        f"{number(r['l_star'], 3)} [{number(r['l_star_low'], 3)}, {number(r['l_star_high'], 3)}]"
        if r["bracketed"] else f"{r['outside']} the grid") for _, r in surface.optima_frame().iterrows())
    lines = [f"surface fit: R²(log loss) = {number(surface.r2)}, {surface.n} trials; its optima: {implied}",
             f"  parameters: {parameter_text(surface)} (surface_fit.json)"]
    disagreement = disagreement_text(surface, comparison)
    return lines + ([disagreement] if disagreement else [])


def _page_sections(sweep: SweepAnalysis, out: Path) -> list[tuple[str, str]]:
    """The report page below its summary: the main figures first, then tables and diagnostics."""
    from . import plots  # matplotlib only once something is drawn

    figures = [html_figure(plots.plot_loss_curves(sweep.trials, sweep.optimal.table, out / "loss_vs_context.png",
                                                  sweep.surface, sweep.risk_curve),
                           "Loss vs context length per data size, with l* and the surface fit"),
               html_figure(plots.plot_optimal_law(sweep.optimal.table, sweep.law, out / "optimal_law.png", sweep.surface),
                           "Optimal context length vs data size, with the law and its band")]
    if len(sweep.history):
        figures.append(html_figure(plots.plot_learning_curves(sweep.history, sweep.trials, out / "learning_curves.png"),
                                   "Validation loss per evaluation, one panel per data size (learning_curves.png)"))
    sections = [("Figures", "".join(figures)),
                ("Optimal context length per data size", html_table(sweep.optimal.table.drop(columns=["note"]))),
                ("Law l*(D) = k · D^β", html_table(sweep.law.table)),
                ("Surface fit", _surface_html(sweep, out, plots))]
    if sweep.gap is not None:
        sections.append(("Synthetic task: trained loss vs exact Bayes risk", _synthetic_html(sweep, out, plots)))
    return sections


def _surface_html(sweep: SweepAnalysis, out: Path, plots) -> str:
    surface = sweep.surface
    if not surface.success:
        return f"<p>{surface.summary()}</p>"
    limits = parameter_limits(surface)
    table = surface.table.assign(bound=[limits.get(name, "") for name in surface.table["parameter"]])
    residuals = plots.plot_surface_residuals(surface_residuals(surface, sweep.trials), out / "surface_residuals.png")
    return (html_table(table) + "<p>Per-data-size estimates beside the optima the surface implies:</p>"
            + html_table(sweep.comparison) + html_figure(residuals, "Residuals of the surface fit (log loss)"))


def _synthetic_html(sweep: SweepAnalysis, out: Path, plots) -> str:
    wide = sweep.gap.pivot_table("gap", "context_length", "data_size")
    wide.columns = [f"D={data_size(c)}" for c in wide.columns]
    content = (html_figure(plots.plot_synthetic_gap(sweep.gap, sweep.risk_curve, out / "synthetic_bayes_risk.png"),
                           "Trained loss vs exact Bayes risk, and the gap between them")
               + "<p>Best loss − exact Bayes risk (nats):</p>" + html_table(wide.reset_index()))
    if sweep.tasks is not None:  # per-task losses stored: which tasks each cell learnt
        content += html_figure(plots.plot_task_excess(sweep.tasks, out / "task_excess.png"),
                               "Which tasks each cell learnt: task loss − its Bayes loss, per data size (task_excess.csv)")
    return content


def _has_usable(rows: pd.DataFrame) -> bool:
    """Whether any row can be analysed (a sweep whose trials all failed may lack a loss column)."""
    return "best_val_loss" in rows.columns and not _validate.split_trials(rows)[0].empty


def run_report(results_dir, sweep: Optional[str] = None, out_dir=None, n_boot: int = ANALYZE_N_BOOT,
               surface_boot: int = 100, seed: int = ANALYZE_SEED, config_hash: Optional[str] = None) -> str:
    """Analyse the sweep(s) stored under `results_dir` and write a report for each.

    Parameters
    ----------
    results_dir : path
        A results store (one folder per sweep) or one sweep's folder.
    sweep : str, optional
        The sweep to analyse; by default every sweep in the folder.
    out_dir : path, optional
        Where the report goes (default `<results_dir>/<sweep>/report`); with several sweeps, one
        sub-folder per sweep under it.
    n_boot, surface_boot, seed
        Bootstrap sizes of the per-data-size optima and of the surface fit, and their seed.
    config_hash : str, optional
        The configuration to analyse (only sweeps that stored it are reported). By default each
        sweep's most recent one: the configuration of its newest trial row (`finished_at`). The
        text says which hash was used and how many rows of other configurations were left out.

    Returns
    -------
    str
        The text to print: l* per data size with its 95 % interval (or on which side of the grid
        the optimum lies), the law with the interval for β, the excluded trials, the report path.

    Raises
    ------
    ValueError
        Naming the folder, when it holds no usable trials (ctxscale.store.StoreError, also a
        ValueError, when the folder or sweep does not exist); naming the stored hashes, when
        `config_hash` is none of them.

    Examples
    --------
    >>> print(run_report("results", sweep="synthetic"))  # doctest: +SKIP
    """
    root = Path(results_dir)
    folders = sweep_folders(root, sweep)
    where = f"{root}" + (f" (sweep {sweep!r})" if sweep else "")
    if not folders:
        raise ValueError(f"{where}: no trials stored")
    if config_hash is not None:  # only the sweeps that stored it; none: say which hashes there are
        known = {f.name: _validate.stored_hashes(load_results(f, "trials")) + _validate.stored_hashes(
            load_results(f, "ce")) for f in folders}
        folders = [f for f in folders if config_hash in known[f.name]]
        if not folders:
            listed = "; ".join(f"sweep {n}: {', '.join(h) or 'none'}" for n, h in known.items())
            raise ValueError(f"{where}: no configuration {config_hash!r} stored (config_hash values: {listed})")
    texts, skipped = [], []
    for folder in folders:
        name = folder.name
        target = folder / "report" if out_dir is None else (
            Path(out_dir) if len(folders) == 1 else Path(out_dir) / name)
        stored = load_results(folder, "trials", file_times=True)
        asked = config_hash if config_hash in _validate.stored_hashes(stored) else None
        chosen = _validate.select_configuration(stored, asked)  # one configuration per fit
        trials = chosen.rows.drop(columns=["stored_at"], errors="ignore")
        # measurements (ce / spectra tables) and Bi-MLP spectra add their own section
        entropy_text, entropy_html = entropy_report(folder, None, target, config_hash=chosen.config_hash or config_hash)
        if not trials.empty and _has_usable(trials):
            history = load_results(folder, "history")  # evaluations of the trials analysed, for their curves
            history = history[history["trial_id"].isin(trials["trial_id"])] if "trial_id" in history.columns.intersection(
                trials.columns) else history
            text = write_report(trials, target, name=name, n_boot=n_boot, surface_boot=surface_boot,
                                seed=seed, extra=(entropy_text, entropy_html), history=history)
            texts.append(f"sweep {name}: {chosen.summary()}\n{text}" if chosen.config_hash else text)
        elif entropy_text:
            texts.append(write_entropy_report(target, name, entropy_text, entropy_html))
        else:
            skipped.append(f"sweep {name}: no usable trials ({len(trials)} stored, none with status 'ok' and a loss)"
                           + (f"; {chosen.summary()}" if chosen.config_hash else ""))
    if not texts:
        raise ValueError(f"{where}: no usable trials or measurements; " + "; ".join(skipped))
    return "\n\n".join(texts + skipped)
