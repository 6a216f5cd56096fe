"""The heat map of which tasks each cell learnt (drawn from `analysis.tasks.task_loss_table`).

matplotlib is imported inside the function, so importing this module costs nothing.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd


def plot_task_excess(table: pd.DataFrame, path) -> Path:
    """Task x context length, one panel per data size; colour = loss - the task's Bayes loss.

    The colour scale runs from 0 (learnt down to its Bayes loss) to ln 2 (no better than a coin);
    a dot marks the cells whose task cannot be predicted at that context length (Bayes loss ln 2),
    so the boundary the Bayes risk steps along is visible. Cells with no trial are grey.
    """
    from matplotlib import colormaps

    from .plots import _figure, _fmt_size, _save

    sizes = sorted(table["data_size"].unique())
    lengths = sorted(table["context_length"].unique())
    tasks = table.drop_duplicates("task").sort_values("task")
    labels = [f"{l},{a}" for l, a in zip(tasks["l"], tasks["a"])]
    n_tasks = len(tasks)

    fig = _figure(1.2 + 0.25 * len(lengths) * len(sizes) + 0.6 * len(sizes), max(3.0, 1.4 + 0.12 * n_tasks))
    axes = np.atleast_1d(fig.subplots(1, len(sizes), sharey=True, squeeze=False)[0])
    cmap = colormaps["magma_r"].with_extremes(bad="0.85")
    image = None
    for ax, size in zip(axes, sizes):
        sub = table[table["data_size"] == size]
        excess = sub.pivot(index="task", columns="context_length", values="excess").reindex(
            index=tasks["task"], columns=lengths)
        image = ax.imshow(excess.to_numpy(float), aspect="auto", cmap=cmap, vmin=0.0, vmax=math.log(2),
                          interpolation="nearest", origin="upper")
        hidden = sub.pivot(index="task", columns="context_length", values="bayes_loss").reindex(
            index=tasks["task"], columns=lengths).to_numpy(float) > 0
        rows, cols = np.nonzero(hidden)
        ax.plot(cols, rows, ".", ms=1.5, color="0.55")
        ax.set_xticks(range(len(lengths)), [f"{c:g}" for c in lengths], fontsize=6, rotation=90)
        ax.set_title(f"D = {_fmt_size(size)}", fontsize=9)
        ax.set_xlabel("context length l", fontsize=8)
    axes[0].set_yticks(range(n_tasks), labels, fontsize=max(3.5, min(7.0, 300 / max(n_tasks, 1))))
    axes[0].set_ylabel("task (l, a), in the task list's order", fontsize=8)
    bar = fig.colorbar(image, ax=list(axes), extend="both", shrink=0.8)
    bar.set_label("task loss − its Bayes loss (nats); dot: task not predictable at l", fontsize=7)
    fig.suptitle("Which tasks each cell learnt", fontsize=10)
    return _save(fig, path)


def write_task_excess(trials: pd.DataFrame, out_dir) -> Path:
    """The report's per-task section: task_excess.csv (`task_loss_table`) and task_excess.png; returns the PNG."""
    from .tasks import task_loss_table

    out = Path(out_dir)
    table = task_loss_table(trials)
    table.to_csv(out / "task_excess.csv", index=False)
    return plot_task_excess(table, out / "task_excess.png")
