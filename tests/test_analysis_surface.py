"""The joint surface fit against generated surfaces with known optima."""
import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import fit_loss_surface, forms, optimal_context_length
from analysis.examples import EXAMPLE_SURFACE, surface_trials, true_optimum
from analysis.surface import disagreement_text, parameter_limits, parameter_text, surface_residuals

GRID = [int(round(8 * 2 ** (i / 2))) for i in range(13)]
SIZES = [1e3, 1e4, 1e5, 1e6, 1e7]


@pytest.fixture(scope="module")
def fitted():
    trials = surface_trials(GRID, SIZES, seeds=(0, 1), noise=0.002, rng=4)
    return trials, fit_loss_surface(trials, n_boot=40)


def test_surface_recovers_the_implied_optima(fitted):
    _, fit = fitted
    assert fit.success and fit.n == len(GRID) * len(SIZES) * 2 and fit.n_boot == 40
    optima = fit.optima_frame()
    assert optima["data_size"].tolist() == SIZES
    below = optima.iloc[0]  # l*(1e3) = 6.4 < 8: outside the fitted range
    assert not below["bracketed"] and below["outside"] == "below" and math.isnan(below["l_star"])
    inside = optima.iloc[1:]
    assert inside["bracketed"].all()
    np.testing.assert_allclose(inside["l_star"], true_optimum(inside["data_size"]), rtol=0.05)
    assert (inside["l_star_low"] <= inside["l_star"]).all() and (inside["l_star"] <= inside["l_star_high"]).all()


def test_surface_parameters_match_the_generator(fitted):
    _, fit = fitted
    p = fit.params
    assert fit.r2 > 0.999
    assert p["gamma"] == pytest.approx(EXAMPLE_SURFACE["gamma"], abs=0.05)
    assert p["alpha0"] * fit.l_ref ** p["b"] == pytest.approx(EXAMPLE_SURFACE["alpha0"], abs=0.03)  # α at l = 1
    assert abs(p["b"]) < 0.03  # the generator's data exponent does not fall with l
    for name in p:
        assert fit.params_low[name] <= fit.params_high[name]
    json.dumps(fit.to_dict())
    assert "R²" in fit.summary()


def test_surface_residuals_are_small(fitted):
    trials, fit = fitted
    res = surface_residuals(fit, trials)
    assert np.abs(res["log_residual"]).max() < 0.01  # 0.2 % noise
    np.testing.assert_allclose(fit.predict(GRID[4], 1e5), forms.loss_surface(GRID[4], 1e5, **EXAMPLE_SURFACE), rtol=0.01)


def test_surface_follows_a_falling_data_exponent():
    """With b > 0 (α falling as l grows, as in the paper) the optima are no power law; the
    surface fit and the per-D estimates both find the numerical optimum."""
    params = dict(c0=0.3, c=2.0, gamma=0.5, a=3.0, kappa=0.3, alpha0=0.5, b=0.15)
    sizes = [1e4, 1e5, 1e6, 1e7]
    trials = surface_trials(GRID, sizes, seeds=(0, 1), noise=0.002, params=params, rng=3)
    fit = fit_loss_surface(trials, n_boot=10)
    dense = np.geomspace(4, 1000, 100_001)
    truth = [dense[np.argmin(forms.loss_surface(dense, d, **params))] for d in sizes]
    np.testing.assert_allclose(fit.optima_frame()["l_star"], truth, rtol=0.04)
    assert fit.params["b"] == pytest.approx(0.15, abs=0.05)
    np.testing.assert_allclose(optimal_context_length(trials, n_boot=200).table["l_star"], truth, rtol=0.06)


def test_too_few_trials_is_a_result_not_an_exception():
    trials = surface_trials([8, 16, 32], [1e4], seeds=(0,))
    fit = fit_loss_surface(trials)
    assert not fit.success and "2 data sizes" in fit.message
    assert math.isnan(fit.params["gamma"]) and "not fitted" in fit.summary()
    assert json.loads(json.dumps(fit.to_dict()))["params"]["c0"] is None


def test_parameters_at_their_bounds_are_named_as_such(fitted):
    _, fit = fitted
    assert parameter_limits(fit) == {} and "c0 = 0.5" in parameter_text(fit)  # a well-posed fit: no bound met
    # as in a real synthetic sweep: c0 driven to ~0 (its bootstrap never moves it), kappa's
    # interval over its whole range, b's cut at its upper bound, gamma at its upper bound
    stuck = dataclasses.replace(
        fit, params={**fit.params, "c0": 1.11e-11, "gamma": 5.0},
        params_low={**fit.params_low, "c0": 1.11e-11, "kappa": -3.0},
        params_high={**fit.params_high, "c0": 1.11e-11, "kappa": 3.0, "b": 3.0})
    notes = parameter_limits(stuck)
    assert set(notes) == {"c0", "gamma", "kappa", "b"}
    assert notes["c0"].startswith("c0 at its lower bound 0 (fitted 1.11e-11")
    assert notes["gamma"] == "gamma at its upper bound 5"
    assert "undetermined" in notes["kappa"] and "[-3, 3]" in notes["kappa"]
    assert notes["b"].endswith("3, cut at its upper bound]")
    text = parameter_text(stuck)
    assert "[1.11e-11, 1.11e-11]" not in text and "alpha0 = " in text


def test_a_disagreement_with_l_star_says_which_to_trust(fitted):
    _, fit = fitted
    comparison = pd.DataFrame({
        "data_size": [5e4, 1e5, 2e5], "l_star": [24.0, 47.0, 58.0], "l_star_low": [23.0, 43.0, 47.0],
        "l_star_high": [31.0, 62.0, 77.0], "bracketed": [True, True, False],
        "surface_l_star": [36.3, 45.0, 20.0], "surface_bracketed": [True, True, True]})
    text = disagreement_text(fit, comparison)
    assert "D = 50,000: 36.3 against l* = 24 [23, 31]" in text and "100,000" not in text and "200,000" not in text
    assert "Trust l*" in text and "functional form" in text
    assert disagreement_text(fit, comparison.iloc[1:]) == ""  # inside the interval, or l* not bracketed
