"""Real local Ray sweeps end to end: Tune trials, a Ray Train DDP trial, the store, re-runs."""
from __future__ import annotations

import json

import pytest

from ctxscale import store
from ctxscale.cli import main
from ctxscale.spec import parse_spec
from ctxscale.identity import science_hash
from ctxscale.experiments.grid import expand_grid
from ctxscale.sweep.prepare import prepare_data
from ctxscale.sweep.runner import SweepError, check_fits, ddp_trials_that_fit, node_types, run_sweep

from conftest import TINY_SPEC

pytestmark = pytest.mark.slow


def test_sweep_stores_one_row_per_trial(synthetic_results):
    trials = store.load_results(synthetic_results, sweep="tiny")
    assert len(trials) == 12 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"ok"}
    required = {"sweep", "experiment", "trial_id", "context_length", "data_size", "seed", "best_val_loss",
                "best_epoch", "final_train_loss", "status", "error", "wall_s", "samples_per_s", "config",
                "ray_version", "torch_version", "host", "bayes_risk"}
    assert required <= set(trials.columns)
    assert (trials["best_val_loss"] > 0).all() and (trials["best_epoch"] >= 1).all()
    config = json.loads(trials["config"].iloc[0])
    assert config["name"] == "tiny" and config["model"]["hidden"] == 16
    # every row names its configuration: the science hash that also ends its trial id
    digest = science_hash(parse_spec(TINY_SPEC))
    assert set(trials["config_hash"]) == {digest} and trials["trial_id"].str.endswith(f"_{digest}").all()
    assert str(trials["finished_at"].dtype) == "datetime64[us, UTC]" and trials["finished_at"].notna().all()

    history = store.load_results(synthetic_results, "history", sweep="tiny")
    per_trial = history.groupby("trial_id")
    assert per_trial.ngroups == 12
    # the best loss stored for a trial is the minimum over its stored evaluations
    merged = trials.set_index("trial_id")["best_val_loss"]
    assert (per_trial["val_loss"].min() - merged).abs().max() < 1e-12
    assert set(history["config_hash"]) == {digest}
    assert not any(str(p).endswith(".parquet") is False for p in (synthetic_results / "tiny" / "trials").iterdir())


def test_second_run_skips_stored_trials(synthetic_results, ray_cluster):
    spec = parse_spec(TINY_SPEC)
    before = sorted(p.stat().st_mtime_ns for p in (synthetic_results / "tiny" / "trials").iterdir())
    outcome = run_sweep(spec, synthetic_results, data=prepare_data(spec), verbose=0)
    assert outcome.ran == [] and len(outcome.skipped) == 12
    after = sorted(p.stat().st_mtime_ns for p in (synthetic_results / "tiny" / "trials").iterdir())
    assert before == after


def test_a_grown_grid_runs_only_the_new_trials(tmp_path, ray_cluster):
    small = TINY_SPEC | {"name": "grow", "grid": {"context_length": [8], "data_size": [1000], "seed": [0]}}
    spec = parse_spec(small)
    run_sweep(spec, tmp_path, data=prepare_data(spec), verbose=0)
    bigger = parse_spec(small | {"grid": {"context_length": [8, 12], "data_size": [1000], "seed": [0]}})
    outcome = run_sweep(bigger, tmp_path, data=prepare_data(bigger), verbose=0)
    assert len(outcome.ran) == 1 and len(outcome.skipped) == 1
    assert len(store.load_results(tmp_path, sweep="grow")) == 2


def test_the_driver_leaves_the_hardware_to_the_trials(tmp_path, ray_cluster, monkeypatch):
    # asking for the GPU's name in the driver starts a CUDA context there; the trials' processes
    # (Ray workers, untouched by this patch) report where they ran
    from ctxscale import provenance

    def asked(*args):
        raise AssertionError("the driver asked for the hardware")

    monkeypatch.setattr(provenance, "hardware", asked)
    spec = parse_spec(TINY_SPEC | {"name": "where", "grid": {"context_length": [8], "data_size": [1000], "seed": [0]}})
    outcome = run_sweep(spec, tmp_path, data=prepare_data(spec), verbose=0)
    trials = store.load_results(tmp_path, sweep="where")
    assert len(outcome.ran) == 1 and list(trials["status"]) == ["ok"]
    assert trials["host"].iloc[0] and trials["cpu_count"].iloc[0] >= 1


def test_the_driver_starts_its_trials_without_importing_torch():
    # importing torch (CUDA build) took the driver ~5 s on a GPU machine before Ray started: the
    # sweep machinery leaves it to the trials' processes (ray.train.torch is imported by DDP
    # trials only)
    import subprocess
    import sys

    probe = "import sys, ctxscale.cli, ctxscale.sweep.runner; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


def test_failed_trial_is_stored_with_its_error_and_rerun(tmp_path, ray_cluster):
    # the trial is handed a data set with fewer training rows than it asks for: it raises inside
    # the worker on any machine (a CUDA request would succeed where there is a GPU)
    raw = TINY_SPEC | {"name": "broken", "grid": {"context_length": [8], "data_size": [1000], "seed": [0]},
                       "training": {"max_epochs": 1}}
    spec = parse_spec(raw)
    data = prepare_data(parse_spec(raw | {"grid": raw["grid"] | {"data_size": [500]}}))
    run_sweep(spec, tmp_path, data=data, verbose=0)
    trials = store.load_results(tmp_path, sweep="broken")
    assert list(trials["status"]) == ["failed"]
    assert "asked for 1000 training rows; the set has 500" in trials["error"].iloc[0]
    assert list(trials["config_hash"]) == [science_hash(spec)]  # failed trials name their configuration too
    outcome = run_sweep(spec, tmp_path, data=data, verbose=0)
    assert len(outcome.ran) == 1  # failed trials run again ...
    assert len(store.load_results(tmp_path, sweep="broken")) == 1  # ... and replace their row


def test_a_trial_given_no_gpu_sees_none(ray_cluster):
    # on a GPU machine Ray leaves CUDA_VISIBLE_DEVICES alone for a 0-GPU task: `device: auto` would
    # otherwise train a CPU trial on the GPU that other trials hold
    from ctxscale.sweep import adapters

    @ray_cluster.remote(num_gpus=0)
    def what_the_trial_sees():
        import os

        import torch

        adapters._only_the_gpus_given()
        return os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.is_available()

    assert ray_cluster.get(what_the_trial_sees.remote()) == ("", False)


def test_ddp_trials_with_two_gloo_workers(tmp_path, ray_cluster):
    # two trials of two 1-CPU workers on a 2-CPU cluster: one worker group at a time
    raw = TINY_SPEC | {"name": "ddp", "grid": {"context_length": [16], "data_size": [2000], "seed": [0, 1]},
                       "resources": {"num_workers": 2, "cpus_per_trial": 1}}
    spec = parse_spec(raw)
    outcome = run_sweep(spec, tmp_path, data=prepare_data(spec), verbose=0)
    trials = store.load_results(tmp_path, sweep="ddp")
    assert sorted(trials["seed"]) == [0, 1] and len(outcome.ran) == 2
    assert list(trials["status"]) == ["ok", "ok"], trials["error"].tolist()
    assert list(trials["world_size"]) == [2, 2]
    assert list(trials["gpu_count"]) == [0, 0]  # workers given no GPU see none, on a GPU machine too
    history = store.load_results(tmp_path, "history", sweep="ddp")
    assert len(history) == trials["epoch"].sum()


def test_ddp_trials_at_once_are_the_worker_groups_the_cluster_holds():
    def resources(**fields):
        return parse_spec(TINY_SPEC | {"resources": fields}).resources

    two_gpus = {"CPU": 32.0, "GPU": 2.0}
    assert ddp_trials_that_fit(resources(num_workers=2, gpus_per_trial=1, cpus_per_trial=4), two_gpus) == 1
    assert ddp_trials_that_fit(resources(num_workers=1, gpus_per_trial=1, cpus_per_trial=4), two_gpus) == 2
    assert ddp_trials_that_fit(resources(num_workers=2, gpus_per_trial=1, cpus_per_trial=12), two_gpus) == 1
    assert ddp_trials_that_fit(resources(num_workers=2, cpus_per_trial=1), {"CPU": 2.0}) == 1
    assert ddp_trials_that_fit(resources(num_workers=2, cpus_per_trial=1), {"CPU": 9.0}) == 4
    # nothing fits yet (an autoscaling cluster before it grows): one at a time, not none
    assert ddp_trials_that_fit(resources(num_workers=4, gpus_per_trial=1), {"CPU": 8.0}) == 1


def test_only_a_trial_that_fits_no_node_type_is_refused():
    small = parse_spec(TINY_SPEC | {"resources": {"cpus_per_trial": 0.5}}).resources
    check_fits(small, [{"CPU": 2.0}])  # fits now
    big = parse_spec(TINY_SPEC | {"resources": {"cpus_per_trial": 8}}).resources
    # a node type the autoscaler may add counts although no such node runs yet
    check_fits(big, [{"CPU": 2.0}, {"CPU": 16.0, "GPU": 1.0}])
    ddp = parse_spec(TINY_SPEC | {"resources": {"num_workers": 4, "gpus_per_trial": 1}}).resources
    check_fits(ddp, [{"CPU": 1.0, "GPU": 1.0}])  # the workers spread over nodes: one worker must fit one
    with pytest.raises(SweepError, match=r"each of its 4 DDP workers needs 1 CPU, 1 GPU on one node.*0 GPU"):
        check_fits(ddp, [{"CPU": 16.0}, {"CPU": 8.0}])
    with pytest.raises(SweepError, match=r"one trial needs 8 CPU on one node.*node types: 2 CPU"):
        check_fits(big, [{"CPU": 2.0}, {"CPU": 2.0}])


def test_node_types_of_a_live_cluster(ray_cluster):
    assert any(node.get("CPU") == 2.0 for node in node_types())


def test_trial_ids_are_stable_and_change_with_the_science():
    spec = parse_spec(TINY_SPEC)
    ids = [t.trial_id for t in expand_grid(spec)]
    assert ids == [t.trial_id for t in expand_grid(parse_spec(TINY_SPEC))] and len(set(ids)) == 12
    renamed = parse_spec(TINY_SPEC | {"resources": {"max_concurrent_trials": 1}})
    assert [t.trial_id for t in expand_grid(renamed)] == ids
    retrained = parse_spec(TINY_SPEC | {"training": {"batch_size": 250}})
    assert not set(ids) & {t.trial_id for t in expand_grid(retrained)}


def test_results_cli_prints_stored_rows(synthetic_results, capsys):
    assert main(["results", str(synthetic_results), "--sweep", "tiny", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 12 and {"context_length", "best_val_loss"} <= set(rows[0])
    assert main(["results", str(synthetic_results), "--sweep", "nope"]) == 2
    assert "no sweep named 'nope'" in capsys.readouterr().err


@pytest.mark.network
def test_tiny_gpt_sweep_end_to_end(tmp_path, ray_cluster):
    """2 context lengths x 2 training sizes of a tiny GPT on a corpus prepared from local text."""
    from conftest import word_corpus

    corpus = word_corpus(tmp_path)
    raw = {
        "name": "gpt-tiny", "experiment": "gpt",
        "grid": {"context_length": [16, 64], "data_size": [2000, 8000], "seed": [0]},
        "data": {"corpus": str(corpus)},
        "model": {"preset": "tiny"},
        "training": {"tokens_per_step": 512, "micro_batch_tokens": 512, "warmup_steps": 2, "max_steps": 6,
                     "eval_every": 3, "eval_tokens": 512, "patience": 5, "compile": False, "device": "cpu"},
    }
    spec = parse_spec(raw)
    run_sweep(spec, tmp_path / "results", data=prepare_data(spec), verbose=0)
    trials = store.load_results(tmp_path / "results", sweep="gpt-tiny")
    assert len(trials) == 4 and set(trials["status"]) == {"ok"}, trials["error"].tolist()
    assert {"tokens_per_s", "mfu", "best_val_loss"} <= set(trials.columns)
    assert (trials["tokens_per_s"] > 0).all()
    assert sorted(zip(trials["context_length"], trials["data_size"])) == [(16, 2000), (16, 8000), (64, 2000), (64, 8000)]
    history = store.load_results(tmp_path / "results", "history", sweep="gpt-tiny")
    assert set(history["step"]) == {3, 6}
    # the same spec again runs nothing
    assert run_sweep(spec, tmp_path / "results", data=prepare_data(spec), verbose=0).ran == []


def test_cli_sweep_on_an_existing_cluster(ray_cluster, tmp_path):
    """`ctxscale sweep --address` runs the grid on a cluster it did not start, and prints the table."""
    import os
    import subprocess
    import sys

    import yaml

    raw = TINY_SPEC | {"name": "remote", "grid": {"context_length": [8, 16], "data_size": [1000], "seed": [0]}}
    path = tmp_path / "remote.yaml"
    path.write_text(yaml.safe_dump(raw))
    address = ray_cluster.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "ctxscale.cli", "sweep", str(path), "--address", address,
               "--results", str(tmp_path / "results"), "--quiet"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"running on cluster at {address}" in proc.stdout
    assert "D=1,000" in proc.stdout and "*" in proc.stdout
    assert len(store.load_results(tmp_path / "results", sweep="remote")) == 2
