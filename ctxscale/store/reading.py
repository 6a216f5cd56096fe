"""Reading a table folder of the store fast: every file of it read on a thread pool into one
explicit schema, each trial's rows kept from exactly one file (its own file, else
the newest compacted part), and the launch's skip check without reading every trial file.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import files
from . import schema
from .base import StoreError

PART_PREFIX = "part-"
INDEX = "_index/trial-status.parquet"  # per sweep folder: the skip check's cache of trial files' status


def listing(folder: Path) -> tuple[list[os.DirEntry], list[os.DirEntry]]:
    """A table folder's compacted parts (oldest first) and its own files (by name)."""
    if not folder.is_dir():
        return [], []
    entries = [e for e in os.scandir(folder) if e.name.endswith(".parquet") and not e.name.startswith(".")]
    parts = sorted((e for e in entries if e.name.startswith(PART_PREFIX)), key=lambda e: e.name)
    loose = sorted((e for e in entries if not e.name.startswith(PART_PREFIX)), key=lambda e: e.name)
    return parts, loose


def _unreadable(paths: list[str], err: Exception):
    for path in paths:  # the slow path, only after a failure: name the file
        try:
            pq.read_table(path)
        except (OSError, pa.ArrowException) as file_err:
            raise StoreError(f"{path}: not a readable Parquet file ({file_err})") from None
    raise StoreError(f"{Path(paths[0]).parent}: cannot be read ({err})") from None


def _read_file(path: str, columns: list[str] | None) -> pa.Table:
    handle = pq.ParquetFile(path)  # the plain reader: a tenth of a dataset fragment's overhead per small file
    if columns is not None:
        columns = [c for c in columns if handle.schema_arrow.get_field_index(c) >= 0]
    return handle.read(columns=columns)


def scan(paths: list[str], columns: list[str] | None = None, unified: pa.Schema | None = None) -> pa.Table:
    """The rows of `paths` in one schema (`schema.reading_schema` of the parts and the first and
    last other file), with `__filename`; `columns` picks columns. Files are read on a thread pool
    (Arrow releases the GIL while it decodes)."""
    if unified is None:
        sample = [p for p in paths if Path(p).name.startswith(PART_PREFIX)]
        sample += [p for p in (paths[0], paths[-1]) if p not in sample]
        try:
            unified = schema.reading_schema(pq.read_schema(p) for p in sample)
        except (OSError, pa.ArrowException) as err:
            _unreadable(sample, err)
    names = [c for c in (columns or unified.names) if c in unified.names]
    try:
        with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
            wanted = None if columns is None else names  # every column: no projection to resolve per file
            tables = list(pool.map(lambda path: _read_file(path, wanted), paths))
        data = pa.concat_tables(tables, promote_options="permissive")
    except (OSError, pa.ArrowException) as err:
        _unreadable(paths, err)
    arrays = []
    for name in names:
        field = unified.field(name)
        kind = field.type
        if pa.types.is_null(kind):  # no sampled file typed it: the rows' own type, else text
            kind = data[name].type if name in data.column_names else schema.STR
            kind = schema.STR if pa.types.is_null(kind) else kind
        if name in data.column_names:
            column = data[name]
            arrays.append(column if column.type == kind else column.cast(kind))
        else:
            arrays.append(pa.nulls(data.num_rows, kind))
    source = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(len(paths), dtype=np.int32), [t.num_rows for t in tables])), pa.array(paths))
    return pa.Table.from_arrays(arrays + [source.cast(pa.string())],
                                names=names + ["__filename"])


def one_source_per_trial(data: pa.Table, order: list[str]) -> pa.Table:
    """Keep each trial's rows from the last of `order` (file paths) that has it."""
    if "trial_id" not in data.column_names or len(order) < 2:
        return data
    import pandas as pd

    rank = pc.index_in(data["__filename"], value_set=pa.array(order)).to_numpy(zero_copy_only=False)
    frame = pd.DataFrame({"trial": data["trial_id"].to_numpy(zero_copy_only=False), "rank": rank})
    keep = frame["rank"].to_numpy() == frame.groupby("trial", sort=False)["rank"].transform("max").to_numpy()
    return data if keep.all() else data.filter(pa.array(keep))


def read_table(folder: Path, file_times: bool = False) -> pa.Table:
    """Every row of one table folder (`<sweep>/<table>`), sorted by trial id, or an empty table."""
    parts, loose = listing(folder)
    paths = [e.path for e in parts + loose]
    if not paths:
        return pa.table({})
    data = one_source_per_trial(scan(paths), paths)
    if file_times:
        # a trial's own file: its time; a part keeps each row's `stored_at` from its own file
        mtimes = pa.array([e.stat().st_mtime_ns // 1000 for e in loose], pa.int64()).cast(schema.TIME)
        own = pc.take(mtimes, pc.index_in(data["__filename"], value_set=pa.array([e.path for e in loose], pa.string())))
        if "stored_at" in data.column_names:
            own = pc.coalesce(own, data["stored_at"].cast(schema.TIME))
            data = data.drop_columns(["stored_at"])
        data = data.append_column("stored_at", own)
    elif "stored_at" in data.column_names:
        data = data.drop_columns(["stored_at"])
    data = data.drop_columns(["__filename"])
    if "trial_id" in data.column_names and len(paths) > 1:  # one file (a part) is sorted already
        data = data.take(pc.sort_indices(data["trial_id"]))  # stable: a trial's history stays in order
    return data


def trial_statuses(sweep_folder: Path) -> dict[str, str]:
    """{trial id: status} of a sweep: the parts' two columns, and the trial files' status from the
    index where the file is the one indexed (same inode, size and time), else from the file."""
    parts, loose = listing(sweep_folder / "trials")
    statuses: dict[str, str] = {}
    for part in parts:
        data = scan([part.path], ["trial_id", "status"])
        statuses.update(zip(data["trial_id"].to_pylist(), data["status"].to_pylist()))
    index_path = sweep_folder / INDEX
    index: dict[str, tuple] = {}
    if index_path.is_file():
        try:
            cached = pq.read_table(index_path).to_pydict()
            index = {n: (i, m, s, st) for n, i, m, s, st in zip(
                cached["name"], cached["inode"], cached["mtime_ns"], cached["size"], cached["status"])}
        except (OSError, pa.ArrowException, KeyError):
            index = {}  # only a cache: rebuilt from the files
    fresh, stale = {}, []
    for entry in loose:
        info = entry.stat()
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        if entry.name in index and index[entry.name][:3] == key:
            fresh[entry.name] = (*key, index[entry.name][3])
        else:
            stale.append((entry, key))
    if stale:
        paths = [entry.path for entry, _ in stale]
        data = scan(paths, ["status"], unified=pa.schema([("status", schema.STR)]))
        counts = pc.value_counts(data["__filename"]).to_pylist()
        status_of = dict(zip(data["__filename"].to_pylist(), data["status"].to_pylist()))
        rows_of = {c["values"]: c["counts"] for c in counts}
        for entry, key in stale:
            if rows_of.get(entry.path) != 1 or status_of.get(entry.path) is None:
                raise StoreError(f"{entry.path}: expected one trial row with a status column")
            fresh[entry.name] = (*key, status_of[entry.path])
    if stale or len(fresh) != len(index):
        try:
            names = list(fresh)
            files.atomic_write(index_path, lambda handle: pq.write_table(pa.table({
                "name": names, "inode": [fresh[n][0] for n in names], "mtime_ns": [fresh[n][1] for n in names],
                "size": [fresh[n][2] for n in names], "status": [fresh[n][3] for n in names]}), handle))
        except OSError:
            pass  # a read-only store is read every time instead
    statuses.update({name[:-len(".parquet")]: value[3] for name, value in fresh.items()})
    return statuses
