"""The Bayes-risk law C0 + C/l^γ, and the synthetic gap between trained loss and exact Bayes risk."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import fit_bayes_risk, synthetic_bayes_risk, synthetic_gap
from analysis.bayes import is_synthetic, synthetic_risk_curve

LN2 = math.log(2)


def test_bayes_risk_law_recovered_from_a_noisy_power_law():
    rng = np.random.default_rng(0)
    l = np.repeat(np.geomspace(128, 15360, 12), 3)
    truth = dict(c0=1.8, c=6.0, gamma=0.45)
    loss = truth["c0"] + truth["c"] / l ** truth["gamma"] + 0.002 * rng.standard_normal(l.size)
    fit = fit_bayes_risk(l, loss)
    assert fit.success and fit.n == l.size and fit.r2 > 0.99
    for name in truth:
        value, se = getattr(fit, name), getattr(fit, f"{name}_se")
        assert 0 < se < 0.5 * abs(value)
        assert abs(value - truth[name]) < 4 * se  # the standard errors are honest
    assert fit.predict(1000) == pytest.approx(1.8 + 6.0 / 1000**0.45, abs=0.01)
    json.dumps(fit.to_dict())
    assert "γ = 0.4" in fit.summary()


def test_bayes_risk_law_exact_and_degenerate_inputs():
    l = np.array([16.0, 32.0, 64.0, 128.0, 256.0])
    exact = fit_bayes_risk(l, 0.5 + 2.0 / l**1.2)
    assert (exact.c0, exact.c, exact.gamma) == pytest.approx((0.5, 2.0, 1.2), rel=1e-6)
    three = fit_bayes_risk(l[:3], (0.5 + 2.0 / l**1.2)[:3])
    assert three.success and math.isnan(three.gamma_se) and "3 points" in three.message
    two = fit_bayes_risk([16, 32], [1.0, 0.9])
    assert not two.success and "at least 3" in two.message
    with pytest.raises(ValueError, match="positive"):
        fit_bayes_risk([0, 1, 2], [1, 1, 1])
    with pytest.raises(ValueError, match="length"):
        fit_bayes_risk([1, 2, 3], [1, 1])


def _synthetic_trials():
    tasks = json.dumps([[3, 1], [2, 5], [7, 6], [120, 4]])  # reaches 3, 5, 7, 120
    rows = []
    for d, excess in ((1000, 0.05), (10000, 0.01)):
        for l in (2, 4, 6, 8):
            for seed in (0, 1):
                risk = synthetic_bayes_risk(tasks, l)
                rows.append(dict(experiment="synthetic", context_length=l, data_size=d, seed=seed,
                                 best_val_loss=risk + excess + 0.001 * seed, status="ok", tasks=tasks,
                                 string_length=100))
    rows.append(dict(rows[0], seed=2, status="failed", best_val_loss=float("nan")))
    return pd.DataFrame(rows)


def test_synthetic_gap_against_the_hand_computed_risk():
    trials = _synthetic_trials()
    assert is_synthetic(trials)
    gap = synthetic_gap(trials)
    assert len(gap) == 8 and (gap["n_seeds"] == 2).all()  # the failed row is left out
    expected_risk = {2: 4, 4: 3, 6: 2, 8: 1}
    for _, row in gap.iterrows():
        assert row["bayes_risk"] == pytest.approx(expected_risk[row["context_length"]] / 4 * LN2)
        assert row["gap"] == pytest.approx(0.0505 if row["data_size"] == 1000 else 0.0105)
    assert gap.loc[0, "relative_gap"] == pytest.approx(0.0505 / LN2)


def test_synthetic_gap_falls_back_on_the_stored_risk_column():
    trials = _synthetic_trials().drop(columns=["tasks", "string_length"])
    trials["bayes_risk"] = 0.25
    gap = synthetic_gap(trials)
    assert (gap["bayes_risk"] == 0.25).all()
    with pytest.raises(ValueError, match="tasks"):
        synthetic_gap(trials.drop(columns=["bayes_risk"]))


def test_risk_curve_spans_the_grid():
    curve = synthetic_risk_curve(_synthetic_trials())
    assert curve["context_length"].min() <= 2 and curve["context_length"].max() >= 8
    assert curve["bayes_risk"].is_monotonic_decreasing
    assert curve["bayes_risk"].iloc[-1] == pytest.approx(LN2 / 4)
