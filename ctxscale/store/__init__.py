"""The results store: Parquet files that are the contract between sweeps and `analysis`.

Layout, one folder per sweep under the results root::

    <root>/<sweep>/trials/<trial_id>.parquet    one row: the trial's outcome, config, versions, hardware
    <root>/<sweep>/history/<trial_id>.parquet   one row per evaluation of that trial
    <root>/<sweep>/<table>/<key>.parquet        other tables (e.g. measurements) follow the same pattern
    <root>/<sweep>/<table>/part-<time>-<hex>.parquet   many finished trials' rows, compacted (`compaction`)

Every trial and history row carries `config_hash`, the hash of the spec sections that change the
numbers (the same hash ends every trial id); rows stored before that column existed get it back
from their trial id when read. Every row has every column of its table's declared schema
(`schema`; the experiment that writes a row declares its own columns), null where unknown.
Every file is written through `ctxscale.files` (a temporary name renamed into place), so a
reader never sees half a file and a crash never leaves a partial row.
A trial's history is written as it is reported (each write replaces the trial's history file
whole, one row per evaluation) and its trial row last: the trial row is the commit marker, and a
trial without one counts as not run. Rewriting a trial (a failed trial run again) replaces its
files whole, so no row is ever stored twice. When a trial's rows are in a compacted part and in
its own file too (a crash during compaction, or a finished trial written again), the trial's own
file wins, then the newest part: readers keep each trial's rows from exactly one file.
This package imports neither Ray nor torch.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Iterable, Mapping, Optional

import pandas as pd
import pyarrow as pa

from .. import files
from ..identity import TRIAL_ID
from . import schema
from .base import StoreError, write_table

TABLES = ("trials", "history")


def sweep_dir(root: str | Path, sweep: str) -> Path:
    return Path(root) / sweep


def write_rows(root: str | Path, sweep: str, table: str, key: str, rows: Iterable[dict],
               schemas: Optional[Mapping[str, pa.Schema]] = None) -> Path:
    """Store `rows` as the file `<root>/<sweep>/<table>/<key>.parquet`, replacing any earlier one.
    `schemas`: the experiment's declared schema of each table (`schema.trials_schema`, ...)."""
    rows = list(rows)
    experiment = next((r.get("experiment") for r in rows if r.get("experiment")), None)
    data = schema.with_metadata(schema.to_table(rows, (schemas or {}).get(table)), table, experiment)  # a bad row writes nothing
    return write_table(sweep_dir(root, sweep) / table / f"{key}.parquet", data)


def write_history(root: str | Path, sweep: str, trial_id: str, history: list[dict],
                  config_hash: Optional[str] = None, experiment: Optional[str] = None,
                  schemas: Optional[Mapping[str, pa.Schema]] = None) -> None:
    """Store a trial's evaluations so far (the whole history, replacing the file): called as they
    are reported, and once more with the trial row."""
    # every evaluation names its configuration too, so a history table alone can be split by it
    tag = {"config_hash": config_hash} if config_hash else {}
    rows = [{"sweep": sweep, "trial_id": trial_id, **tag, **h} for h in history]
    path = sweep_dir(root, sweep) / "history" / f"{trial_id}.parquet"
    if not rows:
        path.unlink(missing_ok=True)
        return
    write_table(path, schema.with_metadata(schema.to_table(rows, (schemas or {}).get("history")), "history", experiment))


def write_trial(root: str | Path, sweep: str, trial_id: str, row: dict, history: list[dict],
                schemas: Optional[Mapping[str, pa.Schema]] = None) -> None:
    """Store one finished (or failed) trial: its history first, then its row, each atomically."""
    write_history(root, sweep, trial_id, history, row.get("config_hash"), row.get("experiment"), schemas)
    flat = schema.flat_config(json.loads(row["config"])) if isinstance(row.get("config"), str) else {}
    write_rows(root, sweep, "trials", trial_id, [{"sweep": sweep, "trial_id": trial_id, **row, **flat}], schemas)


def _is_sweep_folder(path: Path) -> bool:
    return any((path / table).is_dir() for table in TABLES + ("ce", "spectra"))


def sweep_folders(root: str | Path, sweep: Optional[str] = None) -> list[Path]:
    """The sweep folders under a results root (or the root itself when it is one sweep's folder)."""
    root = Path(root)
    if not root.exists():
        raise StoreError(f"{root}: results folder not found")
    if not root.is_dir():
        raise StoreError(f"{root}: not a folder")
    if sweep is not None:
        if _is_sweep_folder(root / sweep):
            return [root / sweep]
        if root.name == sweep and _is_sweep_folder(root):
            return [root]
        known = sorted(p.name for p in root.iterdir() if _is_sweep_folder(p))
        raise StoreError(f"{root}: no sweep named {sweep!r} (found: {', '.join(known) or 'none'})")
    if _is_sweep_folder(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and _is_sweep_folder(p))


def load_table(root: str | Path, table: str = "trials", sweep: Optional[str] = None,
               file_times: bool = False) -> pa.Table:
    """`load_results` as one Arrow table (what `ctxscale results --format parquet` exports)."""
    from .reading import read_table

    tables = [read_table(folder / table, file_times) for folder in sweep_folders(root, sweep)]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def load_results(root: str | Path, table: str = "trials", sweep: Optional[str] = None,
                 file_times: bool = False) -> pd.DataFrame:
    """Read one table of a results store as a pandas DataFrame.

    `root` is a results folder (all sweeps in it) or one sweep's folder; `sweep` picks one sweep.
    A table with no stored rows gives an empty DataFrame. An unreadable file raises StoreError.
    Rows with a trial id carry `config_hash` (older rows get it from the id). `file_times` adds
    `stored_at`, the modification time (UTC) of each row's file: when older rows lack
    `finished_at`, it is the best sign of which configuration ran last.

    >>> trials = load_results("results", sweep="synthetic")          # doctest: +SKIP
    >>> trials.pivot_table("best_val_loss", "context_length", "data_size")  # doctest: +SKIP
    """
    data = load_table(root, table, sweep, file_times)
    if not data.num_rows:
        return pd.DataFrame()
    return _with_config_hash(data.to_pandas())


def _with_config_hash(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill `config_hash` where a row lacks it and its trial id ends in one (rows stored before the
    column existed); ids of any other form (hand-written stores) are left without a hash."""
    if "trial_id" not in frame.columns:
        return frame
    stored = frame["config_hash"] if "config_hash" in frame.columns else pd.Series(None, frame.index, object)
    missing = stored.isna()
    if not missing.any():
        return frame
    from_id = frame["trial_id"].astype(str).str.extract(f"^{TRIAL_ID.pattern}$")["config_hash"]
    if not from_id[missing].notna().any():
        return frame
    return frame.assign(config_hash=stored.where(~missing, from_id))


def stored_trials(root: str | Path, sweep: str) -> dict[str, str]:
    """Status of every trial stored for `sweep` ({trial_id: status}); empty when nothing is stored.
    Reads the compacted parts' two columns and only the trial files that changed since the last
    call (`reading.trial_statuses`)."""
    from .reading import trial_statuses

    return trial_statuses(sweep_dir(root, sweep))


def check_readable(root: str | Path, sweep: str) -> None:
    """Read what a launch reads of a sweep's store (every trial's status), so a corrupt trial file
    is reported before any work."""
    stored_trials(root, sweep)


def check_writable(root: str | Path, sweep: str) -> None:
    """Create the sweep's folder and write (and remove) a file in it, so an unwritable results
    folder is one line before any work."""
    folder = sweep_dir(root, sweep)
    probe = folder / f".write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # launches at once: one each
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files.write_bytes(probe, b"")
        probe.unlink()
    except OSError as err:
        raise StoreError(f"{folder}: the results folder cannot be written ({err.strerror or err})") from None


def compact(root: str | Path, sweep: str) -> dict[str, int]:
    """Fold a sweep's finished trials into one Parquet file per table (see `compaction`)."""
    from .compaction import compact_sweep

    return compact_sweep(sweep_dir(root, sweep))
