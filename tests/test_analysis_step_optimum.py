"""The synthetic (step) estimator of l*: calibrated intervals, honest collapse, 'not learnt'."""
import json
import math

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis import forms
from analysis.calibration import coverage, study_tasks
from analysis.step_optimum import step_optimum

GRID = [20, 24, 32, 48, 64, 80]
SIZES = [50_000, 100_000, 200_000]


def _estimate(trials, n_boot, seed):
    return step_optimum(trials, n_boot=n_boot, seed=seed).table


@pytest.mark.parametrize("family, seeds, noise", [
    ("own", 3, 0.002), ("own", 1, 0.01), ("power", 1, 0.005), ("logistic", 3, 0.005), ("collapse", 1, 0.005),
])
def test_intervals_cover_the_known_optimum(family, seeds, noise):
    # a small version of bench/calibrate_optimum.py: 8 sweeps x 3 data sizes per row
    res = coverage(_estimate, family, GRID, SIZES, seeds, noise, reps=8, seed=11, n_boot=150)
    assert res["placed"] == res["cases"]
    assert res["coverage"] >= 0.9, res
    if family in ("own", "collapse"):
        # on this sparse grid a collapse leaves a whole gap open (15 of a 60-long span); smooth
        # excesses that are not the model's own form can be wider here (see the bench's table)
        assert res["median_width"] <= (GRID[-1] - GRID[0]) / 4, res
    if family == "own":
        assert res["exact"] >= 0.8, res


def _trials(losses: dict, seeds=(0,)) -> pd.DataFrame:
    tasks = json.dumps(study_tasks())
    return pd.DataFrame([{"context_length": l, "data_size": d, "seed": s, "best_val_loss": v * (1 + 0.001 * s),
                          "status": "ok", "tasks": tasks, "string_length": 100}
                         for d, curve in losses.items() for l, v in zip(GRID, curve) for s in seeds])


def _risk(lengths):
    return forms.synthetic_bayes_risk(study_tasks(), np.asarray(lengths, float), 100)


def test_a_collapse_between_two_grid_lengths_gives_the_whole_gap():
    # learnt every task up to l = 48, nothing at 64 and 80 (loss back to ln 2), as the default
    # CPU sweep does at D = 100,000: l* may be anywhere from 47 (same Bayes risk as 48) to 62
    risk = _risk(GRID)
    learnt = risk + np.array([0.0, 0.002, 0.004, 0.006, 0.0, 0.0])
    learnt[4:] = math.log(2)
    larger = risk + np.array([0.0, 0.001, 0.002, 0.003, 0.010, 0.030])
    smaller = risk + np.array([0.0, 0.004, 0.012, 0.05, 0.0, 0.0])
    smaller[4:] = math.log(2)
    fit = step_optimum(_trials({50_000: smaller, 100_000: learnt, 200_000: larger}, seeds=(0, 1, 2)), n_boot=300)
    row = fit.table.set_index("data_size").loc[100_000]
    assert row["learnt"]
    assert row["l_star_low"] <= 47 and row["l_star_high"] == 62
    assert "collapsed at l = 64, 80" in row["note"]
    assert set(fit.candidates) >= {47, 50, 52, 55, 58, 62}


def test_a_data_size_that_learnt_nothing_has_no_optimum_and_stays_out_of_the_law():
    risk = _risk(GRID)
    nothing = np.full(len(GRID), math.log(2)) - 0.0003
    some = risk + 0.002 * (np.array(GRID) / 20.0) ** 3
    more = risk + 0.0005 * (np.array(GRID) / 20.0) ** 3
    fit = step_optimum(_trials({50_000: nothing, 100_000: some, 200_000: more}), n_boot=200)
    row = fit.table.set_index("data_size").loc[50_000]
    assert not row["learnt"] and np.isnan(row["l_star"]) and np.isnan(row["l_star_low"])
    assert row["note"].startswith("not learnt")
    assert "not learnt" in fit.summary()
    law = analysis.fit_optimal_context_law(fit.table)
    assert 50_000 not in law.data_size
    # the increase probabilities are over consecutive learnt sizes only
    assert fit.increase[["data_size", "next_data_size"]].values.tolist() == [[100_000, 200_000]]


def test_increase_probabilities_and_candidate_shares():
    fit = step_optimum(_trials({d: _risk(GRID) + 0.03 * (np.array(GRID) / 40.0) ** 4 * (1e5 / d)
                                for d in SIZES}, seeds=(0, 1, 2)), n_boot=300)
    assert fit.table["l_star"].is_monotonic_increasing
    inc = fit.increase
    assert len(inc) == 2 and ((inc["p_higher"] <= inc["p_not_lower"]) & (inc["p_not_lower"] <= 1)).all()
    assert (inc["p_not_lower"] > 0.9).all()
    for text in fit.table["top_candidates"]:
        share = float(text.split(",")[0].split(":")[1].strip().rstrip("%"))
        assert 0 < share <= 100
    assert json.dumps(fit.to_dict())  # JSON-safe


def test_optimal_context_length_picks_the_estimator_by_the_trials():
    trials = _trials({d: _risk(GRID) + 0.03 * (np.array(GRID) / 40.0) ** 4 * (1e5 / d) for d in SIZES})
    assert set(analysis.optimal_context_length(trials, n_boot=50).table["estimator"]) == {"step"}
    smooth = trials.drop(columns=["tasks", "string_length"])
    table = analysis.optimal_context_length(smooth, n_boot=50).table
    assert "estimator" not in table.columns or set(table["estimator"]) != {"step"}


def test_mixed_configurations_are_refused():
    trials = _trials({d: _risk(GRID) + 0.01 for d in SIZES})
    trials["config_hash"] = np.where(trials["data_size"] == 50_000, "aaaa1111", "bbbb2222")
    with pytest.raises(ValueError, match="aaaa1111.*bbbb2222|bbbb2222.*aaaa1111"):
        step_optimum(trials)
