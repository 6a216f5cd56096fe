"""Drawing a synthetic set: random packed strings, made distinct, then labelled task by task."""
from __future__ import annotations

import numpy as np

from .dataset import SyntheticSet, TaskList, as_tasks, packed_width
from .distinct import make_distinct

# Rows drawn per call to the bit generator; a multiple of 8 so that the byte stream, and therefore
# the data, does not depend on this number (random_raw hands out 8 bytes at a time).
_CHUNK_ROWS = 1 << 20


def generate(
    train_rows: int, val_rows: int, tasks: TaskList, string_length: int = 100, seed: int = 0
) -> SyntheticSet:
    """Draw ``train_rows + val_rows`` distinct random strings and label them.

    Deterministic for a seed: the strings come first from ``np.random.default_rng(seed)``, then
    redraws of duplicates, then the coin flips of tasks that reach beyond the string.

    Examples
    --------
    >>> from ctxscale.data.synthetic import unpack_bits
    >>> data = generate(60, 12, [[3, 1], [2, 2], [200, 5]], string_length=16, seed=1)
    >>> bits, labels, task = data.train()
    >>> row = unpack_bits(bits[:1], 16)[0]
    >>> int(labels[0]) == int(row[0] ^ row[2])
    True
    """
    task_array = as_tasks(tasks)
    _check_sizes(train_rows, val_rows, string_length)
    rows, width = train_rows + val_rows, packed_width(string_length)
    rng = np.random.default_rng(seed)

    bits = np.empty((rows, width), dtype=np.uint8)
    for start in range(0, rows, _CHUNK_ROWS):
        stop = min(rows, start + _CHUNK_ROWS)
        bits[start:stop] = _random_rows(rng, stop - start, width)
    _mask_padding(bits, string_length)
    make_distinct(bits, lambda count: _fresh_rows(rng, count, width, string_length))

    # Labels come after de-duplication so their 1 B/row is not held next to the check's keys.
    labels = np.empty(rows, dtype=np.uint8)
    _label_split(labels[:train_rows], bits[:train_rows], task_array, string_length, rng)
    _label_split(labels[train_rows:], bits[train_rows:], task_array, string_length, rng)

    for array in (bits, labels, task_array):
        array.flags.writeable = False
    return SyntheticSet(bits, labels, task_array, string_length, train_rows, val_rows, seed)


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


def _fresh_rows(rng: np.random.Generator, rows: int, width: int, string_length: int) -> np.ndarray:
    """Redraws for rows that repeat an earlier string: random rows with their pad bits zeroed."""
    fresh = _random_rows(rng, rows, width)
    _mask_padding(fresh, string_length)
    return fresh


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
