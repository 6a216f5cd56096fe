"""A synthetic set on disk: `save` / `load` a folder, the `cached` copy per set of arguments, and
what ``ctxscale data synthetic`` runs (`write_cli`).

A saved set is a folder of ``bits.npy`` and ``labels.npy`` (uint8, memory-mappable) and
``manifest.json`` (what was generated, with which arguments); it is published whole through
`ctxscale.files.publish_folder`.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ...files import publish_folder
from .dataset import SyntheticSet, TaskList, as_tasks, packed_width
from .generation import generate

FORMAT_VERSION = 1
_FORMAT = "ctxscale-synthetic"
_BITS_FILE, _LABELS_FILE, _MANIFEST_FILE = "bits.npy", "labels.npy", "manifest.json"


def _tasks_sha256(tasks: np.ndarray) -> str:
    return hashlib.sha256(json.dumps(tasks.tolist(), separators=(",", ":")).encode()).hexdigest()


def _cache_key(train_rows: int, val_rows: int, tasks: np.ndarray, string_length: int, seed: int) -> str:
    described = {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "string_length": int(string_length),
        "tasks": tasks.tolist(),
        "train_rows": int(train_rows),
        "val_rows": int(val_rows),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _manifest(data: SyntheticSet) -> dict:
    return {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "key": _cache_key(data.train_rows, data.val_rows, data.tasks, data.string_length, data.seed),
        "train_rows": data.train_rows,
        "val_rows": data.val_rows,
        "string_length": data.string_length,
        "seed": data.seed,
        "tasks": data.tasks.tolist(),
        "tasks_sha256": _tasks_sha256(data.tasks),
        "bits": {"file": _BITS_FILE, "shape": list(data.bits.shape), "dtype": "uint8", "bitorder": "big"},
        "labels": {"file": _LABELS_FILE, "shape": list(data.labels.shape), "dtype": "uint8"},
    }


def _write_set(data: SyntheticSet, folder: Path) -> None:
    np.save(folder / _BITS_FILE, np.ascontiguousarray(data.bits))
    np.save(folder / _LABELS_FILE, np.ascontiguousarray(data.labels))
    (folder / _MANIFEST_FILE).write_text(json.dumps(_manifest(data), indent=1) + "\n")


def save(data: SyntheticSet, out_dir) -> Path:
    """Write ``bits.npy``, ``labels.npy`` and ``manifest.json`` into the new folder ``out_dir``.

    The folder appears whole or not at all (`ctxscale.files.publish_folder`), so a reader never
    sees a half-written set. An existing non-empty ``out_dir`` is an error.
    """
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} already exists and is not empty; remove it or choose another folder")
    if not publish_folder(out_dir, lambda folder: _write_set(data, folder)):
        raise FileExistsError(f"{out_dir} was created by another process while this one was writing")
    return out_dir


def load(path, mmap: bool = True) -> SyntheticSet:
    """Read a set written by `save`; with ``mmap`` the arrays are read-only memory maps.

    Raises ``ValueError`` naming the file when a file is missing, unreadable or disagrees with the
    manifest.
    """
    path = Path(path)
    manifest_path = path / _MANIFEST_FILE
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path}: missing; {path} is not a saved synthetic set")
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != _FORMAT:
            raise ValueError(f"format is {manifest.get('format')!r}, expected {_FORMAT!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {manifest.get('format_version')}, this ctxscale reads {FORMAT_VERSION}")
        train_rows, val_rows = int(manifest["train_rows"]), int(manifest["val_rows"])
        string_length, seed = int(manifest["string_length"]), int(manifest["seed"])
        tasks = as_tasks(manifest["tasks"])
        if _tasks_sha256(tasks) != manifest["tasks_sha256"]:
            raise ValueError("tasks do not match tasks_sha256")
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"{manifest_path}: unusable manifest ({err})") from None

    rows = train_rows + val_rows
    bits = _load_array(path / _BITS_FILE, (rows, packed_width(string_length)), mmap)
    labels = _load_array(path / _LABELS_FILE, (rows,), mmap)
    return SyntheticSet(bits, labels, tasks, string_length, train_rows, val_rows, seed)


def _load_array(file: Path, shape: tuple, mmap: bool) -> np.ndarray:
    if not file.is_file():
        raise ValueError(f"{file}: missing (the manifest lists it)")
    try:
        array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{file}: unreadable or truncated ({err})") from None
    if array.dtype != np.uint8 or array.shape != tuple(shape):
        raise ValueError(f"{file}: holds {array.dtype} {array.shape}, the manifest says uint8 {tuple(shape)}")
    if not mmap:
        array.flags.writeable = False
    return array


def default_cache_dir() -> Path:
    """``$CTXSCALE_CACHE/synthetic`` when the variable is set, else ``~/.cache/ctxscale/synthetic``."""
    root = os.environ.get("CTXSCALE_CACHE")
    return Path(root) / "synthetic" if root else Path.home() / ".cache" / "ctxscale" / "synthetic"


def cached(
    train_rows: int,
    val_rows: int,
    tasks: TaskList,
    string_length: int = 100,
    seed: int = 0,
    cache_dir=None,
) -> SyntheticSet:
    """`generate` once per distinct set of arguments, then `load` (memory-mapped) from the cache.

    Processes that miss at the same time each fill a private temporary folder and rename it into
    place; the first rename wins and the others drop their copy and load the winner's, so the
    cache never holds a mixture. A damaged cache entry raises ``ValueError`` naming the file
    (delete the folder to regenerate it) rather than being silently replaced.
    """
    task_array = as_tasks(tasks)
    key = _cache_key(train_rows, val_rows, task_array, string_length, seed)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / key[:24]
    if entry.is_dir() and any(entry.iterdir()):
        return _load_entry(entry, key)
    data = generate(train_rows, val_rows, task_array, string_length, seed)
    if not publish_folder(entry, lambda folder: _write_set(data, folder)):
        return _load_entry(entry, key)  # another process published first: use its copy
    return data


def _load_entry(entry: Path, key: str) -> SyntheticSet:
    try:
        data = load(entry)
    except ValueError as err:
        raise ValueError(f"{err}; delete the cache folder {entry} to regenerate it") from None
    if _manifest(data)["key"] != key:
        raise ValueError(f"{entry / _MANIFEST_FILE}: describes a different set than its cache key; delete {entry}")
    return data


def write_cli(rows: int, out: str, seed: int = 0, tasks: str = "study50", val_rows: Optional[int] = None) -> dict:
    """What ``ctxscale data synthetic --rows N --out DIR`` runs: generate and save one set.

    ``rows`` counts train + validation; ``val_rows`` defaults to ``rows // 6`` (the study drew
    10M training + 2M validation rows). Re-running with the same arguments on a folder that holds
    that set does nothing (``reused`` is True); a folder holding anything else is an error.
    """
    from ctxscale.spec.synthetic import load_task_list  # pydantic import kept off the module import

    val_rows = rows // 6 if val_rows is None else val_rows
    train_rows = rows - val_rows
    if val_rows < 0 or train_rows < 1:
        raise ValueError(f"--val-rows {val_rows} leaves {train_rows} training rows out of --rows {rows}")
    task_array = as_tasks(load_task_list(tasks))
    out_dir = Path(out)

    started = time.perf_counter()
    reused = out_dir.is_dir() and any(out_dir.iterdir())
    if reused:
        existing = load(out_dir)
        key = _cache_key(train_rows, val_rows, task_array, 100, seed)
        if _manifest(existing)["key"] != key:
            raise ValueError(f"{out_dir} holds a different synthetic set; remove it or choose another --out")
    else:
        save(generate(train_rows, val_rows, task_array, seed=seed), out_dir)
    seconds = time.perf_counter() - started

    on_disk = sum((out_dir / name).stat().st_size for name in (_BITS_FILE, _LABELS_FILE))
    return {
        "path": str(out_dir),
        "rows": rows,
        "train_rows": train_rows,
        "val_rows": val_rows,
        "tasks": len(task_array),
        "seed": seed,
        "seconds": round(seconds, 3),
        "bytes_per_row": round(on_disk / rows, 3),
        "reused": reused,
    }
