"""Compaction: a sweep's finished trials, one file per trial and table, folded into one Parquet
file per table (`<table>/part-<time>-<hex>.parquet`), so that reading 100,000 trials opens a few
files instead of 100,000.

Only finished trials (ok, diverged) are compacted: they are never run again, so a trial's rows
are in a part or in its own files, not both, and a plain glob over the folder (DuckDB, polars)
sees each row once. A failed trial keeps its own files until it runs again and succeeds.

Crash-safe without a lock on the data: the new parts (history first, then trials, as a trial is
stored) hold every row of the old parts and of the files folded in; each is written whole
(`ctxscale.files`) before anything is removed, and a file is removed only if it is still the one
that was read. A crash (kill -9) at any moment leaves every row in at least one file, and a row
in two files (the new part and the file or old part it came from) is read once, because readers
keep each trial's rows from one file only (`reading.one_source_per_trial`); the next compaction
removes the leftovers. Two compactions of one sweep do not run at once: the CLI and the runner
take the sweep's `compaction` claim (`ctxscale.sweep.lease`) first.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ..files import TEMP_MARK
from . import schema
from .base import write_table
from .reading import PART_PREFIX, listing, one_source_per_trial, scan

FINISHED = ("ok", "diverged")


def _part_name() -> str:
    # sorts by creation time: of two parts holding one trial, readers keep the newer
    return f"{PART_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"


def _fold(parts: list, own: list, mtimes: dict) -> tuple[pa.Table, list]:
    """The old parts' rows and those of `own` (trials' own files), with `stored_at`; what was read."""
    paths = [e.path for e in parts + own]
    data = one_source_per_trial(scan(paths), paths)
    stored_at = pa.array([mtimes.get(f) for f in data["__filename"].to_pylist()], pa.int64()).cast(schema.TIME)
    if "stored_at" in data.column_names:
        stored_at = pc.coalesce(stored_at, data["stored_at"].cast(schema.TIME))
        data = data.drop_columns(["stored_at"])
    data = data.drop_columns(["__filename"]).append_column("stored_at", stored_at)
    if "trial_id" in data.column_names:
        data = data.take(pc.sort_indices(data["trial_id"]))
    return data, parts + own


def _remove_if_unchanged(entry: os.DirEntry, seen: tuple) -> bool:
    try:
        info = os.stat(entry.path)
    except FileNotFoundError:
        return False
    if (info.st_ino, info.st_mtime_ns, info.st_size) != seen:
        return False  # rewritten since it was read: it stays, and wins over the part
    os.unlink(entry.path)
    return True


def _remove_stray_temporaries(folder: Path) -> None:
    # left by a process killed mid-write; nothing else writes a sweep's tables while it is compacted
    if folder.is_dir():
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and TEMP_MARK in entry.name:
                os.unlink(entry.path)


def compact_sweep(sweep_folder: Path) -> dict[str, int]:
    """Compact one sweep folder; returns {'trials': rows, 'history': rows, 'files': files removed}."""
    trials_dir, history_dir = sweep_folder / "trials", sweep_folder / "history"
    for folder in (trials_dir, history_dir):
        _remove_stray_temporaries(folder)
    trial_parts, trial_files = listing(trials_dir)
    history_parts, history_files = listing(history_dir)
    if not trial_files and len(trial_parts) <= 1 and len(history_parts) <= 1:
        return {"trials": 0, "history": 0, "files": 0}
    seen = {e.path: (e.stat().st_ino, e.stat().st_mtime_ns, e.stat().st_size)
            for e in trial_parts + trial_files + history_parts + history_files}
    status = scan([e.path for e in trial_files], ["status"]) if trial_files else None
    finished = {Path(f).stem for f, s in zip(status["__filename"].to_pylist(), status["status"].to_pylist())
                if s in FINISHED} if status is not None else set()
    own_trials = [e for e in trial_files if e.name[:-len(".parquet")] in finished]
    own_history = [e for e in history_files if e.name[:-len(".parquet")] in finished]
    if not own_trials and len(trial_parts) <= 1 and len(history_parts) <= 1:
        return {"trials": 0, "history": 0, "files": 0}
    mtimes = {p: seen[p][1] // 1000 for p in seen}
    history, read_history = (_fold(history_parts, own_history, mtimes)
                             if history_parts or own_history else (None, []))
    trials, read_trials = _fold(trial_parts, own_trials, mtimes) \
        if trial_parts or own_trials else (None, [])
    experiment = None
    if trials is not None and "experiment" in trials.column_names and trials.num_rows:
        experiment = trials["experiment"][0].as_py()
    # the history before the trials, as a trial is stored: the trial row stays the commit marker
    if history is not None:
        write_table(history_dir / _part_name(), schema.with_metadata(history, "history", experiment))
    if trials is not None:
        write_table(trials_dir / _part_name(), schema.with_metadata(trials, "trials", experiment))
    removed = 0
    for entry in read_history + read_trials:  # old parts and folded files, only now
        removed += _remove_if_unchanged(entry, seen[entry.path])
    return {"trials": trials.num_rows if trials is not None else 0,
            "history": history.num_rows if history is not None else 0, "files": removed}
