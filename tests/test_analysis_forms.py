"""The functional forms: hand-checked values, including the synthetic task's exact Bayes risk."""
import json
import math

import numpy as np
import pytest

from analysis import forms

LN2 = math.log(2)
# reaches max(l, a): 3, 5, 7, 120 (the last lies beyond a 100-bit string)
TASKS = [[3, 1], [2, 5], [7, 6], [120, 4]]


@pytest.mark.parametrize(
    "context_length, string_length, unpredictable",
    [(1, 100, 4), (2, 100, 4), (3, 100, 3), (4, 100, 3), (5, 100, 2), (6, 100, 2), (7, 100, 1),
     (100, 100, 1), (7, 6, 2)],  # a 6-bit string hides the (7, 7) task even with context 7
)
def test_synthetic_bayes_risk_by_hand(context_length, string_length, unpredictable):
    risk = forms.synthetic_bayes_risk(TASKS, context_length, string_length)
    assert isinstance(risk, float)
    assert risk == pytest.approx(unpredictable / 4 * LN2, abs=1e-15)


def test_synthetic_bayes_risk_is_vectorised_and_reads_json():
    lengths = np.array([[1, 3], [5, 7]])
    risk = forms.synthetic_bayes_risk(json.dumps(TASKS), lengths)
    assert risk.shape == (2, 2)
    np.testing.assert_allclose(risk, np.array([[4, 3], [2, 1]]) / 4 * LN2)


def test_synthetic_bayes_risk_rejects_bad_task_lists():
    with pytest.raises(ValueError, match="pairs"):
        forms.synthetic_bayes_risk([1, 2, 3], 5)


def test_study_tasks_keep_seven_unpredictable_at_full_length():
    """The packaged study list has 7 of 50 tasks with a bit beyond 100: the risk floor is 7/50 · ln 2."""
    from importlib import resources

    tasks = json.loads(resources.files("ctxscale.data").joinpath("tasks_study50.json").read_text())
    assert forms.synthetic_bayes_risk(tasks, 100) == pytest.approx(7 / 50 * LN2)
    assert forms.synthetic_bayes_risk(tasks, 20) == pytest.approx(LN2)  # every task reaches past bit 20


def test_huber_is_quadratic_then_linear():
    r = np.array([-2e-3, -1e-3, 0.0, 5e-4, 3e-3])
    expected = [1e-3 * (2e-3 - 5e-4), 0.5e-6, 0.0, 0.125e-6, 1e-3 * (3e-3 - 5e-4)]
    np.testing.assert_allclose(forms.huber_loss(r, 1e-3), expected, rtol=1e-12)


def test_surface_optimum_b0_is_the_numerical_minimum():
    params = dict(c=2.0, gamma=0.5, a=5.0, kappa=0.5, alpha0=0.4)
    grid = np.geomspace(1, 1e4, 200_001)
    for d in (1e4, 1e6):
        numeric = grid[np.argmin(forms.loss_surface(grid, d, c0=0.3, b=0.0, **params))]
        assert forms.surface_optimum_b0(d, **params) == pytest.approx(numeric, rel=1e-3)
    # the optimum is the power law k · D^β with β = alpha0 / (gamma + kappa)
    ratio = forms.surface_optimum_b0(1e6, **params) / forms.surface_optimum_b0(1e4, **params)
    assert math.log(ratio) / math.log(100) == pytest.approx(0.4 / 1.0)


def test_bayes_risk_law_and_alpha():
    assert forms.bayes_risk_law(100.0, 1.0, 10.0, 0.5) == pytest.approx(2.0)
    assert forms.data_exponent([1.0, 16.0], 0.8, 0.25) == pytest.approx([0.8, 0.4])
