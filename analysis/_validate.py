"""Input checks shared by the analysis functions, kept in one place instead of repeated inline."""
from __future__ import annotations

import numpy as np
import pandas as pd

TRIAL_COLUMNS = ("context_length", "data_size", "best_val_loss")


def split_trials(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check a trials table and split it into (usable rows, excluded rows).

    Usable: status 'ok' (a table without a status column counts as all 'ok') and a finite,
    non-negative best_val_loss. Everything else (failed, diverged, an 'ok' row whose loss is not a
    number) is excluded; callers count the exclusions rather than silently dropping them. A missing
    `seed` column is read as one seed.
    """
    if not isinstance(trials, pd.DataFrame):
        raise TypeError(f"trials must be a pandas DataFrame, got {type(trials).__name__}")
    missing = [c for c in TRIAL_COLUMNS if c not in trials.columns]
    if missing:
        raise ValueError(
            f"trials table lacks column(s) {missing}; it has {sorted(map(str, trials.columns))}"
        )
    frame = trials.copy()
    if "seed" not in frame.columns:
        frame["seed"] = 0
    if "status" not in frame.columns:
        frame["status"] = "ok"
    for column in ("context_length", "data_size", "best_val_loss"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in ("context_length", "data_size"):
        bad = frame[column].isna() | ~(frame[column] > 0)
        if bad.any():
            raise ValueError(f"trials: {column} must be positive numbers; bad values {frame.loc[bad, column].tolist()[:5]}")
    loss = frame["best_val_loss"].to_numpy(dtype=float)
    usable = (frame["status"].astype(str) == "ok").to_numpy() & np.isfinite(loss) & (loss >= 0)
    return frame.loc[usable].reset_index(drop=True), frame.loc[~usable].reset_index(drop=True)


def exclusion_counts(excluded: pd.DataFrame) -> dict:
    """{status: count} of excluded rows; an 'ok' row with an unusable loss counts as 'no loss'."""
    if excluded.empty:
        return {}
    status = excluded["status"].astype(str).where(excluded["status"].astype(str) != "ok", "no loss")
    return {str(k): int(v) for k, v in status.value_counts().sort_index().items()}


def positive_pairs(x, y, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length 1-D float arrays; x must be positive, both finite."""
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"{x_name} and {y_name} differ in length ({xa.size} vs {ya.size})")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    if (xa <= 0).any():
        raise ValueError(f"{x_name} must be positive, got {xa[xa <= 0][:5].tolist()}")
    return xa, ya
