"""The results store: Parquet files that are the contract between sweeps and `analysis`.

Layout, one folder per sweep under the results root::

    <root>/<sweep>/trials/<trial_id>.parquet    one row: the trial's outcome, config, versions, hardware
    <root>/<sweep>/history/<trial_id>.parquet   one row per evaluation of that trial
    <root>/<sweep>/<table>/<key>.parquet        other tables (e.g. measurements) follow the same pattern

Every trial and history row carries `config_hash`, the hash of the spec sections that change the
numbers (the same hash ends every trial id); rows stored before that column existed get it back
from their trial id when read. Every file is written through `ctxscale.files` (a temporary name
renamed into place), so a reader never sees half a file and a crash never leaves a partial row.
A trial's history is written before its trial row: the trial row is the commit marker, and a
trial without one counts as not run. Rewriting a trial (a failed trial run again) replaces its
files whole, so no row is ever stored twice. This module imports neither Ray nor torch.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import files
from .errors import UserError

TABLES = ("trials", "history")


class StoreError(UserError, ValueError):
    """A results folder or file is missing or unreadable; the message names it."""


def sweep_dir(root: str | Path, sweep: str) -> Path:
    return Path(root) / sweep


def write_rows(root: str | Path, sweep: str, table: str, key: str, rows: Iterable[dict]) -> Path:
    """Store `rows` as the file `<root>/<sweep>/<table>/<key>.parquet`, replacing any earlier one."""
    frame = pd.DataFrame(list(rows))
    return files.write_parquet(sweep_dir(root, sweep) / table / f"{key}.parquet", frame)


def write_trial(root: str | Path, sweep: str, trial_id: str, row: dict, history: list[dict]) -> None:
    """Store one finished (or failed) trial: its history first, then its row, each atomically."""
    # every evaluation names its configuration too, so a history table alone can be split by it
    tag = {"config_hash": row["config_hash"]} if "config_hash" in row else {}
    history_rows = [{"sweep": sweep, "trial_id": trial_id, **tag, **h} for h in history]
    if history_rows:
        write_rows(root, sweep, "history", trial_id, history_rows)
    else:
        (sweep_dir(root, sweep) / "history" / f"{trial_id}.parquet").unlink(missing_ok=True)
    write_rows(root, sweep, "trials", trial_id, [{"sweep": sweep, "trial_id": trial_id, **row}])


def _read(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as err:
        raise StoreError(f"{path}: not a readable Parquet file ({err})") from None


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
    frames = []
    for folder in sweep_folders(root, sweep):
        for path in sorted((folder / table).glob("*.parquet")):
            frame = _read(path)
            if frame.empty:
                continue
            if file_times:
                frame["stored_at"] = pd.Timestamp(path.stat().st_mtime, unit="s", tz="UTC")
            frames.append(frame)
    return _with_config_hash(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame()


_TRIAL_ID = re.compile(r"^l\d+_d\d+_s\d+_([0-9a-f]{8})$")  # sweep.grid.expand_grid's ids


def _with_config_hash(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill `config_hash` where a row lacks it and its trial id ends in one (rows stored before the
    column existed); ids of any other form (hand-written stores) are left without a hash."""
    if "trial_id" not in frame.columns:
        return frame
    stored = frame["config_hash"] if "config_hash" in frame.columns else pd.Series(None, frame.index, object)
    missing = stored.isna()
    if not missing.any():
        return frame
    from_id = frame["trial_id"].astype(str).str.extract(_TRIAL_ID, expand=False)
    if not from_id[missing].notna().any():
        return frame
    return frame.assign(config_hash=stored.where(~missing, from_id))


def stored_trials(root: str | Path, sweep: str) -> dict[str, str]:
    """Status of every trial stored for `sweep` ({trial_id: status}); empty when nothing is stored."""
    folder = sweep_dir(root, sweep) / "trials"
    if not folder.is_dir():
        return {}
    out = {}
    for path in folder.glob("*.parquet"):
        frame = _read(path)
        if len(frame) != 1 or "status" not in frame.columns:
            raise StoreError(f"{path}: expected one trial row with a status column")
        out[path.stem] = str(frame["status"].iloc[0])
    return out


def check_readable(root: str | Path, sweep: str) -> None:
    """Read every stored file of a sweep once, so a corrupt store is reported before any work."""
    folder = sweep_dir(root, sweep)
    if not folder.exists():
        return
    for path in sorted(folder.glob("*/*.parquet")):
        _read(path)
