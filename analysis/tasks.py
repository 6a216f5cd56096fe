"""Which tasks each (data size, context length) cell learnt: per-task loss against per-task Bayes loss.

A synthetic trial stores `task_val_loss`, the validation BCE of each task (in the task list's
order) with its best weights. A task's own Bayes loss is 0 or ln 2: ln 2 when its farthest bit
max(l, a) lies beyond min(context length, string length) or beyond the string, 0 when both bits
are visible, and 0 for a task l == a inside the string (its label is always 0). The excess over
it says whether the model learnt that task. `analysis.plots.plot_task_excess` draws the table.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from . import _validate

TASK_LOSS_COLUMN = "task_val_loss"


def has_task_losses(trials: pd.DataFrame) -> bool:
    """Whether any row of `trials` carries a per-task loss list (`task_val_loss`)."""
    return TASK_LOSS_COLUMN in trials.columns and trials[TASK_LOSS_COLUMN].map(_as_list).map(len).gt(0).any()


def _as_list(value) -> list:
    """A stored list column as a list: JSON text (the store's encoding), a list or array, or nothing."""
    if isinstance(value, str):
        return list(json.loads(value)) if value.strip() else []
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    return []  # None / NaN: a trial without per-task losses


def _one_value(rows: pd.DataFrame, column: str, default):
    values = rows[column].astype(str).unique() if column in rows.columns else np.array([str(default)])
    if len(values) != 1:
        raise ValueError(f"task_loss_table: the rows hold {len(values)} different {column!r} values; "
                         "task indices only mean one thing within one task list")
    return values[0]


def task_loss_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per-task trained loss, Bayes loss and excess for every (data size, context length).

    Parameters
    ----------
    trials : DataFrame
        A synthetic sweep's trials (`ctxscale.load_results`): `context_length`, `data_size`,
        `best_val_loss`, `task_val_loss` (one loss per task, JSON text or a list), `tasks` (the
        JSON [l, a] list) and `string_length` (100 when absent). Rows that failed, diverged or
        carry no task losses are left out. All rows must share one task list and string length.

    Returns
    -------
    DataFrame
        One row per (data_size, context_length, task), sorted so: `task` (index in the task
        list), `l`, `a`, `loss` (mean over seeds), `loss_sd`, `n_seeds`, `bayes_loss` (ln 2 if
        the task cannot be predicted at that context length, else 0) and
        `excess = loss - bayes_loss`.

    Raises
    ------
    ValueError
        When no usable row has task losses, the rows mix task lists or string lengths, or a
        row's list does not hold one loss per task.

    Examples
    --------
    >>> trials = pd.DataFrame({
    ...     "context_length": [4, 4, 8], "data_size": 1000, "seed": [0, 1, 0],
    ...     "best_val_loss": [0.36, 0.37, 0.02], "tasks": "[[3, 1], [6, 2]]", "string_length": 16,
    ...     "task_val_loss": ["[0.02, 0.70]", "[0.04, 0.70]", "[0.01, 0.03]"]})
    >>> table = task_loss_table(trials)
    >>> table[["context_length", "task", "l", "a", "loss", "bayes_loss", "excess"]].round(3)
       context_length  task  l  a  loss  bayes_loss  excess
    0               4     0  3  1  0.03       0.000   0.030
    1               4     1  6  2  0.70       0.693   0.007
    2               8     0  3  1  0.01       0.000   0.010
    3               8     1  6  2  0.03       0.000   0.030
    """
    # imported here: analysis reads the one Bayes formula of the generator (numpy only)
    from ctxscale.data.synthetic import task_bayes_risk

    ok, _ = _validate.split_trials(trials)
    if TASK_LOSS_COLUMN not in ok.columns:
        raise ValueError(f"task_loss_table needs a {TASK_LOSS_COLUMN!r} column (synthetic trials stored by "
                         "a ctxscale that records per-task losses)")
    losses = ok[TASK_LOSS_COLUMN].map(_as_list)
    ok = ok.loc[losses.map(len) > 0]
    losses = losses.loc[ok.index]
    if ok.empty:
        raise ValueError(f"task_loss_table: no usable trial carries {TASK_LOSS_COLUMN!r}")
    if "tasks" not in ok.columns:
        raise ValueError("task_loss_table needs the 'tasks' column (the [l, a] list the losses refer to)")
    tasks = np.asarray(json.loads(_one_value(ok, "tasks", "")), dtype=int)
    string_length = int(float(_one_value(ok, "string_length", 100)))
    lengths = losses.map(len)
    if (lengths != len(tasks)).any():
        raise ValueError(f"task_loss_table: {TASK_LOSS_COLUMN} holds {sorted(set(lengths))} values per row "
                         f"for {len(tasks)} tasks")

    per_task = pd.DataFrame({
        "data_size": np.repeat(ok["data_size"].to_numpy(), len(tasks)),
        "context_length": np.repeat(ok["context_length"].to_numpy(), len(tasks)),
        "task": np.tile(np.arange(len(tasks)), len(ok)),
        "task_loss": np.concatenate([np.asarray(v, dtype=float) for v in losses]),
    })
    table = (per_task.groupby(["data_size", "context_length", "task"])["task_loss"]
             .agg(loss="mean", loss_sd="std", n_seeds="count").reset_index())
    table.insert(3, "l", tasks[table["task"], 0])
    table.insert(4, "a", tasks[table["task"], 1])
    # task_bayes_risk is (..., T): one row of task risks per context length
    risk = task_bayes_risk(tasks, table["context_length"].to_numpy(int), string_length)
    table["bayes_loss"] = risk[np.arange(len(table)), table["task"].to_numpy()]
    table["excess"] = table["loss"] - table["bayes_loss"]
    return table.sort_values(["data_size", "context_length", "task"]).reset_index(drop=True)
