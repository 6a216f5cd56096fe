"""A spec's `tracking:` section: Ray's MLflow and W&B logger callbacks, for real where installed."""
from __future__ import annotations

import importlib.util

import pytest
import yaml

from ctxscale import store
from ctxscale.cli import main
from ctxscale.spec import parse_spec
from ctxscale.sweep.prepare import prepare_data
from ctxscale.sweep.runner import run_sweep

from conftest import TINY_SPEC

TWO_POINTS = TINY_SPEC | {"grid": {"context_length": [8, 16], "data_size": [1000], "seed": [0]},
                          "training": {"batch_size": 500, "max_epochs": 2, "patience": 2}}


def test_tracking_does_not_change_the_config_hash():
    plain = parse_spec(TWO_POINTS | {"name": "a"})
    tracked = parse_spec(TWO_POINTS | {"name": "a", "tracking": {"mlflow": {"tracking_uri": "file:/tmp/x"}}})
    from ctxscale.experiments.grid import expand_grid

    assert [p.trial_id for p in expand_grid(plain)] == [p.trial_id for p in expand_grid(tracked)]


@pytest.mark.parametrize("backend", ["wandb", "mlflow"])
def test_a_missing_package_is_one_line_before_ray(backend, tmp_path, capsys):
    if importlib.util.find_spec(backend) is not None:
        pytest.skip(f"{backend} is installed here")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(TWO_POINTS | {"name": "t", "tracking": {backend: {}}}))
    assert main(["sweep", str(spec), "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"ctxscale: error: {spec}: tracking.{backend}: the {backend} package is not installed "
                           f"(pip install 'ctxscale[{backend}]')")
    assert not (tmp_path / "results").exists()


def test_mlflow_logs_each_trial_as_a_run(ray_cluster, tmp_path, monkeypatch):
    """A local file: tracking URI; the two points train packed in one trial: one run, curves apart."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3.10 wants a database unless told
    uri = f"file:{tmp_path / 'mlruns'}"
    spec = parse_spec(TWO_POINTS | {"name": "tracked", "tracking": {"mlflow": {"tracking_uri": uri}}})
    run_sweep(spec, tmp_path / "results", data=prepare_data(spec), verbose=0)
    history = store.load_results(tmp_path / "results", "history", sweep="tracked")

    client = mlflow.tracking.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert run.info.run_name == f"d1000_s0_l8-16_{history['config_hash'].iloc[0]}"
    assert run.data.params["context_length"] == "[8, 16]" and run.data.params["data_size"] == "1000"
    for length in (8, 16):
        logged = client.get_metric_history(run.info.run_id, f"l{length}/val_loss")
        stored = history[history["trial_id"].str.startswith(f"l{length}_")].sort_values("epoch")["val_loss"]
        assert [m.value for m in sorted(logged, key=lambda m: m.step)] == pytest.approx(stored.tolist())


def test_wandb_offline_writes_a_run(ray_cluster, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # the spec sets it for the sweep; this restores it after
    spec = parse_spec(TWO_POINTS | {"name": "wb", "tracking": {"wandb": {"mode": "offline"}}})
    run_sweep(spec, tmp_path / "results", data=prepare_data(spec), verbose=0)
    runs = list((tmp_path / "results" / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
