"""Optimal context length per data size and the law l*(D) = k · D^β, against generated truth.

The generated surface (analysis.examples.EXAMPLE_SURFACE, the paper's form with a constant data
exponent) has the exact optimum l*(D) = 0.402 · D^0.4, so every estimate has a known target.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import OptimalContextLength, fit_optimal_context_law, optimal_context_length
from analysis.examples import surface_trials, true_optimum
from analysis.optimum import OPTIMAL_COLUMNS

GRID = [int(round(8 * 2 ** (i / 2))) for i in range(13)]  # 8 .. 512, spacing √2
INSIDE = [1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7]  # true l* from 16 to 254
BETA = 0.4


@pytest.fixture(scope="module")
def family():
    """U-curves at seven data sizes inside the grid plus one on each side of it, 3 seeds, 0.2 % noise."""
    trials = surface_trials(GRID, [1e3, *INSIDE, 1e8], seeds=(0, 1, 2), noise=0.002, rng=11)
    return trials, optimal_context_length(trials, seed=1).table


def test_table_has_one_row_per_data_size(family):
    trials, opt = family
    assert list(opt.columns) == OPTIMAL_COLUMNS and set(opt["estimator"]) == {"smooth"}
    assert opt["data_size"].tolist() == sorted(trials["data_size"].unique())
    assert (opt["n_trials"] == len(GRID) * 3).all() and (opt["n_excluded"] == 0).all()


def test_l_star_recovered_and_covered(family):
    _, opt = family
    inside = opt[opt["data_size"].isin(INSIDE)]
    assert inside["bracketed"].all() and (inside["interval_method"] == "seeds").all()
    truth = true_optimum(inside["data_size"])
    # Tolerances from 30 generated families: the error reaches ~8 % where the curve is flattest
    # (largest D), and a 95 % interval misses at most two of seven.
    np.testing.assert_allclose(inside["l_star"], truth, rtol=0.1)
    covered = (inside["l_star_low"] <= truth) & (truth <= inside["l_star_high"])
    assert covered.sum() >= len(inside) - 2


def test_optimum_beyond_the_grid_is_not_bracketed(family):
    _, opt = family
    below, above = opt.iloc[0], opt.iloc[-1]
    assert (below["bracketed"], below["outside"], below["grid_l_best"]) == (False, "below", GRID[0])
    assert (above["bracketed"], above["outside"], above["grid_l_best"]) == (False, "above", GRID[-1])
    assert math.isnan(below["l_star"]) and math.isnan(above["l_star_high"])
    assert (below["status"], above["status"]) == ("at_or_below", "above")
    # one-sided bounds: at least the neighbour of the end where the grid minimum sits
    assert below["l_star_high"] >= GRID[1] and above["l_star_low"] <= GRID[-2]


def test_the_result_reads_as_text_and_json(family):
    trials, table = family
    result = optimal_context_length(trials, seed=1)
    assert isinstance(result, OptimalContextLength) and result.table.equals(table)
    lines = result.summary().splitlines()
    assert lines[0].startswith("optimal context length per data size (95 % interval; smooth estimator")
    # the grid minimum at the smallest length: one-sided, below that length's neighbour (11)
    assert lines[1].startswith("  [low, high]: the 95 % interval of l* (the minimum of bootstrap curves)")
    assert lines[2] == f"  D = {'1,000':>12}: l* <= 11: its estimate, 8, is the shortest length searched; l* may lie below  grid best 8, 3 seed(s)"
    assert sum("l* = " in line for line in lines) == len(INSIDE)
    as_json = json.loads(json.dumps(result.to_dict()))
    assert as_json["estimator"] == "smooth" and len(as_json["table"]) == len(table)
    # the law takes the result or its table alike
    assert fit_optimal_context_law(result).to_dict() == fit_optimal_context_law(table).to_dict()


def test_increase_probabilities_of_optima_that_rise_with_data(family):
    trials, _ = family
    result = optimal_context_length(trials, seed=1)
    inc = result.increase
    assert list(inc.columns) == ["data_size", "next_data_size", "p_not_lower", "p_higher"]
    assert inc["data_size"].tolist() == [1e3, *INSIDE] and inc["next_data_size"].tolist() == [*INSIDE, 1e8]
    # true l* rises by 3^0.4 = 1.55x per step, more than the intervals' half-widths
    assert (inc["p_higher"] > 0.9).all() and (inc["p_not_lower"] >= inc["p_higher"]).all()
    lines = result.summary().splitlines()
    assert f"  D 1,000 -> 10,000: P(l* does not fall) = {inc['p_not_lower'].iloc[0]:.2f}, " \
           f"P(l* rises) = {inc['p_higher'].iloc[0]:.2f}" in lines
    # the same curve at two data sizes: l* neither rises nor falls beyond chance
    flat = trials[trials["data_size"] == 1e5]
    twice = pd.concat([flat, flat.assign(data_size=2e5)], ignore_index=True)
    p = optimal_context_length(twice, seed=1).increase.iloc[0]
    assert 0.3 < p["p_higher"] < 0.7
    # two data sizes whose minimum is at the top of the grid: tied there, so l* never rises
    top = trials[trials["data_size"] == 1e8]
    ends = optimal_context_length(pd.concat([top, top.assign(data_size=2e8)], ignore_index=True), seed=1)
    assert not ends.table["bracketed"].any()
    assert ends.increase["p_higher"].iloc[0] < 0.5 <= ends.increase["p_not_lower"].iloc[0]


def test_law_recovered_with_an_interval_covering_the_truth(family):
    _, opt = family
    law = fit_optimal_context_law(opt)
    assert law.success and law.n == len(INSIDE)
    assert law.exponent == pytest.approx(BETA, abs=0.02)
    assert law.exponent_low <= BETA <= law.exponent_high
    assert law.exponent_high - law.exponent_low < 0.1
    assert law.coefficient == pytest.approx(0.402, rel=0.3)
    assert law.r2 > 0.99
    assert law.predict(1e5) == pytest.approx(true_optimum(1e5), rel=0.05)
    lo, hi = law.band([1e5])
    assert lo[0] < law.predict(1e5) < hi[0]
    json.dumps(law.to_dict())  # JSON-safe
    assert "β = 0.4" in law.summary()
    assert law.table.set_index("parameter").loc["exponent", "estimate"] == law.exponent


def test_single_seed_uses_residuals():
    trials = surface_trials(GRID, INSIDE[:4], seeds=(0,), noise=0.002, rng=5)
    opt = optimal_context_length(trials, n_boot=300).table
    assert (opt["interval_method"] == "residuals").all()
    truth = true_optimum(opt["data_size"])
    np.testing.assert_allclose(opt["l_star"], truth, rtol=0.12)
    assert ((opt["l_star_low"] <= truth) & (truth <= opt["l_star_high"])).sum() >= 3


def test_exact_parabola_vertex_by_hand():
    """Loss = (log l - log 30)² + 1 on a grid: the vertex is exactly l = 30 whatever the window."""
    grid = [8, 16, 32, 64, 128]
    trials = pd.DataFrame({"context_length": grid, "data_size": 100, "seed": 0,
                           "best_val_loss": [(math.log(l) - math.log(30)) ** 2 + 1 for l in grid]})
    rows = {}
    for window in (3, 5):
        rows[window] = row = optimal_context_length(trials, n_boot=50, window=window).table.iloc[0]
        assert row["l_star"] == pytest.approx(30.0, rel=1e-9)
        assert row["loss_at_l_star"] == pytest.approx(1.0, abs=1e-9)
        assert row["grid_l_best"] == 32
    # one seed and a three-point window: no noise to bootstrap, so no interval is claimed
    assert rows[3]["interval_method"] == "none" and math.isnan(rows[3]["l_star_low"])
    # five points leave one residual, here zero: the interval shrinks onto the vertex
    assert rows[5]["l_star_low"] == pytest.approx(30.0) and rows[5]["l_star_high"] == pytest.approx(30.0)


def test_failed_and_diverged_trials_are_counted_not_used():
    trials = surface_trials(GRID, [1e5], seeds=(0, 1), noise=0.001, rng=2)
    trials.loc[0, "status"] = "failed"
    trials.loc[1, "status"] = "diverged"
    trials.loc[2, "best_val_loss"] = float("nan")  # 'ok' without a loss: unusable too
    trials.loc[3, "best_val_loss"] = 1e6  # would wreck the curve were failed rows used
    trials.loc[3, "status"] = "diverged"
    row = optimal_context_length(trials, n_boot=100).table.iloc[0]
    assert row["n_excluded"] == 4 and row["n_trials"] == len(trials) - 4
    assert row["l_star"] == pytest.approx(true_optimum(1e5), rel=0.1)


def test_law_needs_two_bracketed_points():
    opt = pd.DataFrame({"data_size": [1e4, 1e5], "l_star": [20.0, np.nan], "bracketed": [True, False]})
    law = fit_optimal_context_law(opt)
    assert not law.success and "at least 2" in law.message and law.n == 1
    assert math.isnan(law.exponent)
    assert "not fitted" in law.summary()
    assert json.loads(json.dumps(law.to_dict()))["exponent"] is None


def test_law_interval_carries_the_per_point_uncertainty():
    """Two exact points: the interval comes only from each l*'s own interval, and widens with it."""
    base = pd.DataFrame({"data_size": [1e4, 1e6], "l_star": [10.0, 40.0], "bracketed": True})
    narrow = fit_optimal_context_law(base.assign(l_star_low=base.l_star * 0.98, l_star_high=base.l_star / 0.98))
    wide = fit_optimal_context_law(base.assign(l_star_low=base.l_star * 0.8, l_star_high=base.l_star / 0.8))
    assert narrow.exponent == pytest.approx(math.log(4) / math.log(100))
    assert narrow.exponent_low < narrow.exponent < narrow.exponent_high
    assert wide.exponent_high - wide.exponent_low > 5 * (narrow.exponent_high - narrow.exponent_low)
    assert "per-point uncertainty only" in narrow.message


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="best_val_loss"):
        optimal_context_length(pd.DataFrame({"context_length": [8], "data_size": [1]}))
    with pytest.raises(TypeError):
        optimal_context_length([1, 2, 3])
