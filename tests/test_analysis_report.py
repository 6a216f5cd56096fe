"""run_report: from a results store to files and printed text, on generated and on real sweeps."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import run_report, synthetic_bayes_risk
from analysis.examples import surface_trials
from ctxscale.store import StoreError, load_results, write_trial

GRID = [8, 11, 16, 23, 32, 45, 64, 91, 128]
TASKS = json.dumps([[3, 1], [2, 5], [20, 7], [40, 30], [150, 4]])
FAST = dict(n_boot=200, surface_boot=5)


def _store(root, sweep, sizes, statuses=None, synthetic=True):
    """Write generated trials into a results store, as a sweep would (history first, then the row)."""
    trials = surface_trials(GRID, sizes, seeds=(0, 1), noise=0.002, rng=len(sweep))
    statuses = statuses or {}
    for i, r in trials.iterrows():
        status = statuses.get(i, "ok")
        row = dict(experiment="synthetic" if synthetic else "gpt", context_length=int(r.context_length),
                   data_size=int(r.data_size), seed=int(r.seed), status=status,
                   best_val_loss=float(r.best_val_loss) if status == "ok" else float("nan"),
                   best_epoch=3, final_train_loss=1.0, error="" if status == "ok" else "boom", wall_s=1.0,
                   samples_per_s=100.0)
        if synthetic:
            row.update(tasks=TASKS, string_length=100,
                       bayes_risk=float(synthetic_bayes_risk(TASKS, r.context_length)))
        write_trial(root, sweep, f"t{i:03d}", row, [dict(epoch=0, train_loss=1.0, val_loss=1.0, best_val_loss=1.0)])
    return trials


def test_report_files_and_text(tmp_path):
    # smooth curves without a Bayes-risk column: the smooth estimator (a GPT-like sweep)
    _store(tmp_path, "gen", [1e3, 1e4, 1e5, 3e5], statuses={0: "failed", 5: "diverged"}, synthetic=False)
    text = run_report(tmp_path, sweep="gen", **FAST)
    out = tmp_path / "gen" / "report"
    for name in ("report.html", "optimal_context_length.csv", "law.json", "surface_fit.json", "surface_optima.csv",
                 "loss_vs_context.png", "optimal_law.png", "surface_residuals.png"):
        assert (out / name).stat().st_size > 0, name
    lines = text.splitlines()
    assert lines[0] == "sweep gen: 72 trials, 70 used, 2 excluded (diverged 1, failed 1)"
    assert "is the shortest length searched; l* may lie below" in text  # D = 1e3: l* = 6.4 < 8
    assert sum(line.startswith("  D =") and "l* = " in line for line in lines) == 3
    assert "β = " in text and "(95 % interval)" in text
    assert lines[-1] == f"report: {out / 'report.html'}"

    opt = pd.read_csv(out / "optimal_context_length.csv")
    assert opt["data_size"].tolist() == [1e3, 1e4, 1e5, 3e5]
    assert opt["n_excluded"].sum() == 2 and opt["bracketed"].tolist() == [False, True, True, True]
    law = json.loads((out / "law.json").read_text())
    assert law["sweep"] == "gen" and law["success"] and law["exponent_low"] < law["exponent"] < law["exponent_high"]
    html = (out / "report.html").read_text()
    # loss vs context, the law, the learning curves (from the history), the surface's residuals
    assert html.count("data:image/png;base64,") == 4 and "<table" in html and "src=\"http" not in html
    assert (out / "learning_curves.png").stat().st_size > 0
    assert html.count("optimal context length per data size (95 %") == 1  # the summary, once
    assert html.index("<h2>Figures</h2>") < html.index("<h2>Optimal context length per data size</h2>")


def test_synthetic_report_uses_the_step_estimator(tmp_path):
    from analysis.calibration import simulate_step_sweep

    trials, truth = simulate_step_sweep("own", [20, 24, 32, 48, 64, 80], [50_000, 100_000, 200_000], 2, 0.002,
                                        np.random.default_rng(5))
    for i, r in trials.iterrows():
        write_trial(tmp_path, "syn", f"t{i:03d}", dict(r, experiment="synthetic"), [])
    text = run_report(tmp_path, sweep="syn", **FAST)
    out = tmp_path / "syn" / "report"
    for name in ("synthetic_gap.csv", "synthetic_bayes_risk.png", "optimum_increase.csv"):
        assert (out / name).stat().st_size > 0, name
    assert "step estimator" in text and "P(l* rises)" in text
    opt = pd.read_csv(out / "optimal_context_length.csv")
    assert (opt["estimator"] == "step").all()
    for _, r in opt.iterrows():  # the printed optimum is a candidate length, the truth inside its interval
        assert r["l_star_low"] <= truth[r["data_size"]] <= r["l_star_high"]
        assert not r["bracketed"] or float(r["l_star"]).is_integer()
    assert opt["bracketed"].any()


def test_every_sweep_in_the_folder_and_out_dir(tmp_path):
    _store(tmp_path, "a", [1e4, 1e5, 3e5])
    _store(tmp_path, "b", [1e4, 1e5, 3e5], synthetic=False)
    text = run_report(tmp_path, **FAST)
    assert "sweep a:" in text and "sweep b:" in text
    assert (tmp_path / "a" / "report" / "synthetic_gap.csv").exists()
    assert (tmp_path / "b" / "report" / "report.html").exists()
    assert not (tmp_path / "b" / "report" / "synthetic_gap.csv").exists()  # not a synthetic sweep
    run_report(tmp_path, out_dir=tmp_path / "out", **FAST)
    assert (tmp_path / "out" / "a" / "report.html").exists() and (tmp_path / "out" / "b" / "law.json").exists()
    run_report(tmp_path / "a", out_dir=tmp_path / "single", **FAST)  # a sweep's own folder
    assert (tmp_path / "single" / "report.html").exists()


def test_no_usable_trials_names_the_folder(tmp_path):
    n = len(GRID) * 2
    _store(tmp_path, "dead", [1e4], statuses={i: "failed" for i in range(n)})
    with pytest.raises(ValueError, match=f"{tmp_path}.*no usable trials"):
        run_report(tmp_path, sweep="dead", **FAST)
    with pytest.raises(StoreError, match="no sweep named 'nope'"):
        run_report(tmp_path, sweep="nope")
    with pytest.raises(ValueError, match="no trials stored"):
        run_report((tmp_path / "empty").mkdir() or tmp_path / "empty")


def test_one_data_size_still_reports(tmp_path):
    _store(tmp_path, "one", [1e5])
    text = run_report(tmp_path, **FAST)
    assert "law l* = k·D^β: not fitted" in text and "surface fit: not fitted" in text
    assert (tmp_path / "one" / "report" / "loss_vs_context.png").exists()


def test_report_on_a_real_tiny_sweep(synthetic_results, tmp_path):
    """The results of a real (tiny) Ray sweep, from tests/conftest.py's `synthetic_results`."""
    trials = load_results(synthetic_results, sweep="tiny")
    assert len(trials) and "bayes_risk" in trials.columns
    text = run_report(synthetic_results, sweep="tiny", out_dir=tmp_path / "report", n_boot=200, surface_boot=5)
    out = tmp_path / "report"
    for name in ("report.html", "optimal_context_length.csv", "law.json", "synthetic_gap.csv",
                 "loss_vs_context.png", "synthetic_bayes_risk.png"):
        assert (out / name).exists(), name
    assert text.splitlines()[0].startswith("sweep tiny:") and f"report: {out / 'report.html'}" in text
    ok = trials[trials["status"] == "ok"]
    opt = pd.read_csv(out / "optimal_context_length.csv")
    assert set(opt["data_size"]) == set(trials["data_size"])
    assert opt["n_trials"].sum() == len(ok) and opt["n_excluded"].sum() == len(trials) - len(ok)
    for _, row in opt.iterrows():  # every data size gets an estimate or says why not
        assert (row["bracketed"] and math.isfinite(row["l_star"])) or not row["bracketed"]
    # the sweep's stored Bayes risk agrees with the analysis' own formula
    for _, row in ok.iterrows():  # a failed trial's row may lack the task columns
        expected = synthetic_bayes_risk(row["tasks"], row["context_length"], int(row["string_length"]))
        assert row["bayes_risk"] == pytest.approx(expected, abs=1e-12)
    # no trained model beats the Bayes risk by more than validation-set noise
    gap = pd.read_csv(out / "synthetic_gap.csv")
    assert (gap["gap"] > -0.05).all(), gap[gap["gap"] <= -0.05]
    assert np.isfinite(gap["bayes_risk"]).all()


def test_analyze_names_the_trials_stopped_on_a_plateau(tmp_path):
    from test_analysis_history import gpt_history

    history = gpt_history()
    for trial_id, rows in history.groupby("trial_id"):
        first = rows.iloc[0]
        row = dict(experiment="gpt", context_length=int(first.context_length), data_size=int(first.data_size), seed=0,
                   status="ok", best_val_loss=float(rows.val_loss.min()), final_train_loss=1.0, wall_s=1.0)
        write_trial(tmp_path, "gpt", trial_id, row, rows[["step", "val_loss"]].to_dict("records"))
    text = run_report(tmp_path, sweep="gpt", **FAST)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("stopped on a plateau? 1 trial(s)"))
    assert lines[at + 1].startswith("  l512_d5000000_s0_abcd0123: best 3.93 at step 1,600, stopped at 1,900; l = 1,024")
    assert (tmp_path / "gpt" / "report" / "learning_curves.png").stat().st_size > 10_000


def test_learning_curves_of_many_data_sizes_wrap_into_rows(tmp_path):
    # eight data sizes in one row drew eight thumbnails (3,322 x 418 pixels for the study's grid)
    from matplotlib.image import imread

    from analysis.plots import plot_learning_curves

    sizes = [5e4, 7.5e4, 8.5e4, 1e5, 1.5e5, 2e5, 4e5, 2e6]
    rows, history = [], []
    for size in sizes:
        for length in (27, 36, 47):
            trial_id = f"l{length}_d{int(size)}_s0"
            rows.append(dict(trial_id=trial_id, context_length=length, data_size=size, seed=0, status="ok"))
            history += [dict(trial_id=trial_id, epoch=epoch, val_loss=0.7 - 0.01 * epoch) for epoch in range(1, 6)]
    height, width = imread(plot_learning_curves(pd.DataFrame(history), pd.DataFrame(rows), tmp_path / "lc.png")).shape[:2]
    assert width / height < 3  # two rows of four
