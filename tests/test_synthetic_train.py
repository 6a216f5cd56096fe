"""The synthetic models and their Ray-free training loop."""
from __future__ import annotations

import math

import pytest
import torch

from ctxscale.data.synthetic import bayes_risk, generate
from ctxscale.models.mlp import MLP, BiMLP, build_model
from ctxscale.spec import parse_spec
from ctxscale.train.synthetic import bce_loss, run_synthetic_trial


def test_model_shapes():
    bits, control = torch.randn(7, 12), torch.eye(5)[torch.arange(7) % 5]
    mlp = MLP(12, 5, hidden=16)
    assert mlp(bits, control).shape == (7,)
    widths = [m.out_features for m in mlp.net if isinstance(m, torch.nn.Linear)]
    assert widths == [16, 8, 16, 1]
    bimlp = BiMLP(12, 5)
    assert bimlp.features(bits).shape == (7, 80) and bimlp(bits, control).shape == (7,)
    # the Bi-MLP's feature sees only the bits: the control vector cannot leak into it
    assert bimlp.bits_net[0].in_features == 12
    with pytest.raises(ValueError, match="unknown synthetic model kind"):
        build_model("cnn", 12, 5)


def test_bce_is_safe_for_extreme_logits():
    logits = torch.tensor([1e4, -1e4, 0.0])
    labels = torch.tensor([1.0, 1.0, 1.0])
    loss = bce_loss(logits, labels)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx((0 + 1e4 + math.log(2)) / 3)


def _trial(spec_raw, context_length, data_size, seed=0):
    spec = parse_spec(spec_raw)
    return {"spec": spec.model_dump(mode="json"), "context_length": context_length,
            "data_size": data_size, "seed": seed, "trial_id": "t"}


EASY = {  # two tasks whose bits lie early: learnable from little data
    "name": "t", "experiment": "synthetic",
    "grid": {"context_length": [4, 8], "data_size": [8000]},
    "data": {"string_length": 16, "val_rows": 2000},
    "model": {"hidden": 64},
    "training": {"batch_size": 250, "max_epochs": 60, "patience": 10, "lr": 3e-3},
}


@pytest.fixture(scope="module")
def easy_data():
    return generate(8000, 2000, [[3, 1], [6, 2]], string_length=16, seed=1)


def test_loop_learns_the_xor_down_to_the_bayes_risk(easy_data):
    reports = []
    result = run_synthetic_trial(_trial(EASY, 8, 8000), lambda m, checkpoint_dir=None: reports.append(m), easy_data)
    assert result["status"] == "ok" and reports[-1] is result
    assert [r["epoch"] for r in reports] == list(range(1, len(reports) + 1))
    assert all(r["status"] == "running" for r in reports[:-1])
    # both tasks visible at context 8: the Bayes risk is 0 and the model gets close to it
    assert bayes_risk(easy_data.tasks, 8, 16) == 0
    assert result["best_val_loss"] < 0.1
    assert result["best_val_loss"] == min(r["val_loss"] for r in reports)
    assert reports[result["best_epoch"] - 1]["val_loss"] == result["best_val_loss"]


def test_hidden_bits_leave_the_bayes_risk(easy_data):
    # at context 4 the second task (bit 6) is invisible: its half of the rows stays a coin flip
    result = run_synthetic_trial(_trial(EASY, 4, 8000), lambda m, checkpoint_dir=None: None, easy_data)
    assert result["bayes_risk"] == pytest.approx(math.log(2) / 2)
    assert result["best_val_loss"] == pytest.approx(math.log(2) / 2, abs=0.03)


def test_early_stopping_stops_after_patience(easy_data):
    raw = EASY | {"training": EASY["training"] | {"patience": 2, "lr": 1e-9}}
    result = run_synthetic_trial(_trial(raw, 8, 8000), lambda m, checkpoint_dir=None: None, easy_data)
    assert result["epoch"] <= result["best_epoch"] + 2 and result["epoch"] < 60


def test_divergence_is_reported(easy_data):
    raw = EASY | {"training": EASY["training"] | {"lr": 1e30, "max_epochs": 5}}
    result = run_synthetic_trial(_trial(raw, 8, 8000), lambda m, checkpoint_dir=None: None, easy_data)
    assert result["status"] == "diverged"


def test_same_seed_same_result_and_bimlp_spectrum(easy_data):
    raw = EASY | {"model": {"kind": "bimlp", "feature_dim": 6, "bits_hidden": 32, "head_hidden": 16},
                  "training": EASY["training"] | {"max_epochs": 3}}
    first = run_synthetic_trial(_trial(raw, 8, 4000), lambda m, checkpoint_dir=None: None, easy_data)
    second = run_synthetic_trial(_trial(raw, 8, 4000), lambda m, checkpoint_dir=None: None, easy_data)
    assert first["best_val_loss"] == second["best_val_loss"]
    eigenvalues = first["feature_eigenvalues"]
    assert len(eigenvalues) == 6 and eigenvalues == sorted(eigenvalues, reverse=True)
