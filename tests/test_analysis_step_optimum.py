"""The synthetic (step) estimator of l*: calibrated intervals, honest collapse, 'not learnt'."""
import json
import math

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis import forms
import analysis.calibration
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
    assert "collapsed from l = 64 on" in row["note"]
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


PAPER_GRID = [27, 32, 36, 40, 43, 47, 52, 58, 63, 71, 84, 94]
# share of the learnable loss left unlearnt: a floor, then a cliff at a length that grows with D
PAPER_SHARES = {50_000: (1.0, 24, 3), 75_000: (0.605, 31.5, 1.5), 85_000: (0.5, 34.5, 1.5), 100_000: (0.3, 38.5, 1.2),
                150_000: (0.05, 66, 3), 200_000: (0.03, 68, 3), 400_000: (0.004, 200, 5), 2_000_000: (0.001, 400, 5)}


def _paper_like(noise=0.003, rng=0):
    """Three seeds of the study grid shaped like its GPU run (issue 22): grid best 27, 32, 36, 58,
    58, 94, 94 for D = 75k .. 2M; best losses 0.61, 0.57 and 0.48 at 75k, 85k and 100k, whose
    first four lengths are the run's 0.541, 0.506, 0.477, 0.606; nothing learnt at 50k."""
    rng = np.random.default_rng(rng)
    lengths = np.array(PAPER_GRID, float)
    risk = _risk(lengths)
    means = {}
    for size, (floor, cliff, width) in PAPER_SHARES.items():
        share = (floor + (1 - floor) / (1 + np.exp(-(lengths - cliff) / width))) * (1 + 0.002 * (lengths - 27))
        means[size] = risk + (math.log(2) - risk) * np.minimum(share, 1.0)
    means[100_000][:4] = [0.541, 0.506, 0.477, 0.606]
    tasks = json.dumps(study_tasks())
    return pd.DataFrame([{"context_length": l, "data_size": d, "seed": s, "status": "ok", "tasks": tasks,
                          "string_length": 100, "best_val_loss": v * (1 + noise * rng.standard_normal())}
                         for d, curve in means.items() for s in range(3) for l, v in zip(PAPER_GRID, curve)])


def test_every_data_size_that_learnt_something_gets_an_answer():
    trials = _paper_like()
    best = trials.groupby(["data_size", "context_length"])["best_val_loss"].mean().groupby("data_size").min()
    assert best.loc[[75_000, 85_000, 100_000]].round(2).tolist() == [0.61, 0.57, 0.48]
    fit = step_optimum(trials, n_boot=300)
    table = fit.table.set_index("data_size")
    assert table.loc[50_000, "status"] == "not_learnt" and not table.loc[50_000, "learnt"]
    # the old rule (nothing below the Bayes risk of l = 27, 0.471) called 75k-100k 'not learnt'
    assert table.loc[[75_000, 85_000, 100_000], "learnt"].all()
    assert table.loc[75_000, "status"] == "at_or_below" and 27 <= table.loc[75_000, "l_star_high"] < 36
    # the U at 100k: 0.477 at 36, 0.606 at 40: l* is 36 or a step before 40 (37, 39)
    hundred = table.loc[100_000]
    assert hundred["status"] == "bracketed" and hundred["l_star"] in (36, 37, 39)
    assert 28 <= hundred["l_star_low"] <= 36 and 36 <= hundred["l_star_high"] <= 39
    for size in (400_000, 2_000_000):  # best at 94: l* is 93, the last step of the 100-bit strings
        row = table.loc[size]
        assert (row["status"], row["l_star"], row["outside"]) == ("saturated", 93, "")
        assert row["l_star_low"] <= 93
    text = fit.summary()
    assert "l* = 93, saturated" in text and "is the shortest length searched; l* may lie below" in text and "not learnt" in text
    assert ": 0%" not in text  # only candidates with a share
    # the law: the bracketed points fitted, the one-sided ones checked against it
    law = analysis.fit_optimal_context_law(fit)
    assert law.success and law.n == int((table["status"] == "bracketed").sum()) >= 3
    checked = {check["data_size"]: check for check in law.checks}
    assert set(checked) == set(table.index[table["status"].isin(["at_or_below", "saturated", "above"])])
    assert checked[2_000_000]["side"] == ">=" and checked[75_000]["side"] == "<="
    assert all(isinstance(check["respected"], bool) for check in law.checks)
    lines = law.summary().splitlines()
    assert any(line.startswith("  checked") and "(saturated)" in line for line in lines)
    assert any(line.startswith("  fitted   D =      100,000: l* = ") for line in lines)
    assert json.dumps(law.to_dict())


def test_a_frame_with_only_a_bayes_risk_column_spans_the_grid_gaps():
    # R known at the grid lengths only: a truth of 47 with 48 the best grid length must not give [48, 48]
    trials, truth = analysis.calibration.simulate_step_sweep(
        "own", GRID, SIZES, n_seeds=3, noise=0.002, rng=np.random.default_rng(1), risk_only=True)
    assert "tasks" not in trials.columns and "bayes_risk" in trials.columns
    fit = step_optimum(trials, n_boot=200)
    assert set(fit.candidates) >= set(range(20, 81))  # every length: R may step at any of them
    for _, row in fit.table.iterrows():
        assert row["l_star"] in GRID  # the point estimate: a grid length, where R is known
        assert row["l_star_low"] <= truth[row["data_size"]] <= row["l_star_high"], (row, truth)
        assert "grid gaps" in row["interval_method"]
        below = max(g for g in GRID if g < row["l_star"])
        assert row["l_star_low"] <= below + 1  # down to just above the grid length before


@pytest.mark.parametrize("case", ["risk-only", "edges"])
def test_calibration_of_the_new_cases(case):
    # a small version of the bench's 'risk-only' and 'edges' rows
    options = {"risk-only": {"risk_only": True}, "edges": {"truth_span": (1, 100), "dead_sizes": (20_000,)}}[case]
    grid = [48, 52, 58, 63, 71, 84, 94] if case == "edges" else [27, 32, 36, 43, 50, 55, 63, 71, 84, 94]
    sizes = [50_000, 200_000, 2_000_000] if case == "edges" else [50_000, 200_000]
    res = coverage(_estimate, "own", grid, sizes, 3, 0.005, reps=6, seed=5, n_boot=150, **options)
    assert res["placed"] == res["cases"] and res["coverage"] >= 0.9, res
    if case == "edges":
        assert "not_learnt 6" in res["statuses"] and "saturated" in res["statuses"], res


def test_chaotic_seeds_elsewhere_do_not_make_a_learning_size_not_learnt():
    # D = 50,000 learnt some tasks at l = 24 (0.53, one seed); at D = 100,000 training is chaotic:
    # of two seeds one learns, the other stays at ln 2, so the seed-to-seed spread is huge. That
    # spread is not the noise of a model that learnt nothing, and must not hide D = 50,000's 0.53.
    ln2 = math.log(2)
    rows = [(20, 50_000, 0, ln2), (24, 50_000, 0, 0.53), (32, 50_000, 0, ln2 + 0.0003), (48, 50_000, 0, ln2),
            (64, 50_000, 0, ln2 + 0.0002), (80, 50_000, 0, ln2)]
    for l, low in zip(GRID, [ln2, 0.55, 0.40, 0.30, 0.45, ln2]):
        rows += [(l, 100_000, 0, low), (l, 100_000, 1, ln2 if 24 < l < 80 else low)]
    tasks = json.dumps(study_tasks())
    trials = pd.DataFrame([{"context_length": l, "data_size": d, "seed": s, "best_val_loss": v, "status": "ok",
                            "tasks": tasks, "string_length": 100} for l, d, s, v in rows])
    table = step_optimum(trials, n_boot=100).table.set_index("data_size")
    assert table.loc[50_000, "status"] != "not_learnt" and table.loc[100_000, "status"] != "not_learnt"
    assert bool(table.loc[50_000, "learnt"])


def test_a_chaotic_cell_does_not_set_the_noise_of_every_cell():
    # three seeds everywhere, 0.3 % noise; then at D = 100,000 one seed of a length past l* stays at
    # ln 2 while the other two learn (a run that never left the plateau). Pooled as seed noise, that
    # one cell widened the other sizes' intervals (to [43, 55] and [47, 55]); it is training that
    # failed, not noise, so they stay as they were without it.
    grid = [27, 32, 36, 40, 43, 47, 52, 58, 63, 71, 84, 93]
    trials, truth = analysis.calibration.simulate_step_sweep("power", grid, SIZES, 3, 0.003, np.random.default_rng(3))
    steady = step_optimum(trials, n_boot=200).table.set_index("data_size")
    failed = (trials["data_size"] == 100_000) & (trials["context_length"] == 52) & (trials["seed"] == 1)
    assert truth[100_000.0] < 52 and trials.loc[failed, "best_val_loss"].item() < math.log(2) - 0.05
    chaotic = trials.assign(best_val_loss=trials["best_val_loss"].mask(failed, math.log(2)))
    table = step_optimum(chaotic, n_boot=200).table.set_index("data_size")
    for size in (50_000, 200_000):
        answer = table.loc[size, ["l_star", "l_star_low", "l_star_high"]].tolist()
        assert answer == steady.loc[size, ["l_star", "l_star_low", "l_star_high"]].tolist(), (size, answer)


def test_an_untried_longer_length_never_beats_the_lengths_that_learnt_nothing():
    # D = 75,000 as an adaptive search first tried it on one H100: a little learnt at l = 31, nothing
    # from 37 to 62. Every task entering past 62 must not make the untried 93 its optimum: a model
    # that learnt nothing at 62 from these rows does not learn those tasks at 93.
    # Beside it, D = 2M of the same run's grid (its 12 lengths set the candidates, 27 to 93).
    ln2 = math.log(2)
    rows = [(l, 75_000, v) for l, v in [(31, 0.6781), (37, 0.6925), (45, ln2), (52, ln2), (62, ln2)]]
    rows += [(l, 2_000_000, v) for l, v in zip([27, 32, 36, 40, 43, 47, 52, 58, 63, 71, 84, 94],
                                                [0.4715, 0.3886, 0.3331, 0.2917, 0.2639, 0.2361, 0.2087, 0.1808,
                                                 0.1671, 0.1392, 0.1115, 0.0976])]
    tasks = json.dumps(study_tasks())
    trials = pd.DataFrame([{"context_length": l, "data_size": d, "seed": 0, "best_val_loss": v, "status": "ok",
                            "tasks": tasks, "string_length": 100} for l, d, v in rows])
    row = step_optimum(trials, n_boot=200).table.set_index("data_size").loc[75_000]
    assert row["status"] in ("bracketed", "at_or_below"), row
    assert not row["l_star"] > 31 and row["loss_at_l_star"] >= 0.6781 - 0.02, row
