"""analysis.entropy: linear fits against known lines, the CE law, Bi-MLP spectra from stored trials."""
from __future__ import annotations

import doctest
import json

import numpy as np
import pandas as pd
import pytest

from analysis import entropy
from analysis.entropy import bimlp_dimension, bimlp_spectra, ce_entropy_fits, entropy_report, fit_linear
from ctxscale import store


def test_linear_fit_recovers_a_known_line():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 200)
    fit = fit_linear(x, 1.5 - 0.3 * x + 0.01 * rng.standard_normal(200))
    assert fit.slope == pytest.approx(-0.3, abs=3 * fit.slope_se) and fit.slope_se < 1e-3
    assert fit.intercept == pytest.approx(1.5, abs=0.01) and fit.r2 > 0.999 and fit.r < -0.999
    assert fit.to_dict()["n"] == 200 and "R² =" in fit.summary()


@pytest.mark.parametrize("x,y,message", [([1, 2], [1, 2], "at least 3"), ([2, 2, 2], [1, 2, 3], "x is constant")])
def test_linear_fit_says_why_it_cannot_run(x, y, message):
    fit = fit_linear(x, y)
    assert not fit.success and message in fit.message and fit.to_dict()["slope"] is None


def _measured(gamma=0.4):
    """CE(l) = 2 + 3 / l^gamma; intrinsic dimension exactly linear in CE, sum-log noisy."""
    lengths = np.array([16, 32, 64, 128, 256, 512, 1024])
    ce = 2.0 + 3.0 / lengths**gamma
    dim = 100.0 - 20.0 * ce
    return pd.DataFrame({"series": "m", "model": "m", "context_length": lengths, "ce": ce,
                         "intrinsic_dim_0.0035": dim, "intrinsic_dim_0.1": np.full(7, 4.0),
                         "sum_log_eig_3": -5 * ce + np.random.default_rng(1).normal(0, 0.05, 7)})


def test_ce_entropy_fits_per_measure_and_parameter():
    fits = ce_entropy_fits(_measured()).set_index(["measure", "parameter"])
    exact = fits.loc[("intrinsic_dim", 0.0035)]
    assert exact["r2"] == pytest.approx(1.0) and exact["slope"] == pytest.approx(-1 / 20)
    assert not fits.loc[("intrinsic_dim", 0.1)]["success"]  # a constant dimension cannot be fitted
    assert 0.9 < fits.loc[("sum_log_eig", 3.0)]["r2"] < 1.0


def test_ce_law_recovers_gamma():
    pytest.importorskip("analysis.bayes")
    law = entropy.ce_law_fits(_measured(gamma=0.4).drop(columns="series"))["m"]
    assert law.gamma == pytest.approx(0.4, abs=1e-4) and law.c0 == pytest.approx(2.0, abs=1e-4)


def _bimlp_trials():
    rows = []
    for length, rank in [(8, 2), (16, 4), (32, 7)]:
        for seed in (0, 1):
            eig = [1.0 / (i + 1) for i in range(rank)] + [1e-6] * (80 - rank)  # rank significant directions
            rows.append({"context_length": length, "data_size": 1000, "seed": seed, "status": "ok",
                         "best_val_loss": 0.5 - 0.01 * rank, "feature_eigenvalues": json.dumps(eig)})
    rows.append({"context_length": 8, "data_size": 1000, "seed": 2, "status": "failed", "best_val_loss": np.nan,
                 "feature_eigenvalues": None})
    return pd.DataFrame(rows)


def test_bimlp_intrinsic_dimension_per_context_length():
    spectra = bimlp_spectra(_bimlp_trials())
    assert len(spectra) == 6 and (spectra["feature_dim"] == 80).all()  # the failed trial is left out
    table = bimlp_dimension(spectra, threshold=0.1)
    assert table[1000].tolist() == [2.0, 4.0, 7.0]
    assert bimlp_spectra(pd.DataFrame({"context_length": [8]})).empty  # an MLP sweep: nothing to do


def test_entropy_report_on_a_bimlp_sweep(tmp_path):
    for i, row in _bimlp_trials().iterrows():
        store.write_trial(tmp_path, "bimlp", f"t{i}", {k: v for k, v in row.items()}, [])
    text, fragment = entropy_report(tmp_path, "bimlp", tmp_path / "report")
    assert "Bi-MLP feature intrinsic dimension" in text and "l=32: 7" in text  # 1/i > 0.0035 for all 7
    assert "<img" in fragment and (tmp_path / "report" / "bimlp_spectra.csv").is_file()


def test_entropy_report_is_empty_for_a_plain_sweep(tmp_path):
    store.write_trial(tmp_path, "plain", "t0", {"context_length": 8, "data_size": 10, "best_val_loss": 0.3,
                                                 "status": "ok"}, [])
    assert entropy_report(tmp_path, "plain", tmp_path / "report") == ("", "")


def test_docstring_examples():
    assert doctest.testmod(entropy, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0
