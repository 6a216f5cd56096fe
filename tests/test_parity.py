"""The parity experiment: the task and its exact Bayes risk against brute-force enumeration, the
spec, and a real tiny sweep through the one runner whose ce / spectra rows the analysis reads."""
from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest
import yaml

from ctxscale import store
from ctxscale.data import parity_tasks as parity
from ctxscale.spec import SpecError, parse_spec
from ctxscale.spec.point import Point


def brute_force_bayes_risk(tasks: parity.ParityTasks, context_length: int) -> float:
    """E[-ln P(answer | what the model sees)] by enumerating every string and task, the posterior
    taken from the encoded sequence itself (so it also checks that encode hides the right bits)."""
    counts = defaultdict(lambda: np.zeros(2))  # visible sequence -> weighted answer counts
    prob = tasks.probability
    strings = np.array(list(itertools.product([0, 1], repeat=tasks.string_length)), dtype=np.uint8)
    for k in range(tasks.n_tasks):
        task = np.full(len(strings), k)
        tokens = parity.encode(strings, task, context_length)
        answer = strings[:, tasks.near[k] - 1] ^ strings[:, tasks.far[k] - 1]
        for row, y in zip(map(bytes, tokens), answer):
            counts[row][y] += prob[k] / len(strings)
    risk = 0.0
    for c in counts.values():
        total = c.sum()
        risk -= sum(p * math.log(p / total) for p in c if p > 0)
    return risk


@pytest.mark.parametrize("length,n_tasks,gamma,seed", [(5, 3, 1.0, 0), (6, 5, 0.33, 1), (7, 4, 2.0, 2)])
def test_exact_bayes_risk_matches_brute_force_enumeration(length, n_tasks, gamma, seed):
    tasks = parity.make_tasks(length, n_tasks, gamma, seed)
    risks = []
    for l in range(1, length + 1):
        exact = parity.bayes_risk(tasks, l)
        assert exact == pytest.approx(brute_force_bayes_risk(tasks, l), abs=1e-12)
        risks.append(exact)
    assert risks[-1] == 0 and all(a >= b for a, b in zip(risks, risks[1:]))  # falls with l, 0 with all bits


def test_encoding_puts_bit_one_next_to_the_task_token_and_hides_the_far_bits():
    bits = np.array([[1, 0, 1, 1]], dtype=np.uint8)  # bits 1..4
    tokens = parity.encode(bits, np.array([2]), 2)
    assert tokens.tolist() == [[parity.UNKNOWN, parity.UNKNOWN, 0, 1, parity.FIRST_TASK_TOKEN + 2]]
    assert parity.encode(bits, np.array([0]), 4)[0, :4].tolist() == [1, 1, 0, 1]


def test_training_set_masks_as_the_study_does():
    tasks = parity.make_tasks(60, 100, 0.33)
    tokens, answer = parity.training_set(tasks, 20_000, 0.5, 0, 50, seed=0)
    visible = (tokens[:, :60] != parity.UNKNOWN).sum(axis=1)
    assert visible.min() >= 10 and 0.49 < (visible == 60).mean() < 0.53
    # the unknown bits are always the farthest ones: visible bits form a suffix
    assert all((row[:60 - v] == parity.UNKNOWN).all() for row, v in zip(tokens[:200], visible[:200]))
    assert set(np.unique(answer)) == {0, 1}
    # task frequencies follow the weights
    share = np.bincount(tokens[:, 60] - parity.FIRST_TASK_TOKEN, minlength=100) / len(tokens)
    assert share[:10].sum() > share[-10:].sum() * 2


def test_default_tasks_put_the_bayes_risk_near_the_studys_numbers():
    spec = parse_spec({"name": "p", "experiment": "parity", "grid": {"context_length": [17, 50], "data_size": [10]}})
    from ctxscale.train.parity import spec_tasks

    tasks = spec_tasks(spec)
    assert parity.bayes_risk(tasks, 17) == pytest.approx(0.4643, abs=0.01)
    assert parity.bayes_risk(tasks, 50) == pytest.approx(0.0612, abs=0.01)


@pytest.mark.parametrize("field,value,message", [
    ("data.mask_max", 60, "data.mask_max (60) must be below data.string_length (60)"),
    ("grid.context_length", [10, 61], "grid.context_length [61] exceed data.string_length = 60"),
    ("model.n_head", 5, "model.n_embd (208) / model.n_head (5) must be an even integer"),
    ("training.curriculum_steps", 100, "training.curriculum_tasks below 1 and training.curriculum_steps above 0 go together"),
])
def test_bad_parity_specs_are_refused_naming_the_field(field, value, message):
    raw = {"name": "p", "experiment": "parity", "grid": {"context_length": [10, 20], "data_size": [10]}}
    section, key = field.split(".")
    raw.setdefault(section, {})[key] = value
    with pytest.raises(SpecError) as err:
        parse_spec(raw, "p.yaml")
    assert message in str(err.value) and str(err.value).startswith("p.yaml: ")


TINY = {"name": "tiny-parity", "experiment": "parity",
        "grid": {"context_length": [2, 4, 6], "data_size": [300, 600], "seed": [0]},
        "data": {"string_length": 6, "n_tasks": 3, "mask_max": 4, "eval_per_task": 20, "feature_rows": 200},
        "model": {"n_layer": 1, "n_embd": 16, "n_head": 2},
        "training": {"epochs": 2, "batch_size": 100, "warmup_steps": 2, "device": "cpu"},
        "spectra": {"thresholds": [0.01, 0.1], "n_eigenvalues": [3, 10], "kde_dims": 4},
        "resources": {"cpus_per_trial": 1}}


@pytest.mark.slow
def test_a_parity_sweep_stores_ce_and_spectra_per_context_length_and_the_report_reads_them(tmp_path, ray_cluster, capsys):
    from analysis import run_report
    from ctxscale.cli import main

    path = tmp_path / "tiny-parity.yaml"
    path.write_text(yaml.safe_dump(TINY))
    results = tmp_path / "results"
    assert main(["sweep", str(path), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "Bayes risk" in out and "mean |CE − Bayes risk| per data size" in out

    trials = store.load_results(results, "trials", sweep="tiny-parity")
    assert sorted(trials["data_size"]) == [300, 600] and (trials["status"] == "ok").all()
    ce = store.load_results(results, "ce", sweep="tiny-parity")
    assert len(ce) == 6 and set(ce["model"]) == set(trials["trial_id"])  # model = the trial id
    tasks = parity.make_tasks(6, 3, 0.33, 0)
    for _, row in ce.iterrows():
        assert row["bayes_risk"] == pytest.approx(parity.bayes_risk(tasks, row["context_length"]))
        assert row["ce"] == pytest.approx(row["bayes_risk"] + row["gap"])
    spectra = store.load_results(results, "spectra", sweep="tiny-parity")
    assert len(spectra) == 6 and (spectra["hidden_dim"] == 16).all() and np.isfinite(spectra["kde_entropy"]).all()
    history = store.load_results(results, "history", sweep="tiny-parity")
    assert sorted(history.groupby("trial_id")["epoch"].max()) == [2, 2]
    assert "ce_rows" not in history.columns and "ce_rows" not in trials.columns

    assert main(["sweep", str(path), "--results", str(results)]) == 0  # stored: nothing runs again
    assert "ran 0, skipped 2 stored, 0 held by another launch" in capsys.readouterr().out

    text = run_report(results, sweep="tiny-parity")
    assert "trained CE vs exact Bayes risk" in text and "CE vs KDE entropy" in text
    assert "exact Bayes risk vs context length: Bayes-risk law" in text
    report = results / "tiny-parity" / "report"
    assert (report / "ce_vs_bayes_risk.png").is_file() and (report / "kde_entropy.png").is_file()
    table = __import__("pandas").read_csv(report / "ce_vs_bayes_risk.csv")
    assert table[["data_size", "context_length"]].values.tolist() == [[300, 2], [300, 4], [300, 6], [600, 2], [600, 4], [600, 6]]
    assert (table["n_models"] == 1).all() and table["gap"].to_numpy() == pytest.approx(table["ce"] - table["bayes_risk"])


def test_train_traces_the_loss_and_stops_at_its_time_budget():
    """The trace is what shows the ln 2 plateau inside an epoch; max_seconds cuts a benchmark short."""
    import torch

    from ctxscale.train.parity import train

    spec = parse_spec({**TINY, "training": {**TINY["training"], "threads": 1}})
    tasks = parity.make_tasks(6, 3, 0.33, 0)
    point = Point("t", "", spec, data_size=600, seed=0)
    run = train(spec, tasks, point, torch.device("cpu"), trace_every=2)
    assert run.status == "ok" and run.step == 12 and [s for s, _, _ in run.trace] == list(range(2, 13, 2))
    assert all(math.isfinite(loss) for _, loss, _ in run.trace)
    stopped = train(spec, tasks, point, torch.device("cpu"), trace_every=2, max_seconds=0)
    assert stopped.status == "stopped" and stopped.step == 2 and stopped.train_loss == stopped.trace[0][1]


def test_a_curriculum_trains_the_nearest_tasks_first_then_every_sample():
    """curriculum_steps steps on the nearest curriculum_tasks share of the tasks, then the epochs;
    with a constant schedule the rate stays at lr after the warmup."""
    import torch

    from ctxscale.train.parity import curriculum_rows, setup_parity, train

    tasks = parity.make_tasks(6, 4, 0.33, 0)
    tokens, _ = parity.training_set(tasks, 2000, 0.5, 0, 4, 0)
    rows = curriculum_rows(torch.from_numpy(tokens), 0.5, tasks.n_tasks).numpy()
    task_of = tokens[:, -1].astype(int) - parity.FIRST_TASK_TOKEN
    assert set(task_of[rows]) == {0, 1} and len(rows) == int((task_of < 2).sum()) > 0  # the nearest half, all of it

    raw = {**TINY, "data": {**TINY["data"], "n_tasks": 4},
           "training": {**TINY["training"], "threads": 1, "lr_schedule": "constant",
                        "curriculum_tasks": 0.5, "curriculum_steps": 5}}
    spec = parse_spec(raw)
    run = train(spec, parity.make_tasks(6, 4, 0.33, 0), Point("t", "", spec, data_size=600, seed=0),
                torch.device("cpu"), trace_every=1)
    assert run.status == "ok" and run.step == 5 + 2 * 6 and len(run.trace) == 17
    point = Point("t", "", spec, data_size=600, seed=0)
    constant = setup_parity(spec, tasks, point, torch.device("cpu"))
    assert constant.total_steps == 17 and [constant.lr(step) for step in (0, 1, 2, 16)] == [0.0005, 0.001, 0.001, 0.001]
    cosine = setup_parity(parse_spec(TINY), tasks, point, torch.device("cpu"))
    assert cosine.lr(cosine.total_steps) == pytest.approx(0.0001)  # cosine reaches lr / 10 at the end


def test_a_parity_trial_goes_on_from_its_checkpoint_as_if_never_stopped(tmp_path):
    """A checkpoint at each epoch's end (checkpoint_every_s tiny); resuming from the first epoch's gives
    the uninterrupted run's weights, steps and loss trace, curriculum included."""
    import shutil

    import torch

    from ctxscale.train.parity import train

    raw = {**TINY, "data": {**TINY["data"], "n_tasks": 4},
           "training": {**TINY["training"], "threads": 1, "epochs": 3, "checkpoint_every_s": 1e-9,
                        "curriculum_tasks": 0.5, "curriculum_steps": 3}}
    spec = parse_spec(raw)
    tasks = parity.make_tasks(6, 4, 0.33, 0)
    point = Point("t", "", spec, data_size=600, seed=0)
    reports = []

    def report(metrics, checkpoint_dir=None):
        reports.append(metrics)
        if checkpoint_dir:
            shutil.copytree(checkpoint_dir, tmp_path / f"epoch{metrics['epoch']}", dirs_exist_ok=True)

    full = train(spec, tasks, point, torch.device("cpu"), report, trace_every=1)
    assert [r["epoch"] for r in reports] == [1, 2] and (tmp_path / "epoch1" / "parity.pt").is_file()
    reports.clear()
    resumed = train(spec, tasks, point, torch.device("cpu"), report, trace_every=1, resume_dir=str(tmp_path / "epoch1"))
    assert [r["epoch"] for r in reports] == [2]
    assert resumed.step == full.step == 3 + 3 * 6 and resumed.train_loss == full.train_loss
    assert [loss for _, loss, _ in resumed.trace] == [loss for _, loss, _ in full.trace]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "parity.pt").write_bytes(b"not a checkpoint")
    afresh = train(spec, tasks, point, torch.device("cpu"), resume_dir=str(tmp_path / "broken"))
    assert afresh.step == full.step and afresh.train_loss == full.train_loss  # started again, same numbers
