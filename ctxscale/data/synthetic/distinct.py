"""No string twice in a synthetic set: finding rows that repeat an earlier row, and redrawing them.

The check must stay cheap at the study's 12M rows of 13 bytes: it sorts 32-bit prefixes in parts
(about 1 B/row of keys) and compares full rows only where prefixes collide.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

# Rows scanned at a time; bounds the temporaries of each pass over the set (memory only: the
# result does not depend on it).
_SCAN_ROWS = 1 << 20


def make_distinct(bits: np.ndarray, redraw: Callable[[int], np.ndarray]) -> None:
    """Replace, in place, every row equal to an earlier row by `redraw(count)` rows until none is.

    Keeping the first copy favours the training rows; with 100-bit strings the first check
    practically always passes. `redraw` must return rows in the same packed form (pad bits zeroed).
    """
    if bits.shape[1] <= _SMALL_WIDTH:
        _redraw_small(bits, redraw)  # the full check below then only confirms
    while True:
        duplicates = duplicate_rows(bits)
        if duplicates.size == 0:
            return
        bits[duplicates] = redraw(duplicates.size)


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


def _redraw_small(bits: np.ndarray, redraw: Callable[[int], np.ndarray]) -> None:
    values = _row_values(bits)
    used = np.zeros(1 << (8 * bits.shape[1]), dtype=bool)
    keep = _first_occurrences(values)
    used[values[keep]] = True
    pending = np.flatnonzero(~keep)
    while pending.size:
        fresh = redraw(pending.size)
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
    for start in range(0, len(sorted_keys) - 1, _SCAN_ROWS):
        stop = min(len(sorted_keys) - 1, start + _SCAN_ROWS)
        left, right = sorted_keys[start:stop], sorted_keys[start + 1:stop + 1]
        parts.append(right[left == right])
    return np.concatenate(parts)


def duplicate_rows(bits: np.ndarray) -> np.ndarray:
    """Sorted indices of rows equal to an earlier row.

    A 32-bit prefix is sorted (instead of argsorting full rows) to find the prefixes that occur
    more than once; only rows with such a prefix are compared in full. For 12M random rows about
    17k prefixes collide by chance, so the full comparison stays small. The prefixes are sorted in
    `_KEY_PARTS` groups (by the low bits of the key, which equal rows share), so the check holds
    1 B/row of keys rather than 4 B/row.
    """
    part_of = np.uint32(_KEY_PARTS - 1)
    sizes = np.zeros(_KEY_PARTS, dtype=np.int64)
    for start in range(0, len(bits), _SCAN_ROWS):
        sizes += np.bincount(_prefix_keys(bits[start:start + _SCAN_ROWS]) & part_of, minlength=_KEY_PARTS)
    repeated = []
    for part, size in enumerate(sizes.tolist()):
        keys, filled = np.empty(size, dtype=np.uint32), 0
        for start in range(0, len(bits), _SCAN_ROWS):
            chunk_keys = _prefix_keys(bits[start:start + _SCAN_ROWS])
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
    for start in range(0, len(bits), _SCAN_ROWS):
        keys = _prefix_keys(bits[start:start + _SCAN_ROWS])
        hit = np.flatnonzero(table[keys & low])
        hit = hit[np.isin(keys[hit], repeated)]
        candidates.append(hit + start)
    rows = np.concatenate(candidates)

    full = np.ascontiguousarray(bits[rows]).view(np.dtype((np.void, bits.shape[1]))).ravel()
    _, first, group = np.unique(full, return_index=True, return_inverse=True)
    # rows is ascending, so the first occurrence within a group is the lowest row index.
    later = first[group.ravel()] != np.arange(len(rows))
    return rows[later]
