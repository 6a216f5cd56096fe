"""Which tasks each cell learnt: the per-task table, its heat map, the report section, real stored trials."""
import json
import math

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.examples import surface_trials
from analysis.plots import plot_task_excess
from analysis.tasks import has_task_losses, task_loss_table
from ctxscale.data.synthetic import task_bayes_risk

LN2 = math.log(2)
# visible from l = 3, from l = 6, a constant label (never costs anything), a bit beyond the string
TASKS = [[3, 1], [2, 6], [4, 4], [150, 2]]


def _frame() -> pd.DataFrame:
    rows = []
    for size in (100, 1000):
        for length in (2, 4, 8):
            for seed in (0, 1):
                losses = [0.1 * seed + length / 100 + size / 1e4 + t for t in range(len(TASKS))]
                rows.append(dict(context_length=length, data_size=size, seed=seed, status="ok",
                                 best_val_loss=float(np.mean(losses)), task_val_loss=json.dumps(losses),
                                 tasks=json.dumps(TASKS), string_length=100))
    rows.append(dict(rows[0], seed=2, status="failed", task_val_loss=json.dumps([9.0] * 4)))  # left out
    return pd.DataFrame(rows)


def test_table_from_a_hand_made_frame():
    table = task_loss_table(_frame())
    assert len(table) == 2 * 3 * len(TASKS)
    assert list(table.columns) == ["data_size", "context_length", "task", "l", "a", "loss", "loss_sd", "n_seeds",
                                   "bayes_loss", "excess"]
    assert table[["data_size", "context_length", "task"]].equals(
        table[["data_size", "context_length", "task"]].sort_values(["data_size", "context_length", "task"]))
    row = table[(table.data_size == 1000) & (table.context_length == 4) & (table.task == 1)].iloc[0]
    assert (row.l, row.a, row.n_seeds) == (2, 6, 2)
    assert row.loss == pytest.approx(0.05 + 0.04 + 0.1 + 1)  # mean of the two seeds; the failed seed left out
    # task [2, 6] reaches bit 6: unpredictable at l = 4, learnable at l = 8
    by_length = table[(table.data_size == 100) & (table.task == 1)].set_index("context_length")["bayes_loss"]
    assert by_length.to_dict() == {2: pytest.approx(LN2), 4: pytest.approx(LN2), 8: 0.0}
    bayes = table.pivot_table("bayes_loss", "task", "context_length") / LN2
    np.testing.assert_allclose(bayes.to_numpy(), [[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]])
    np.testing.assert_allclose(table["excess"], table["loss"] - table["bayes_loss"])
    # per context length, the tasks' Bayes losses average to the sweep's exact Bayes risk
    mean_bayes = table.groupby("context_length")["bayes_loss"].mean()
    np.testing.assert_allclose(mean_bayes.to_numpy(), analysis.synthetic_bayes_risk(TASKS, [2, 4, 8]))


def test_table_takes_lists_and_refuses_what_it_cannot_read():
    frame = _frame()
    as_lists = frame.assign(task_val_loss=frame["task_val_loss"].map(json.loads))
    pd.testing.assert_frame_equal(task_loss_table(as_lists), task_loss_table(frame))
    assert has_task_losses(frame) and not has_task_losses(frame.drop(columns=["task_val_loss"]))
    with pytest.raises(ValueError, match="needs a 'task_val_loss' column"):
        task_loss_table(frame.drop(columns=["task_val_loss"]))
    with pytest.raises(ValueError, match=r"holds \[3, 4\] values per row for 4 tasks"):
        task_loss_table(frame.assign(task_val_loss=["[1, 2, 3]"] + frame["task_val_loss"].tolist()[1:]))
    with pytest.raises(ValueError, match="2 different 'tasks' values"):
        task_loss_table(frame.assign(tasks=[json.dumps([[3, 1], [2, 6], [5, 4], [150, 2]])] + frame["tasks"].tolist()[1:]))
    with pytest.raises(ValueError, match="no usable trial carries"):
        task_loss_table(frame.assign(task_val_loss=None))


def test_heat_map_is_drawn(tmp_path):
    path = plot_task_excess(task_loss_table(_frame()), tmp_path / "heat.png")
    assert path.stat().st_size > 5000


def test_heat_map_of_an_adaptive_store_wraps_and_keeps_each_size_to_its_own_lengths(tmp_path):
    # an adaptive search tries other lengths at each data size: 8 sizes x 6 lengths of their own
    # drew every panel over the union of 48 lengths, in one row (8,140 x 814 pixels on the H100 run)
    from matplotlib.image import imread

    rows = []
    for i, size in enumerate([100, 150, 200, 300, 400, 600, 800, 1000]):
        for length in range(2 + 6 * i, 8 + 6 * i):
            losses = [length / 100 + t for t in range(len(TASKS))]
            rows.append(dict(context_length=length, data_size=size, seed=0, status="ok",
                             best_val_loss=float(np.mean(losses)), task_val_loss=json.dumps(losses),
                             tasks=json.dumps(TASKS), string_length=100))
    image = imread(plot_task_excess(task_loss_table(pd.DataFrame(rows)), tmp_path / "heat.png"))
    height, width = image.shape[:2]
    assert width / height < 3 and width < 2000


def test_report_has_the_section_only_when_trials_carry_task_losses(tmp_path):
    grid, sizes = [8, 11, 16, 23, 32, 45, 64], [1e3, 1e4, 1e5]
    trials = surface_trials(grid, sizes, seeds=(0, 1), noise=0.002, rng=3)
    tasks = [[3, 1], [2, 5], [20, 7], [40, 30], [150, 4]]
    per_task = [task_bayes_risk(tasks, l) + 0.01 for l in trials["context_length"]]
    trials = trials.assign(experiment="synthetic", tasks=json.dumps(tasks), string_length=100,
                           task_val_loss=[json.dumps(v.tolist()) for v in per_task])
    analysis.write_report(trials, tmp_path / "with", n_boot=50, surface_boot=3)
    html = (tmp_path / "with" / "report.html").read_text()
    assert "Which tasks each cell learnt" in html
    table = pd.read_csv(tmp_path / "with" / "task_excess.csv")
    assert len(table) == len(grid) * len(sizes) * len(tasks) and table["excess"].to_numpy() == pytest.approx(0.01)
    analysis.write_report(trials.drop(columns=["task_val_loss"]), tmp_path / "without", n_boot=50, surface_boot=3)
    assert "Which tasks each cell learnt" not in (tmp_path / "without" / "report.html").read_text()
    assert not (tmp_path / "without" / "task_excess.csv").exists()


@pytest.mark.slow
def test_a_real_sweep_stores_one_loss_per_task(synthetic_results):
    from ctxscale.store import load_results

    trials = load_results(synthetic_results, sweep="tiny")
    tasks = json.loads(trials["tasks"].iloc[0])
    for stored, best in zip(trials["task_val_loss"], trials["best_val_loss"]):
        losses = json.loads(stored)  # the store keeps the list as JSON text
        # 1,000 validation rows over the 50 tasks: 20 each, so the task mean is the validation loss
        assert len(losses) == len(tasks) == 50 and np.mean(losses) == pytest.approx(best, rel=1e-9)
    table = task_loss_table(trials)
    assert len(table) == trials.groupby(["data_size", "context_length"]).ngroups * 50
    assert set(table["n_seeds"]) == {2}


def test_docstring_example_runs():
    import doctest

    import analysis.tasks

    assert doctest.testmod(analysis.tasks, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0
