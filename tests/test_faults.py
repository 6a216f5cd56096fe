"""Faults injected for real: SIGINT to a real `ctxscale sweep`, two launches at once, a full disk
during a write, a results folder that cannot be written, a Ray worker killed mid-trial (a synthetic
trial, and a GPT trial that resumes from its checkpoint)."""
from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from ctxscale import store
from ctxscale.cli import main
from ctxscale.spec import parse_spec
from ctxscale.sweep.prepare import prepare_data
from ctxscale.sweep.runner import run_sweep

from conftest import TINY_SPEC

pytestmark = pytest.mark.slow
SUMMARY = re.compile(r"^ran (\d+), skipped (\d+) stored, (\d+) held by another launch$", re.M)


def _spec_file(tmp_path, name, **changes):
    raw = TINY_SPEC | {"name": name, "grid": {"context_length": [8, 16, 24], "data_size": [2000], "seed": [0, 1]},
                       "training": {"batch_size": 250, "max_epochs": 12, "patience": 12},
                       "resources": {"pack": 1}} | changes
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


_LAUNCHED: list = []  # the launches of the running test


@pytest.fixture(autouse=True)
def _no_launch_outlives_its_test():
    """A launch that a failed assertion (or a communicate timeout) left running would keep the
    session cluster's CPUs, and every later sweep of the session would wait for them: killed."""
    yield
    while _LAUNCHED:
        proc = _LAUNCHED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)


def _launch(ray_cluster, spec_path, results, quiet=True):
    address = ray_cluster.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-m", "ctxscale.cli", "sweep", str(spec_path), "--address", address,
                             "--results", str(results), *(["--quiet"] if quiet else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ | {"RAY_AUTH_MODE": "disabled"})
    _LAUNCHED.append(proc)
    return proc


def _stored_once(results, name, points):
    trials = store.load_results(results, sweep=name)
    history = store.load_results(results, "history", sweep=name)
    assert len(trials) == points and trials["trial_id"].is_unique and set(trials["status"]) == {"ok"}
    assert not history.duplicated(["trial_id", "epoch"]).any()
    assert set(history["trial_id"]) == set(trials["trial_id"])
    assert not [p for p in (results / name).rglob("*") if ".tmp-" in p.name and "_ray" not in p.parts]
    return trials


def test_ctrl_c_exits_130_stores_only_finished_points_and_the_next_launch_runs_the_rest(ray_cluster, tmp_path):
    spec, results = _spec_file(tmp_path, "ctrlc"), tmp_path / "results"
    proc = _launch(ray_cluster, spec, results, quiet=False)  # the default console
    trials_dir = results / "ctrlc" / "trials"
    deadline = time.time() + 240
    while not (trials_dir.is_dir() and any(trials_dir.glob("*.parquet"))) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    sent = time.time()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert time.time() - sent < 30
    assert "interrupted" in err and not SUMMARY.search(out)
    # Tune's own Ctrl-C warnings (its advice is Tuner.restore; ctxscale's is the same command again)
    assert "Tuner.restore" not in err + out and "Failed to fetch metrics" not in err + out, err[-3000:]
    stored = store.load_results(results, sweep="ctrlc")
    finished = int((stored["status"] == "ok").sum())
    assert 1 <= finished < 6 and set(stored["status"]) <= {"ok", "failed"}
    history = store.load_results(results, "history", sweep="ctrlc")
    for trial_id in stored.loc[stored["status"] == "ok", "trial_id"]:  # an ok point has its whole history
        assert history.loc[history["trial_id"] == trial_id, "status"].iloc[-1] == "ok"
    assert not [p for p in (results / "ctrlc").rglob("*") if ".tmp-" in p.name and "_ray" not in p.parts]
    assert not list((results / "ctrlc" / "leases").iterdir())

    again = _launch(ray_cluster, spec, results)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert SUMMARY.search(out).groups() == (str(6 - finished), str(finished), "0")
    _stored_once(results, "ctrlc", 6)


def _stopped_after_a_checkpoint(ray_cluster, tmp_path, raw, checkpoint_file):
    """Launch the spec `raw` (one point) and stop it with SIGINT once it has saved a checkpoint and,
    after it, stored history; then launch it again. Returns the results folder, the history the
    stopped launch stored, and what the second launch printed."""
    name = raw["name"]
    spec, results = tmp_path / f"{name}.yaml", tmp_path / "results"
    spec.write_text(yaml.safe_dump(raw))
    proc = _launch(ray_cluster, spec, results)
    deadline = time.time() + 240
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        stored = (results / name / "history").is_dir() and any((results / name / "history").glob("*.parquet"))
        if stored and any((results / name / "_ray").rglob(f"checkpoint_*/{checkpoint_file}")):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert not store.stored_trials(results, name)  # interrupted: no trials row
    before = store.load_results(results, "history", sweep=name)
    again = _launch(ray_cluster, spec, results, quiet=False)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    return results, before, out + err


def _kept_as_stored(history, before, key, upto):
    """The rows up to `upto` that the stopped launch stored are kept value for value (the
    checkpoint also brings back any it sent that its driver never stored)."""
    first = before[before[key] <= upto].reset_index(drop=True)
    kept = history[history[key].isin(first[key])].reset_index(drop=True)
    assert list(kept[key]) == list(first[key]) and len(kept) > 0
    for column in ("train_loss", "elapsed_s", "wall_s"):
        if column in first:
            assert kept[column].equals(first[column]), column  # NaN where both are NaN


def test_the_next_launch_goes_on_from_the_checkpoint_a_stopped_launch_left(ray_cluster, tmp_path):
    """SIGINT while a parity trial trains, after it has saved a checkpoint: the next launch goes on
    from that checkpoint (and says so), keeps the evaluations the first launch stored before it, and
    stores every epoch once."""
    raw = {"name": "resume", "experiment": "parity", "grid": {"context_length": [2, 4], "data_size": [600], "seed": [0]},
           "data": {"string_length": 6, "n_tasks": 3, "mask_max": 4, "eval_per_task": 20, "feature_rows": 200},
           "model": {"n_layer": 1, "n_embd": 16, "n_head": 2},
           "training": {"epochs": 300, "batch_size": 100, "warmup_steps": 2, "device": "cpu", "checkpoint_every_s": 0.5},
           "spectra": {"thresholds": [0.01, 0.1], "n_eigenvalues": [3, 10], "kde_dims": 4},
           "resources": {"cpus_per_trial": 1}}
    results, before, printed = _stopped_after_a_checkpoint(ray_cluster, tmp_path, raw, "parity.pt")
    went_on = re.search(r"going on from step (\d+) \(epoch (\d+) of 300\)", printed)
    assert went_on, printed[-3000:]
    trials = _stored_once(results, "resume", 1)
    assert trials["steps"].iloc[0] == 300 * 6
    history = store.load_results(results, "history", sweep="resume")
    assert list(history["epoch"]) == list(range(1, 301))  # every epoch once, in order, the last the final report
    _kept_as_stored(history, before, "epoch", int(went_on.group(2)))


@pytest.mark.network  # the corpus is tokenized with the GPT-2 BPE ranks
@pytest.mark.parametrize("workers", [0, 2], ids=["plain", "ddp"])
def test_a_stopped_gpt_trial_goes_on_from_its_checkpoint_at_the_next_launch(ray_cluster, tmp_path, workers):
    """A plain trial finds its checkpoint in Ray's storage; a DDP trial's is restored by Ray Train
    (its run is named after the trial). Both hand back the evaluations sent before it."""
    from conftest import word_corpus

    raw = {"name": "resume-gpt", "experiment": "gpt",
           "grid": {"context_length": [16], "data_size": [8000], "seed": [0]},
           "data": {"corpus": str(word_corpus(tmp_path))}, "model": {"preset": "tiny"},
           "training": {"tokens_per_step": 512, "micro_batch_tokens": 256, "warmup_steps": 2, "max_steps": 80,
                        "eval_every": 4, "eval_tokens": 512, "patience": 1000, "compile": False, "device": "cpu"},
           "resources": {"cpus_per_trial": 1, "num_workers": workers}}
    results, before, printed = _stopped_after_a_checkpoint(ray_cluster, tmp_path, raw, "state.pt")
    went_on = re.search(r"going on from step (\d+) of at most 80", printed)
    assert went_on, printed[-3000:]
    trials = store.load_results(results, sweep="resume-gpt")
    assert list(trials["status"]) == ["ok"] and trials["step"].iloc[0] == 80
    assert trials["world_size"].iloc[0] == max(workers, 1)
    history = store.load_results(results, "history", sweep="resume-gpt")
    assert list(history["step"]) == list(range(4, 81, 4))  # every evaluation once
    _kept_as_stored(history, before, "step", int(went_on.group(1)))


def test_two_launches_at_once_run_every_point_once_in_total(ray_cluster, tmp_path):
    spec, results = _spec_file(tmp_path, "twice"), tmp_path / "results"
    launches = [_launch(ray_cluster, spec, results) for _ in range(2)]
    counts = []
    for proc in launches:
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-3000:]
        counts.append(tuple(int(n) for n in SUMMARY.search(out).groups()))
    assert sum(ran for ran, _, _ in counts) == 6, counts  # every point ran once, in one of them
    assert all(sum(line) == 6 for line in counts)
    assert any(held for _, _, held in counts), counts  # the second one left the first one's points to it
    _stored_once(results, "twice", 6)


def test_a_full_disk_stops_the_sweep_with_one_error_and_loses_nothing(ray_cluster, tmp_path, monkeypatch):
    raw = yaml.safe_load(_spec_file(tmp_path, "full").read_text()) | {"training": {"max_epochs": 2, "patience": 2}}
    spec = parse_spec(raw)
    data = prepare_data(spec)
    real_write, calls = store.base.pq.write_table, []

    def disk_fills_up(table, where, **kwargs):
        calls.append(1)
        if len(calls) > 5:  # a few rows fit, then the disk is full, halfway through a file
            where.write(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(table, where, **kwargs)

    monkeypatch.setattr(store.base.pq, "write_table", disk_fills_up)
    with pytest.raises(store.StoreError, match="No space left on device"):
        run_sweep(spec, tmp_path, data=data, verbose=0)
    monkeypatch.undo()
    assert not [p for p in (tmp_path / "full").rglob("*") if ".tmp-" in p.name and "_ray" not in p.parts]
    kept = store.load_results(tmp_path, sweep="full")
    assert 1 <= len(kept) < 6 and set(kept["status"]) == {"ok"}
    outcome = run_sweep(spec, tmp_path, data=data, verbose=0)
    assert len(outcome.ran) == 6 - len(kept)
    _stored_once(tmp_path, "full", 6)


def test_an_unwritable_results_folder_is_one_line_before_ray_starts(tmp_path, capsys):
    spec = _spec_file(tmp_path, "nowhere")
    (tmp_path / "a-file").write_text("")
    assert main(["sweep", str(spec), "--results", str(tmp_path / "a-file" / "results")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the results folder cannot be written" in err[0] and "a-file" in err[0]


def _kill_trial_worker_when(condition, killed: list, done, timeout=240):
    """Wait until `condition()`, then SIGKILL the process of the running Tune trial (its actor's pid,
    from Ray's actor table; the class is `ImplicitFunc`, or `wrap_function.<locals>.ImplicitFunc`
    once another sweep in this process has pickled it); the driver and the cluster stay up."""
    import ray._private.state

    deadline = time.time() + timeout
    while time.time() < deadline and not done.is_set():
        if condition():
            for actor in ray._private.state.actors().values():
                if actor["State"] == "ALIVE" and actor["ActorClassName"].endswith("ImplicitFunc") and actor["Pid"]:
                    os.kill(actor["Pid"], signal.SIGKILL)
                    killed.append(actor["Pid"])
                    return
        time.sleep(0.05)


def test_a_worker_killed_mid_trial_is_retried_and_stored_once(ray_cluster, tmp_path):
    import threading

    raw = yaml.safe_load(_spec_file(tmp_path, "killed").read_text()) | {
        # epochs long enough (~1 s each on a quiet 2-core machine) that the trial is still running
        # when its first evaluation reaches the store, however fast the loop gets
        "grid": {"context_length": [16], "data_size": [200000], "seed": [0]},
        "training": {"batch_size": 100, "max_epochs": 6, "patience": 6},
        "resources": {"pack": 1, "max_failures": 1}}
    spec = parse_spec(raw)
    history_dir = tmp_path / "killed" / "history"

    def some_history_is_stored():  # the live history: the running trial's evaluations so far
        return history_dir.is_dir() and any(history_dir.glob("*.parquet"))

    killed: list = []
    done = threading.Event()
    data = prepare_data(spec)
    killer = threading.Thread(target=_kill_trial_worker_when, args=(some_history_is_stored, killed, done))
    killer.start()
    try:
        run_sweep(spec, tmp_path, data=data, verbose=0)
    finally:
        done.set()
        killer.join()
    assert killed, "the trial ended before its worker could be killed"
    trials = _stored_once(tmp_path, "killed", 1)  # retried within the run: one ok row
    history = store.load_results(tmp_path, "history", sweep="killed")
    assert list(history["epoch"]) == list(range(1, trials["epoch"].iloc[0] + 1))  # each evaluation once


@pytest.mark.network  # the corpus is tokenized with the GPT-2 BPE ranks
def test_a_gpt_worker_killed_mid_trial_resumes_from_its_checkpoint(ray_cluster, tmp_path):
    import json
    import threading

    import pyarrow.parquet as pq

    from conftest import word_corpus

    corpus = word_corpus(tmp_path)
    spec = parse_spec({
        "name": "gpt-killed", "experiment": "gpt", "grid": {"context_length": [16], "data_size": [8000], "seed": [0]},
        "data": {"corpus": str(corpus)}, "model": {"preset": "tiny"},
        "training": {"tokens_per_step": 512, "micro_batch_tokens": 512, "warmup_steps": 2, "max_steps": 40,
                     "eval_every": 4, "eval_tokens": 512, "patience": 100, "compile": False, "device": "cpu"},
        "resources": {"max_failures": 1}})
    results = tmp_path / "results"
    history_dir = results / "gpt-killed" / "history"

    def two_evaluations_are_stored():  # each evaluation checkpoints, so the trial can resume at step 8
        for path in history_dir.glob("*.parquet") if history_dir.is_dir() else []:
            try:
                return max(pq.read_table(path, columns=["step"])["step"].to_pylist()) >= 8
            except OSError:
                return False
        return False

    killed: list = []
    done = threading.Event()
    killer = threading.Thread(target=_kill_trial_worker_when, args=(two_evaluations_are_stored, killed, done))
    killer.start()
    try:
        run_sweep(spec, results, data=prepare_data(spec), verbose=0)
    finally:
        done.set()
        killer.join()
    assert killed, "the trial ended before its worker could be killed"
    trials = store.load_results(results, sweep="gpt-killed")
    assert len(trials) == 1 and trials["status"].iloc[0] == "ok", trials["error"].tolist()
    history = store.load_results(results, "history", sweep="gpt-killed")
    assert list(history["step"]) == list(range(4, 41, 4))  # each evaluation once
    # Tune's own log of every report, both attempts: after the kill the step count goes on from the
    # checkpoint (a fresh start would report step 4 again)
    (log,) = (results / "gpt-killed" / "_ray").rglob("result.json")
    reports = [json.loads(line) for line in log.read_text().splitlines() if '"step"' in line]
    steps, pids = [r["step"] for r in reports], [r["pid"] for r in reports]
    assert pids[0] == killed[0] and len(set(pids)) == 2, pids  # both attempts are in the log
    assert steps == sorted(set(steps)) and steps[-1] == 40, steps
