"""Writing files and folders so that a reader sees them whole or not at all.

Everything ctxscale stores (results, data sets, corpora, downloads, saved models) goes through
here. A file is written under a hidden temporary name in its own folder, flushed to disk, and
renamed over its final name; a rename within one file system is atomic, so a reader never sees
half a file and a crash leaves at most a stray temporary, never a truncated file under the real
name. On any failure the temporary is removed and the error propagates. A folder is filled under
a temporary name beside its final one and renamed into place the same way.

    atomic_write(path, write)           write(handle) fills the file; the typed helpers below use it
    write_bytes / write_text / write_json / write_npy / write_parquet
    publish_folder(target, fill)        fill(folder) fills a fresh folder that becomes `target`

Only the standard library is imported at module level: numpy and pyarrow are imported by the
helpers that need them, so importing this module costs nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

PathLike = Union[str, os.PathLike]
TEMP_MARK = ".tmp-"  # in every temporary name, so a leftover is easy to recognise


def _temp_sibling(path: Path) -> Path:
    # hidden and ending in random hex: never matched by the globs that read a folder (*.parquet, *.npy)
    return path.with_name(f".{path.name}{TEMP_MARK}{uuid.uuid4().hex[:12]}")


def _sync_folder(folder: Path) -> None:
    # POSIX makes a rename durable only once its folder is synced; platforms that cannot open a
    # folder (Windows) lose only that durability, not atomicity
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Create or replace the file `path` with what `write(handle)` writes to a binary handle.

    The parent folder is created when missing. An existing file is replaced whole, only after
    `write` returned; if `write` (or anything after it) raises, `path` keeps its old content (or
    stays absent) and no temporary file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_sibling(path)
    try:
        with open(temp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)  # gone already after a successful replace
    _sync_folder(path.parent)
    return path


def write_bytes(path: PathLike, data: bytes) -> Path:
    """`atomic_write` of `data`."""
    return atomic_write(path, lambda handle: handle.write(data))


def write_text(path: PathLike, text: str) -> Path:
    """`atomic_write` of `text` encoded as UTF-8."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, obj: Any, indent: int = 1) -> Path:
    """`atomic_write` of `obj` as JSON text (keys in the order given) with a final newline."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_npy(path: PathLike, array: Any) -> Path:
    """`atomic_write` of one array in NumPy's .npy format (no pickled objects)."""
    import numpy as np

    return atomic_write(path, lambda handle: np.save(handle, np.asarray(array), allow_pickle=False))


def write_parquet(path: PathLike, frame: Any) -> Path:
    """`atomic_write` of a pandas DataFrame as Parquet, without its index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)  # before the file: a bad frame writes nothing
    return atomic_write(path, lambda handle: pq.write_table(table, handle))


def _sync_files(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file() and not file.is_symlink():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def publish_folder(target: PathLike, fill: Callable[[Path], Any]) -> bool:
    """Make the folder `target` appear whole: `fill(folder)` fills a fresh temporary folder beside
    it, whose files are then synced to disk and which is renamed to `target`.

    Returns True when this call's folder became `target` (an absent or empty `target` is taken),
    False when `target` already had content, typically because another process published the
    same folder first; the caller decides whether that content will do. The temporary folder is
    removed in every case but success, also when `fill` raises.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_sibling(target)
    temp.mkdir()
    try:
        fill(temp)
        _sync_files(temp)
        try:
            # over an empty folder rename succeeds on POSIX; over a non-empty one it fails
            os.rename(temp, target)
        except OSError:
            if target.is_dir() and any(target.iterdir()):
                return False
            raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # gone already after a successful rename
    _sync_folder(target.parent)
    return True
