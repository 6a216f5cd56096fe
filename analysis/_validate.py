"""Input checks shared by the analysis functions, kept in one place instead of repeated inline."""
from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from .results import OptimumResult

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


def finite_pairs(x, y, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length 1-D float arrays, without the pairs where either value is not finite."""
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"{x_name} and {y_name} differ in length ({xa.size} vs {ya.size})")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep]


def positive_pairs(x, y, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
    """finite_pairs whose x must be positive."""
    xa, ya = finite_pairs(x, y, x_name, y_name)
    if (xa <= 0).any():
        raise ValueError(f"{x_name} must be positive, got {xa[xa <= 0][:5].tolist()}")
    return xa, ya


# --- One configuration per fit ------------------------------------------------------------------
#
# Every stored row carries `config_hash`, the hash of the spec sections that change its numbers. A
# fit over rows of two configurations mixes two experiments (an edited spec's trials would pass for
# extra seeds), so the fits refuse such frames, and the report picks one configuration first.
# Frames without the column (hand-made ones, stores older than it) are taken as one configuration.

CONFIG_COLUMN = "config_hash"
_NO_HASH = "(no config_hash)"


def _hash_labels(source) -> Optional[pd.Series]:
    """The configuration of each row as strings (rows without one labelled _NO_HASH), or None
    when `source` names no configuration at all (no column, or no row with a hash)."""
    if source is None:
        return None
    if isinstance(source, pd.DataFrame):
        if CONFIG_COLUMN not in source.columns:
            return None
        source = source[CONFIG_COLUMN]
    values = pd.Series(np.asarray(source, dtype=object).ravel())
    missing = values.isna() | values.astype(str).isin(("", "None", "nan"))
    if missing.all():
        return None
    return values.astype(str).where(~missing, _NO_HASH)


def stored_hashes(source) -> list[str]:
    """The distinct config_hash values of a frame (or of an array of hashes), sorted."""
    labels = _hash_labels(source)
    return [] if labels is None else sorted(set(labels) - {_NO_HASH})


def one_configuration(source, what: str) -> Optional[str]:
    """The one config_hash of `source` (a frame, or an array with one hash per point); None when it
    names none. Raises ValueError naming every hash, with its row count, when there are several or
    when some rows have a hash and others do not."""
    labels = _hash_labels(source)
    if labels is None:
        return None
    counts = labels.value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    listed = ", ".join(f"{h}: {n} rows" for h, n in sorted(counts.items()))
    first = min(h for h in counts.index if h != _NO_HASH)
    raise ValueError(f"{what}: the rows mix {len(counts)} configurations ({CONFIG_COLUMN} {listed}); fit one "
                     f"configuration at a time, e.g. rows[rows.{CONFIG_COLUMN} == {first!r}]")


def fits_one_configuration(fit):
    """Decorator of a fit whose first argument is a frame (or an optimum result, read as its
    table): a frame that mixes configurations raises ValueError (see `one_configuration`), and an
    optimum result's table is labelled with the one hash, so that a fit of that table (the law)
    can check it in turn."""
    first = next(iter(inspect.signature(fit).parameters))

    @functools.wraps(fit)
    def checked(*args, **kwargs):
        frame = args[0] if args else kwargs.get(first)
        frame = frame.table if isinstance(frame, OptimumResult) else frame
        # anything but a frame is left to the fit, which says what it expected
        digest = one_configuration(frame, fit.__name__) if isinstance(frame, pd.DataFrame) else None
        result = fit(*args, **kwargs)
        if digest is not None and isinstance(result, OptimumResult) and CONFIG_COLUMN not in result.table.columns:
            result = dataclasses.replace(result, table=result.table.assign(**{CONFIG_COLUMN: digest}))
        return result

    return checked


@dataclass(frozen=True)
class Configuration:
    """The rows of one configuration picked from a table, and the rows of the others it left out."""

    rows: pd.DataFrame
    config_hash: Optional[str]  # None: the table names no configuration
    left_out: dict  # {other config_hash: rows}
    newest: bool  # picked as the most recent one, not asked for

    def summary(self) -> str:
        """One line: the configuration used and how many rows of others were left out ('' without hashes)."""
        if self.config_hash is None:
            return ""
        how = "the most recent" if self.newest else "as asked"
        others = ", ".join(f"{h}: {n}" for h, n in sorted(self.left_out.items()))
        return (f"configuration {self.config_hash} ({how}); {sum(self.left_out.values())} rows of other "
                f"configurations left out" + (f" ({others})" if others else ""))


def select_configuration(frame: pd.DataFrame, config_hash: Optional[str] = None) -> Configuration:
    """The rows of `config_hash`, or by default of the most recent configuration.

    Most recent: the configuration of the newest row by `finished_at` (written with every trial
    row), or by `stored_at` (the file's time, `load_results(..., file_times=True)`) for rows
    without one. A frame that names no configuration is returned whole. Raises ValueError naming
    the stored hashes when `config_hash` is not one of them, or when no row tells its time.
    """
    labels = _hash_labels(frame)
    if labels is None:
        return Configuration(frame, None, {}, False)
    labels.index = frame.index
    known = stored_hashes(frame)
    if config_hash is not None and config_hash not in known:
        raise ValueError(f"config_hash {config_hash!r} is not stored; the stored ones are {', '.join(known)}")
    newest = config_hash is None
    if newest:
        times = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
        for column in ("stored_at", "finished_at"):  # finished_at wins where a row has both
            if column in frame.columns:
                stamped = pd.to_datetime(frame[column], utc=True, errors="coerce")
                times = stamped.where(stamped.notna(), times)
        hashed = labels != _NO_HASH
        latest = times[hashed].groupby(labels[hashed]).max().dropna()
        if latest.empty:
            raise ValueError(f"cannot tell which configuration is the most recent (no finished_at or stored_at "
                             f"times); pick one of {', '.join(known)}")
        config_hash = str(latest.idxmax())
    keep = labels == config_hash
    left_out = {str(h): int(n) for h, n in labels[~keep].value_counts().items()}
    return Configuration(frame.loc[keep].reset_index(drop=True), config_hash, left_out, newest)
