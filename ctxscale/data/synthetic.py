"""The synthetic task of the study (experiment 1): random bit strings labelled by the XOR of two bits.

A task is a pair (l, a). The label of a string is bit[a-1] XOR bit[l-1] (1-based positions) when
both positions lie inside the string, otherwise a fair coin. Row i of a split uses task i mod T and
the row numbering restarts at 0 in the validation split. A model later sees the first
`context_length` bits plus a one-hot of the task, so a task is predictable only when both of its
bits are visible; the Bayes risk is therefore a step function of the context length.

Strings are stored packed (``np.packbits(..., bitorder="big")``, 13 bytes for 100 bits) and no
string occurs twice in train + validation, so validation measures generalisation and not recall.

Only numpy is imported here: ``ctxscale data synthetic`` starts fast, and training code reads the
saved set through memory maps (`load`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "SyntheticSet",
    "bayes_risk",
    "cached",
    "default_cache_dir",
    "generate",
    "load",
    "save",
    "task_bayes_risk",
    "unpack_bits",
    "write_cli",
]

FORMAT_VERSION = 1
_FORMAT = "ctxscale-synthetic"
_BITS_FILE, _LABELS_FILE, _MANIFEST_FILE = "bits.npy", "labels.npy", "manifest.json"

# Rows drawn per call to the bit generator; a multiple of 8 so that the byte stream, and therefore
# the data, does not depend on this number (random_raw hands out 8 bytes at a time).
_CHUNK_ROWS = 1 << 20

TaskList = Union[Sequence[Sequence[int]], np.ndarray]


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays field by field has no single truth value
class SyntheticSet:
    """A generated (or loaded) synthetic set: packed strings, labels and the task list.

    Rows ``[0, train_rows)`` are the training split and ``[train_rows, train_rows + val_rows)``
    the validation split. Arrays are read-only (memory maps when loaded with ``mmap=True``).
    """

    bits: np.ndarray  # (train_rows + val_rows, ceil(L / 8)) uint8, packed big-endian, pad bits 0
    labels: np.ndarray  # (train_rows + val_rows,) uint8 in {0, 1}
    tasks: np.ndarray  # (T, 2) int32 rows of [l, a]
    string_length: int
    train_rows: int
    val_rows: int
    seed: int

    def __post_init__(self):
        rows, width = self.train_rows + self.val_rows, _packed_width(self.string_length)
        if self.bits.shape != (rows, width) or self.labels.shape != (rows,):
            raise ValueError(
                f"bits {self.bits.shape} / labels {self.labels.shape} do not match "
                f"{self.train_rows} + {self.val_rows} rows of {self.string_length} bits"
            )
        if self.tasks.ndim != 2 or self.tasks.shape[1] != 2 or len(self.tasks) == 0:
            raise ValueError(f"tasks must have shape (T, 2) with T >= 1, got {self.tasks.shape}")

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes + self.labels.nbytes + self.tasks.nbytes)

    def task_index(self, start: int, stop: int) -> np.ndarray:
        """Task of each row in ``[start, stop)`` of one split (split row numbers start at 0)."""
        return np.arange(start, stop, dtype=np.int64) % self.num_tasks

    def train(self, n: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(bits, labels, task_index)`` of the first ``n`` training rows (all when None)."""
        n = self.train_rows if n is None else n
        if not 0 <= n <= self.train_rows:
            raise ValueError(f"asked for {n} training rows; the set has {self.train_rows}")
        return self.bits[:n], self.labels[:n], self.task_index(0, n)

    def val(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(bits, labels, task_index)`` of the validation rows."""
        return self.bits[self.train_rows:], self.labels[self.train_rows:], self.task_index(0, self.val_rows)


# --------------------------------------------------------------------------------------------------
# generation


def generate(
    train_rows: int, val_rows: int, tasks: TaskList, string_length: int = 100, seed: int = 0
) -> SyntheticSet:
    """Draw ``train_rows + val_rows`` distinct random strings and label them.

    Deterministic for a seed: the strings come first from ``np.random.default_rng(seed)``, then
    redraws of duplicates, then the coin flips of tasks that reach beyond the string.

    Examples
    --------
    >>> data = generate(60, 12, [[3, 1], [2, 2], [200, 5]], string_length=16, seed=1)
    >>> bits, labels, task = data.train()
    >>> row = unpack_bits(bits[:1], 16)[0]
    >>> int(labels[0]) == int(row[0] ^ row[2])
    True
    """
    task_array = _as_tasks(tasks)
    _check_sizes(train_rows, val_rows, string_length)
    rows, width = train_rows + val_rows, _packed_width(string_length)
    rng = np.random.default_rng(seed)

    bits = np.empty((rows, width), dtype=np.uint8)
    for start in range(0, rows, _CHUNK_ROWS):
        stop = min(rows, start + _CHUNK_ROWS)
        bits[start:stop] = _random_rows(rng, stop - start, width)
    _mask_padding(bits, string_length)
    _make_distinct(bits, rng, string_length)

    # Labels come after de-duplication so their 1 B/row is not held next to the check's keys.
    labels = np.empty(rows, dtype=np.uint8)
    _label_split(labels[:train_rows], bits[:train_rows], task_array, string_length, rng)
    _label_split(labels[train_rows:], bits[train_rows:], task_array, string_length, rng)

    for array in (bits, labels, task_array):
        array.flags.writeable = False
    return SyntheticSet(bits, labels, task_array, string_length, train_rows, val_rows, seed)


def _packed_width(string_length: int) -> int:
    return (string_length + 7) // 8


def _as_tasks(tasks: TaskList) -> np.ndarray:
    array = np.asarray(tasks)
    if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
        raise ValueError(f"tasks must be a non-empty list of [l, a] pairs, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) or (array < 1).any():
        raise ValueError("tasks must hold positive integer bit positions [l, a]")
    if (array > np.iinfo(np.int32).max).any():
        raise ValueError("task bit positions must fit in int32")
    return np.array(array, dtype=np.int32)  # a copy: generate() makes it read-only


def _check_sizes(train_rows: int, val_rows: int, string_length: int) -> None:
    if string_length < 1:
        raise ValueError(f"string_length must be >= 1, got {string_length}")
    if train_rows < 0 or val_rows < 0 or train_rows + val_rows < 1:
        raise ValueError(f"need train_rows >= 0, val_rows >= 0 and at least one row, got {train_rows}, {val_rows}")
    if train_rows + val_rows > 2**string_length:
        raise ValueError(
            f"{train_rows} + {val_rows} distinct rows cannot be drawn from the 2**{string_length} "
            f"strings of length {string_length}"
        )


def _random_rows(rng: np.random.Generator, rows: int, width: int) -> np.ndarray:
    # Raw 64-bit words are the cheapest uniform bytes numpy offers (about 3x rng.integers on uint8).
    need = rows * width
    words = rng.bit_generator.random_raw((need + 7) // 8)
    return words.view(np.uint8)[:need].reshape(rows, width)


def _mask_padding(bits: np.ndarray, string_length: int) -> None:
    pad = 8 * bits.shape[1] - string_length
    if pad:
        # With bitorder="big" the pad bits are the low bits of the last byte; zeroing them makes
        # equal strings equal bytes, which the duplicate check relies on.
        bits[:, -1] &= np.uint8((0xFF << pad) & 0xFF)


def _make_distinct(bits: np.ndarray, rng: np.random.Generator, string_length: int) -> None:
    # Redraw every later copy of a string until a full check finds none. Keeping the first copy
    # favours the training rows; with 100-bit strings the first check practically always passes.
    if bits.shape[1] <= _SMALL_WIDTH:
        _redraw_small(bits, rng, string_length)  # the full check below then only confirms
    while True:
        duplicates = _duplicate_rows(bits)
        if duplicates.size == 0:
            return
        fresh = _random_rows(rng, duplicates.size, bits.shape[1])
        _mask_padding(fresh, string_length)
        bits[duplicates] = fresh


# Strings of up to 3 packed bytes are small integers: a table of used values makes each redraw
# round cost only the rows still pending, which matters when rows come close to 2**L (there a
# full check per round would take hundreds of rounds over all rows).
_SMALL_WIDTH = 3


def _row_values(bits: np.ndarray) -> np.ndarray:
    values = np.zeros(len(bits), dtype=np.int64)
    for byte in range(bits.shape[1]):
        values = (values << 8) | bits[:, byte]
    return values


def _first_occurrences(values: np.ndarray) -> np.ndarray:
    first = np.zeros(len(values), dtype=bool)
    first[np.unique(values, return_index=True)[1]] = True
    return first


def _redraw_small(bits: np.ndarray, rng: np.random.Generator, string_length: int) -> None:
    values = _row_values(bits)
    used = np.zeros(1 << (8 * bits.shape[1]), dtype=bool)
    keep = _first_occurrences(values)
    used[values[keep]] = True
    pending = np.flatnonzero(~keep)
    while pending.size:
        fresh = _random_rows(rng, pending.size, bits.shape[1])
        _mask_padding(fresh, string_length)
        fresh_values = _row_values(fresh)
        accept = ~used[fresh_values] & _first_occurrences(fresh_values)
        bits[pending[accept]] = fresh[accept]
        used[fresh_values[accept]] = True
        pending = pending[~accept]


_KEY_PARTS = 4  # a power of two


def _prefix_keys(bits: np.ndarray) -> np.ndarray:
    """(n,) uint32 made of the first 4 bytes of each row (zero-filled for shorter rows); read only."""
    take = min(4, bits.shape[1])
    if take == 4 and bits.flags.c_contiguous:
        # An unaligned strided view over the packed rows: no copy, and numpy copies only the
        # elements a mask selects (about 4x cheaper than gathering the 4 columns first).
        keys = np.ndarray(shape=(len(bits),), dtype=np.uint32, buffer=bits, strides=(bits.shape[1],))
        keys.flags.writeable = False
        return keys
    if take == 4:
        return np.ascontiguousarray(bits[:, :4]).view(np.uint32).ravel()
    keys = np.zeros((len(bits), 4), dtype=np.uint8)
    keys[:, :take] = bits[:, :take]
    return keys.view(np.uint32).ravel()


def _repeated_values(sorted_keys: np.ndarray) -> np.ndarray:
    # Compared in chunks so no full-length boolean temporary (1 B/row) sits next to the keys.
    parts = [np.empty(0, dtype=sorted_keys.dtype)]
    for start in range(0, len(sorted_keys) - 1, _CHUNK_ROWS):
        stop = min(len(sorted_keys) - 1, start + _CHUNK_ROWS)
        left, right = sorted_keys[start:stop], sorted_keys[start + 1:stop + 1]
        parts.append(right[left == right])
    return np.concatenate(parts)


def _duplicate_rows(bits: np.ndarray) -> np.ndarray:
    """Sorted indices of rows equal to an earlier row.

    A 32-bit prefix is sorted (instead of argsorting full rows) to find the prefixes that occur
    more than once; only rows with such a prefix are compared in full. For 12M random rows about
    17k prefixes collide by chance, so the full comparison stays small. The prefixes are sorted in
    `_KEY_PARTS` groups (by the low bits of the key, which equal rows share), so the check holds
    1 B/row of keys rather than 4 B/row.
    """
    part_of = np.uint32(_KEY_PARTS - 1)
    sizes = np.zeros(_KEY_PARTS, dtype=np.int64)
    for start in range(0, len(bits), _CHUNK_ROWS):
        sizes += np.bincount(_prefix_keys(bits[start:start + _CHUNK_ROWS]) & part_of, minlength=_KEY_PARTS)
    repeated = []
    for part, size in enumerate(sizes.tolist()):
        keys, filled = np.empty(size, dtype=np.uint32), 0
        for start in range(0, len(bits), _CHUNK_ROWS):
            chunk_keys = _prefix_keys(bits[start:start + _CHUNK_ROWS])
            chunk_keys = chunk_keys[(chunk_keys & part_of) == part]
            keys[filled:filled + len(chunk_keys)] = chunk_keys
            filled += len(chunk_keys)
        keys.sort()
        repeated.append(_repeated_values(keys))
        del keys
    repeated = np.unique(np.concatenate(repeated))
    if repeated.size == 0:
        return np.empty(0, dtype=np.int64)

    # A table over the low bits of the key screens out almost every row at one gather per row;
    # the few false hits are removed by the exact isin on the survivors.
    table_bits = int(min(24, max(10, math.ceil(math.log2(64 * repeated.size)))))
    low = np.uint32((1 << table_bits) - 1)
    table = np.zeros(1 << table_bits, dtype=bool)
    table[repeated & low] = True
    candidates = []
    for start in range(0, len(bits), _CHUNK_ROWS):
        keys = _prefix_keys(bits[start:start + _CHUNK_ROWS])
        hit = np.flatnonzero(table[keys & low])
        hit = hit[np.isin(keys[hit], repeated)]
        candidates.append(hit + start)
    rows = np.concatenate(candidates)

    full = np.ascontiguousarray(bits[rows]).view(np.dtype((np.void, bits.shape[1]))).ravel()
    _, first, group = np.unique(full, return_index=True, return_inverse=True)
    # rows is ascending, so the first occurrence within a group is the lowest row index.
    later = first[group.ravel()] != np.arange(len(rows))
    return rows[later]


def _bit(bits: np.ndarray, position: int) -> np.ndarray:
    """Bit ``position`` (1-based) of each packed row, as uint8 0/1."""
    byte, shift = divmod(position - 1, 8)
    return (bits[:, byte] >> np.uint8(7 - shift)) & np.uint8(1)


def _label_split(
    labels: np.ndarray, bits: np.ndarray, tasks: np.ndarray, string_length: int, rng: np.random.Generator
) -> None:
    # One strided slice per task (rows t, t + T, ...) reads only the two bytes it needs, so all
    # bits are never unpacked at once.
    num_tasks = len(tasks)
    for t, (l, a) in enumerate(tasks.tolist()):
        rows = slice(t, None, num_tasks)
        if l <= string_length and a <= string_length:
            labels[rows] = _bit(bits[rows], l) ^ _bit(bits[rows], a)
        else:
            count = len(range(t, len(labels), num_tasks))
            labels[rows] = rng.integers(0, 2, size=count, dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# what models and analysis use


def unpack_bits(bits: np.ndarray, context_length: int) -> np.ndarray:
    """The first ``context_length`` bits of each packed row: (n, context_length) uint8 in {0, 1}.

    Examples
    --------
    >>> unpack_bits(np.array([[0b10110000]], dtype=np.uint8), 4)
    array([[1, 0, 1, 1]], dtype=uint8)
    """
    if bits.ndim != 2:
        raise ValueError(f"bits must be (n, bytes), got shape {bits.shape}")
    if not 0 <= context_length <= 8 * bits.shape[1]:
        raise ValueError(f"context_length {context_length} outside 0..{8 * bits.shape[1]}")
    needed = (context_length + 7) // 8
    return np.unpackbits(bits[:, :needed], axis=1, count=context_length, bitorder="big")


def task_bayes_risk(tasks: TaskList, context_length, string_length: int = 100) -> np.ndarray:
    """Exact Bayes risk (nats) of each task at a context length: shape ``(..., T)``.

    Follows the labelling rule of `generate` task by task:

    - a bit beyond the string (``max(l, a) > L``): the label is a fair coin, risk ln 2 at every
      context length;
    - ``l == a <= L``: the label is bit XOR itself, always 0, so it is known without seeing a
      single bit: risk 0 at every context length;
    - otherwise the label is a deterministic function of the two bits, and it is independent of
      every other bit unless both are visible (XOR with an unseen uniform bit is uniform): risk 0
      when ``max(l, a) <= min(c, L)``, else ln 2.

    Examples
    --------
    >>> task_bayes_risk([[3, 1], [4, 4], [120, 7]], [2, 3], string_length=100) / math.log(2)
    array([[1., 0., 1.],
           [0., 0., 1.]])
    """
    task_array = _as_tasks(tasks)
    reach = task_array.max(axis=1)
    constant = (task_array[:, 0] == task_array[:, 1]) & (reach <= string_length)
    visible = np.minimum(np.asarray(context_length), string_length)
    hidden = (reach > visible[..., None]) & ~constant
    return hidden * np.log(2)


def bayes_risk(tasks: TaskList, context_length, string_length: int = 100):
    """Exact Bayes risk (nats) of the task mixture at a context length.

    Rows cycle through the tasks evenly, so the risk is the mean over tasks of `task_bayes_risk`:
    ``ln 2 * mean_t [ task t is a coin or has a bit beyond min(c, L) ]``, where a task ``l == a``
    inside the string is never a coin (its label is always 0). Vectorised over
    ``context_length``; a scalar gives a float.

    Examples
    --------
    >>> round(bayes_risk([[3, 1], [5, 4], [9, 2], [120, 7]], 5, string_length=100) / math.log(2), 3)
    0.5
    """
    risk = task_bayes_risk(tasks, context_length, string_length).mean(axis=-1)
    return float(risk) if np.ndim(context_length) == 0 else risk


# --------------------------------------------------------------------------------------------------
# files


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


def _write_temp(data: SyntheticSet, parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".synthetic-tmp-", dir=parent))
    try:
        np.save(temp / _BITS_FILE, np.ascontiguousarray(data.bits))
        np.save(temp / _LABELS_FILE, np.ascontiguousarray(data.labels))
        # The manifest goes last: a folder with a manifest has both arrays complete.
        (temp / _MANIFEST_FILE).write_text(json.dumps(_manifest(data), indent=1) + "\n")
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return temp


def _publish(temp: Path, target: Path) -> bool:
    """Rename ``temp`` to ``target``; False (and ``temp`` removed) when ``target`` already has content."""
    try:
        os.rename(temp, target)  # replaces an empty folder; fails on a non-empty one
        return True
    except OSError:
        if target.is_dir() and any(target.iterdir()):
            shutil.rmtree(temp, ignore_errors=True)
            return False
        shutil.rmtree(temp, ignore_errors=True)
        raise


def save(data: SyntheticSet, out_dir) -> Path:
    """Write ``bits.npy``, ``labels.npy`` and ``manifest.json`` into the new folder ``out_dir``.

    The files are written into a temporary sibling folder that is renamed at the end, so a reader
    never sees a half-written set. An existing non-empty ``out_dir`` is an error.
    """
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} already exists and is not empty; remove it or choose another folder")
    temp = _write_temp(data, out_dir.parent)
    if not _publish(temp, out_dir):
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
        tasks = _as_tasks(manifest["tasks"])
        if _tasks_sha256(tasks) != manifest["tasks_sha256"]:
            raise ValueError("tasks do not match tasks_sha256")
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"{manifest_path}: unusable manifest ({err})") from None

    rows = train_rows + val_rows
    bits = _load_array(path / _BITS_FILE, (rows, _packed_width(string_length)), mmap)
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

    Processes that miss at the same time each write a private temporary folder and rename it; the
    first rename wins and the others drop their copy and load the winner's, so the cache never
    holds a mixture. A damaged cache entry raises ``ValueError`` naming the file (delete the
    folder to regenerate it) rather than being silently replaced.
    """
    task_array = _as_tasks(tasks)
    key = _cache_key(train_rows, val_rows, task_array, string_length, seed)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / key[:24]
    if entry.is_dir() and any(entry.iterdir()):
        return _load_entry(entry, key)
    data = generate(train_rows, val_rows, task_array, string_length, seed)
    temp = _write_temp(data, root)
    if not _publish(temp, entry):
        return _load_entry(entry, key)
    return data


def _load_entry(entry: Path, key: str) -> SyntheticSet:
    try:
        data = load(entry)
    except ValueError as err:
        raise ValueError(f"{err}; delete the cache folder {entry} to regenerate it") from None
    if _manifest(data)["key"] != key:
        raise ValueError(f"{entry / _MANIFEST_FILE}: describes a different set than its cache key; delete {entry}")
    return data


# --------------------------------------------------------------------------------------------------
# CLI


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
    task_array = _as_tasks(load_task_list(tasks))
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
