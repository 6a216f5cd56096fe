"""Small text tables printed at the end of a sweep."""
from __future__ import annotations

import pandas as pd


def status_counts(trials: pd.DataFrame) -> str:
    counts = trials["status"].value_counts()
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "none stored"


def best_loss_table(trials: pd.DataFrame) -> str:
    """Best validation loss (mean over seeds) per context length (rows) and data size (columns);
    '*' marks the best context length of each data size."""
    ok = trials[trials["status"] == "ok"]
    if ok.empty:
        return "(no successful trials)"
    table = ok.pivot_table(index="context_length", columns="data_size", values="best_val_loss", aggfunc="mean")
    best = table.idxmin(axis=0)
    cells = {
        size: [("" if pd.isna(v) else f"{v:.4f}" + ("*" if length == best[size] else " "))
               for length, v in table[size].items()]
        for size in table.columns
    }
    shown = pd.DataFrame(cells, index=table.index)
    shown.columns = [f"D={size:,}" for size in table.columns]
    shown.index.name = "context_length"
    footer = "best context length per data size: " + ", ".join(
        f"D={size:,}: {best[size]}" for size in table.columns)
    return shown.to_string() + "\n" + footer
