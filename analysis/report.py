"""The report of a sweep: tables, plots, one self-contained HTML page, and the text the CLI prints.

`run_report` is what `ctxscale analyze RESULTS_DIR [--sweep NAME] [--out REPORT_DIR]` calls.
Fitting lives in optimum / step_optimum / surface / bayes / entropy, drawing in plots, number
and HTML formats in present; this module only puts them together and writes files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd

from ctxscale.store import load_results, sweep_folders

from . import _validate
from .bayes import gap_summary, is_synthetic, synthetic_gap, synthetic_risk_curve
from .entropy import entropy_report
from .optimum import fit_optimal_context_law, optimal_context_length
from .present import data_size, html_figure, html_sections, html_table, html_text, number, write_html_page
from .surface import fit_loss_surface, surface_residuals
from .tasks import has_task_losses, task_loss_table


def write_entropy_report(out_dir, name: str, text: str, fragment: str) -> str:
    """The report of a sweep that has measurements only (e.g. `ctxscale measure`)."""
    report_path = Path(out_dir) / "report.html"
    text = f"sweep {name}:\n{text}\nreport: {report_path}"
    write_html_page(report_path, f"ctxscale report: {name}", text, fragment)
    return text


def write_report(trials: pd.DataFrame, out_dir, name: str = "sweep", n_boot: int = 1000,
                 surface_boot: int = 100, seed: int = 0, extra: tuple[str, str] = ("", "")) -> str:
    """Analyse one sweep's trials table, write its report into `out_dir`, return the summary text.

    Writes report.html (self-contained), optimal_context_length.csv, law.json, surface_fit.json,
    surface_optima.csv, optimum_increase.csv, the PNG plots, and for synthetic sweeps
    synthetic_gap.csv (and task_excess.csv when the trials carry per-task losses). `extra` is
    (text, HTML sections) to add, e.g. `entropy_report`'s.
    Raises ValueError when no trial is usable.
    """
    from . import plots  # matplotlib only once something is drawn

    out = Path(out_dir)
    ok, excluded = _validate.split_trials(trials)
    if ok.empty:
        raise ValueError(f"sweep {name!r}: no usable trials ({len(trials)} stored, all failed, diverged or without a loss)")
    out.mkdir(parents=True, exist_ok=True)
    # synthetic sweeps get the step estimator (l* from the exact Bayes risk), others the smooth one
    optimal = optimal_context_length(trials, n_boot=n_boot, seed=seed)
    law = fit_optimal_context_law(optimal, seed=seed)
    surface = fit_loss_surface(trials, n_boot=surface_boot, seed=seed)
    surface_optima = surface.optima_frame()

    optimal.table.to_csv(out / "optimal_context_length.csv", index=False)
    optimal.increase.to_csv(out / "optimum_increase.csv", index=False)
    (out / "law.json").write_text(json.dumps({"sweep": name, **law.to_dict()}, indent=2))
    (out / "surface_fit.json").write_text(json.dumps({"sweep": name, **surface.to_dict()}, indent=2))
    comparison = optimal.table[["data_size", "l_star", "l_star_low", "l_star_high", "bracketed"]].merge(
        surface_optima.rename(columns={c: f"surface_{c}" for c in surface_optima.columns if c != "data_size"}),
        on="data_size", how="left")
    comparison.to_csv(out / "surface_optima.csv", index=False)

    synthetic = is_synthetic(trials)
    gap = risk_curve = None
    if synthetic:
        gap = synthetic_gap(trials)
        risk_curve = synthetic_risk_curve(trials)
        gap.to_csv(out / "synthetic_gap.csv", index=False)

    figures = [(plots.plot_loss_curves(trials, optimal.table, out / "loss_vs_context.png", surface, risk_curve),
                "Loss vs context length per data size, with l* and the surface fit")]
    figures.append((plots.plot_optimal_law(optimal.table, law, out / "optimal_law.png", surface),
                    "Optimal context length vs data size, with the law and its band"))
    if surface.success:
        figures.append((plots.plot_surface_residuals(surface_residuals(surface, trials), out / "surface_residuals.png"),
                        "Residuals of the surface fit (log loss)"))
    if synthetic:
        figures.append((plots.plot_synthetic_gap(gap, risk_curve, out / "synthetic_bayes_risk.png"),
                        "Synthetic task: trained loss vs exact Bayes risk"))

    counts = _validate.exclusion_counts(excluded)
    excl = ", ".join(f"{k} {v}" for k, v in counts.items())
    lines = [f"sweep {name}: {len(trials)} trials, {len(ok)} used, {len(excluded)} excluded"
             + (f" ({excl})" if excl else "")]
    lines += optimal.summary().splitlines()
    lines.append(law.summary())
    if surface.success:
        implied = "; ".join(f"D = {data_size(r['data_size'])}: {number(r['l_star'])}" if r["bracketed"]
                            else f"D = {data_size(r['data_size'])}: {r['outside']} the grid"
                            for _, r in surface_optima.iterrows())
        lines.append(f"surface fit: R²(log loss) = {number(surface.r2)}, {surface.n} trials; its optima: {implied} "
                     "(details in surface_fit.json)")
    else:
        lines.append(surface.summary())
    if synthetic and len(gap):
        lines.append(gap_summary(gap))
    if extra[0]:
        lines.append(extra[0])
    report_path = out / "report.html"
    lines.append(f"report: {report_path}")
    text = "\n".join(lines)

    sections = [("Optimal context length per data size",
                 html_table(optimal.table.drop(columns=["note"])) + html_text(optimal.summary())),
                ("Law l*(D) = k · D^β", html_text(law.summary()) + html_table(law.table)),
                ("Surface fit", html_text(surface.summary()) + html_table(surface.table)
                 + "<p>Per-data-size estimates beside the optima the surface implies:</p>" + html_table(comparison))]
    if synthetic:
        wide = gap.pivot_table("gap", "context_length", "data_size")
        wide.columns = [f"D={data_size(c)}" for c in wide.columns]
        sections.append(("Synthetic: best loss − exact Bayes risk (nats)", html_table(wide.reset_index())))
    if synthetic and has_task_losses(trials):  # per-task losses stored: which tasks each cell learnt
        tasks = task_loss_table(trials)
        tasks.to_csv(out / "task_excess.csv", index=False)
        heat_map = plots.plot_task_excess(tasks, out / "task_excess.png")
        sections.append(("Which tasks each cell learnt", html_figure(
            heat_map, "Task × context length: task loss − its Bayes loss, per data size (task_excess.csv)")))
    sections.append(("Plots", "".join(html_figure(path, caption) for path, caption in figures)))
    write_html_page(report_path, f"ctxscale report: {name}", text, html_sections(sections) + extra[1])
    return text


def _has_usable(rows: pd.DataFrame) -> bool:
    """Whether any row can be analysed (a sweep whose trials all failed may lack a loss column)."""
    return "best_val_loss" in rows.columns and not _validate.split_trials(rows)[0].empty


def run_report(results_dir, sweep: Optional[str] = None, out_dir=None, n_boot: int = 1000,
               surface_boot: int = 100, seed: int = 0, config_hash: Optional[str] = None) -> str:
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
            text = write_report(trials, target, name=name, n_boot=n_boot, surface_boot=surface_boot,
                                seed=seed, extra=(entropy_text, entropy_html))
            texts.append(f"sweep {name}: {chosen.summary()}\n{text}" if chosen.config_hash else text)
        elif entropy_text:
            texts.append(write_entropy_report(target, name, entropy_text, entropy_html))
        else:
            skipped.append(f"sweep {name}: no usable trials ({len(trials)} stored, none with status 'ok' and a loss)"
                           + (f"; {chosen.summary()}" if chosen.config_hash else ""))
    if not texts:
        raise ValueError(f"{where}: no usable trials or measurements; " + "; ".join(skipped))
    return "\n\n".join(texts + skipped)
